// Internals shared by the eplb sources (not installed).
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "eep/eplb.h"

namespace eep::eplb {

// Relative margin of "strictly better" comparisons between loads.
constexpr double kEps = 1e-12;
// Relative distance to the lower bound at which refinement stops (balancedness >= ~0.9999).
constexpr double kGoodEnough = 1e-4;

// Builds a finalized plan from phy2log.
Plan make_plan(std::vector<std::vector<int>> phy2log, int num_logical, int num_gpus);

// Sort key for "weight descending, lower index first on ties" as one ascending 64-bit integer
// (weights are non-negative; -0 counts as 0).
inline uint64_t desc_key(float w, int index) {
  if (w == 0) w = 0;
  uint32_t bits;
  std::memcpy(&bits, &w, sizeof bits);
  return (static_cast<uint64_t>(~bits) << 32) | static_cast<uint32_t>(index);
}
// order[0..n) = indices by weight descending, lower index first on ties (a stable sort).
void order_desc(const float* w, int n, std::vector<uint64_t>& keys, int* order);

// One layer of the published DeepSeek algorithm (float arithmetic, as the reference uses
// float32 tensors). Writes phy2log for the layer to out[num_slots].
void deepseek_layer(const double* weight, int num_experts, int num_slots, int num_groups,
                    int num_nodes, int num_gpus, int* out);
std::vector<int> deepseek_layer(const std::vector<double>& weight, int num_slots, int num_groups,
                                int num_nodes, int num_gpus);
// Steps 2 and 3 of DeepSeek's algorithm in one domain (a node, or the whole cluster): replicas
// of n experts (float weights w) onto num_slots slots of num_packs GPUs. order: the experts by
// weight descending (order_desc of w). Writes domain-local expert ids by slot to out.
// avoid_duplicates: no expert gets more replicas than there are GPUs and a replica never goes to
// a GPU that holds its expert while another has room; the result is DeepSeek's layout whenever
// that has no duplicate (the default algorithm starts from it).
// slot_order (optional, num_slots): the slots in placement order, i.e. by replica weight
// descending (float weights), which spares the refinement its sort.
void deepseek_domain(const float* w, int n, const int* order, int num_slots, int num_packs,
                     int* out, bool avoid_duplicates = false, int* slot_order = nullptr);
// Lower bound of the heaviest GPU of DeepSeek's hierarchical layout: the heaviest node (groups
// packed as DeepSeek packs them) spread evenly over its GPUs.
double deepseek_node_bound(const double* weight, int num_experts, int num_groups, int num_nodes,
                           int num_gpus);

// Whether the default algorithm keeps node locality (every group's replicas on one node): when
// the cluster has several nodes and the groups divide among them, as DeepSeek's hierarchical
// mode does.
bool node_local(const Options& options);

// One layer of the default algorithm; the result never holds two replicas of one expert on one
// GPU when avoidable and is at least as balanced as the DeepSeek modes allowed by locality.
// Writes phy2log to out[num_slots].
void default_layer(const double* weight, int num_experts, const Options& options, int* out);

// Max per-GPU load of one layer.
double max_gpu_load(const double* weight, int num_experts, const int* phy2log, int num_slots,
                    int num_gpus);
double max_gpu_load(const std::vector<double>& weight, const std::vector<int>& phy2log,
                    int num_gpus);

// Improves one layer in place by swapping replicas between GPUs of the same domain (a block of
// gpus_per_domain consecutive GPUs: a node when locality is kept, else all GPUs) without ever
// creating a duplicate; first repairs duplicates where a swap can. Replica counts are unchanged.
// Returns the heaviest GPU's load afterwards. slot_order (optional, only with one domain): the
// slots by replica weight descending, or nearly so (it is corrected), instead of a sort.
// per_replica (optional): each expert's weight / its replica count in phy2log (spares counting
// and dividing). duplicate (optional): set to whether a GPU still holds two replicas of one
// expert (a duplicate no swap could repair).
double refine_layer(const double* weight, int num_experts, int* phy2log, int num_slots,
                    int num_gpus, int gpus_per_domain, const int* slot_order = nullptr,
                    const double* per_replica = nullptr, bool* duplicate = nullptr);

// The refinement's swap search runs on AVX-512 where the CPU has it (the same layouts in less
// time). force_scalar_swap_search(true) makes it scalar, as EEP_EPLB_SCALAR=1 does (tests compare
// the two).
bool vector_swap_search_available();
void force_scalar_swap_search(bool scalar);

// Movement-aware rows (movement.cc): per layer, starting from current[l] (-1: a slot without
// predecessor), a layout whose heaviest GPUs sum to at most sum(best maxima) / (1 - tolerance)
// with as few rewritten slots as the search finds, the tolerance spent where it saves most moves.
std::vector<std::vector<int>> movement_rows(const std::vector<std::vector<double>>& load,
                                            const std::vector<std::vector<int>>& current,
                                            const std::vector<std::vector<int>>& best,
                                            const Options& options);

// Throws Error(kInvalidArgument) unless keep is empty or maps every new GPU to a distinct GPU of
// the current plan or to -1.
void check_keep(const std::vector<int>& keep, int from_gpus, int to_gpus);
// keep as given, or the identity (GPU g inherits GPU g where the current plan has one).
std::vector<int> keep_or_identity(const std::vector<int>& keep, int from_gpus, int to_gpus);
// A layer of `from` (from_gpus GPUs) in the slot shape of the new plan: slot i of new GPU g holds
// what slot i of GPU keep[g] held, -1 where there is no such slot (new GPUs, extra slots).
std::vector<int> project_layer(const std::vector<int>& from, int from_gpus, int to_slots,
                               int to_gpus, const std::vector<int>& keep);

// Experts already in one of this GPU's k slots keep that slot; new_items fill the rest.
void place_like(const int* old_slots, const int* new_items, int k, int* out);
// align_to for one layer.
std::vector<int> align_layer(const std::vector<int>& from, const std::vector<int>& to,
                             int num_gpus, int num_nodes);

}  // namespace eep::eplb
