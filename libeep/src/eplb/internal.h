// Internals shared by the eplb sources (not installed).
#pragma once

#include <vector>

#include "eep/eplb.h"

namespace eep::eplb {

// Builds a finalized plan from phy2log.
Plan make_plan(std::vector<std::vector<int>> phy2log, int num_logical, int num_gpus);

// One layer of the published DeepSeek algorithm (float arithmetic, as the reference uses
// float32 tensors). Returns phy2log for the layer.
std::vector<int> deepseek_layer(const std::vector<double>& weight, int num_slots, int num_groups,
                                int num_nodes, int num_gpus);

// Whether the default algorithm keeps node locality (every group's replicas on one node): when
// the cluster has several nodes and the groups divide among them, as DeepSeek's hierarchical
// mode does.
bool node_local(const Options& options);

// One layer of the default algorithm; the result never holds two replicas of one expert on one
// GPU when avoidable and is at least as balanced as the DeepSeek modes allowed by locality.
std::vector<int> default_layer(const std::vector<double>& weight, const Options& options);

// Max per-GPU load of one layer.
double max_gpu_load(const std::vector<double>& weight, const std::vector<int>& phy2log,
                    int num_gpus);

// Improves one layer in place by swapping replicas between GPUs of the same domain (a block of
// gpus_per_domain consecutive GPUs: a node when locality is kept, else all GPUs) without ever
// creating a duplicate; first repairs duplicates where a swap can. Replica counts are unchanged.
void refine_layer(const std::vector<double>& weight, std::vector<int>& phy2log, int num_gpus,
                  int gpus_per_domain);

// Movement-aware: one layer starting from `current`, reaching max GPU load <= target with as
// few rewritten slots as it finds. Falls back to aligning `best` when the search cannot reach
// the target.
std::vector<int> movement_layer(const std::vector<double>& weight, const std::vector<int>& current,
                                const std::vector<int>& best, double target,
                                const Options& options);

// Experts already in one of this GPU's k slots keep that slot; new_items fill the rest.
void place_like(const int* old_slots, const int* new_items, int k, int* out);
// align_to for one layer.
std::vector<int> align_layer(const std::vector<int>& from, const std::vector<int>& to,
                             int num_gpus, int num_nodes);

}  // namespace eep::eplb
