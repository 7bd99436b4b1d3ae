// Expert-parallel load balancing (design.md §5): from per-expert load statistics to a placement
// plan of logical experts onto physical slots (slot s lives on GPU s / (slots / gpus)).
//
// Algorithms:
//   kDeepseek  DeepSeek's published EPLB (hierarchical when groups % nodes == 0, else global),
//              reproduced for compatibility: same phy2log/logcnt on loads without ties.
//   kDefault   never two replicas of one expert on one GPU; per layer at least as balanced as the
//              better of the DeepSeek modes it may legally use (node-local when --nodes asks for
//              locality, see docs/eplb.md).
// With Options::current set, rebalance() is movement-aware: it keeps balancedness within
// Options::tolerance of the best plan while rewriting as few slots as it can.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace eep::eplb {

enum class Algo { kDeepseek, kDefault };

// "deepseek" / "default"; parse_algo throws Error(kInvalidArgument) for anything else.
const char* algo_name(Algo algo);
Algo parse_algo(const std::string& name);

// log2phy of a plan: log2phy[l][e] is the span of expert e's slots in layer l, ascending, as
// many as it has replicas (logcnt[l][e]). Stored per layer as one offset per expert into the
// slots grouped by expert (two flat arrays); the JSON form is [layers][experts][max_replicas()]
// padded with -1. (A padded array meant clearing and filling ~2 MB per DeepSeek-V3 plan.)
class Log2Phy {
 public:
  class Layer {
   public:
    Layer(const int* slots, const int* start, int num_logical)
        : slots_(slots), start_(start), n_(num_logical) {}
    std::span<const int> operator[](int e) const {
      return {slots_ + start_[e], static_cast<size_t>(start_[e + 1] - start_[e])};
    }
    size_t size() const { return static_cast<size_t>(n_); }

   private:
    const int* slots_;
    const int* start_;
    int n_;
  };
  Log2Phy() = default;
  // From phy2log rows of equal length with expert ids in [0, num_logical) (unchecked).
  Log2Phy(const std::vector<std::vector<int>>& phy2log, int num_logical);
  Layer operator[](int l) const {
    return {slots_.data() + static_cast<size_t>(l) * num_slots_,
            start_.data() + static_cast<size_t>(l) * (logical_ + 1), logical_};
  }
  size_t size() const { return static_cast<size_t>(layers_); }
  int max_replicas() const { return width_; }
  bool operator==(const Log2Phy&) const = default;
  nlohmann::json to_json() const;  // [layers][experts][max replicas], padded with -1

 private:
  int layers_ = 0, logical_ = 0, num_slots_ = 0, width_ = 0;
  std::vector<int> start_;  // [layers][experts + 1]: offsets into the layer's slots_
  std::vector<int> slots_;  // [layers][slots]: slot ids grouped by expert, ascending
};

struct Plan {
  int num_layers = 0;
  int num_logical = 0;
  int num_slots = 0;
  int num_gpus = 0;
  std::vector<std::vector<int>> phy2log;                // [layers][slots]
  std::vector<std::vector<int>> logcnt;                 // [layers][experts]
  Log2Phy log2phy;                                      // [layers][experts] -> replicas' slots

  int slots_per_gpu() const { return num_slots / num_gpus; }
  int gpu_of(int slot) const { return slot / slots_per_gpu(); }

  // Derives logcnt and log2phy from phy2log (replicas listed in slot order), after checking
  // the shape. Throws Error(kInvalidArgument) naming the problem.
  void finalize();
  // Checks shape, ranges, that every expert has a replica, and that logcnt/log2phy agree with
  // phy2log. Throws Error(kInvalidArgument) naming the problem.
  void validate() const;

  // {"num_layers", "num_logical_experts", "num_slots", "num_gpus", "phy2log", "logcnt",
  //  "log2phy"}.
  nlohmann::json to_json() const;
  // Reads the same shape; only phy2log and num_gpus are required (the rest is derived and, when
  // present, must agree). Validates; throws Error(kInvalidArgument).
  static Plan from_json(const nlohmann::json& j);
};

struct Options {
  int num_gpus = 0;
  int num_nodes = 1;
  int num_groups = 1;
  int num_slots = 0;
  Algo algo = Algo::kDefault;
  const Plan* current = nullptr;  // movement-aware when set
  double tolerance = 0.01;        // relative balancedness loss allowed to save moves
  // With current: keep[g] is the GPU of the current plan whose slots GPU g of the new plan
  // inherits (-1: a new GPU). Empty means GPU g inherits GPU g (those beyond the current plan's
  // GPU count are new; GPUs beyond the new count go away). The current plan may have another GPU
  // and slot count than the request (elastic scaling).
  std::vector<int> keep;
};

// Checks the load matrix (non-empty, rectangular, finite, non-negative) and the options against
// it. Throws Error(kInvalidArgument) with a one-line message.
void check_inputs(const std::vector<std::vector<double>>& load, const Options& options);

Plan rebalance(const std::vector<std::vector<double>>& load /*[layers][experts]*/,
               const Options& options);

// The published DeepSeek algorithm on its own; hierarchical forces the mode (num_groups and
// num_nodes must then divide as the published code asserts).
Plan deepseek_plan(const std::vector<std::vector<double>>& load, int num_slots, int num_groups,
                   int num_nodes, int num_gpus, bool hierarchical);

// No load information: replicas spread round robin, never two replicas of one expert on one GPU
// when avoidable.
Plan uniform_plan(int num_layers, int num_experts, int num_slots, int num_gpus);

// Per-GPU load of one layer: each replica carries load / logcnt.
std::vector<double> gpu_loads(const std::vector<double>& layer_load, const std::vector<int>& phy2log,
                              int num_gpus);

// Sum over layers of mean per-GPU load / sum over layers of max per-GPU load (1 = perfect).
// An all-zero layer counts as perfectly balanced.
double balancedness(const std::vector<std::vector<double>>& load, const Plan& plan,
                    std::vector<double>* per_layer = nullptr);

// Number of GPUs holding two replicas of one expert, summed over layers.
int64_t duplicate_replicas(const Plan& plan);

struct Movement {
  int64_t moved_slots = 0;  // slots whose expert changes
  int64_t moved_bytes = 0;  // moved_slots * expert_bytes
};
// Slot i of GPU g in `to` counts as moved unless GPU g inherits a GPU of `from` (keep, as in
// Options::keep; empty: the same index) whose slot i held the same expert. Plans must have the
// same layers and experts; GPU and slot counts may differ. Throws Error(kInvalidArgument)
// otherwise.
Movement movement(const Plan& from, const Plan& to, int64_t expert_bytes,
                  const std::vector<int>& keep = {});

// Reordering that keeps the placement but moves as little as possible: GPUs of `to` are
// relabelled to match `from` (GPUs are interchangeable) and, within each GPU, experts already
// there keep their slot. The per-GPU sets (and so the balance) of `to` are unchanged. With
// num_nodes > 1 GPUs are relabelled within nodes and nodes as wholes, so node locality holds.
Plan align_to(const Plan& from, const Plan& to, int num_nodes = 1);

// ---- I/O (used by eep-eplb; here so the engine and tests can use them too) ----

// Parses a load matrix from text: JSON {"load": [[...]], ...} (extra fields ignored), a bare JSON
// array of arrays, or CSV (one row per layer; blank lines and lines starting with '#' skipped).
// Throws Error(kInvalidArgument) naming the problem.
std::vector<std::vector<double>> parse_load(const std::string& text);

// The tool's output: plan.to_json() plus balancedness, balancedness_per_layer and, when
// movement is given, moved_slots and moved_bytes.
nlohmann::json report_json(const std::vector<std::vector<double>>& load, const Plan& plan,
                           const Movement* movement = nullptr);
// A per-GPU load table for people (one row per layer per GPU block).
std::string report_table(const std::vector<std::vector<double>>& load, const Plan& plan,
                         const Movement* movement = nullptr);

// `eep-bench eplb`: benchmark at DeepSeek-V3 sizes. Prints a table on stdout; --json FILE writes
// the figures. Returns an exit code.
int run_bench(int argc, char** argv);

}  // namespace eep::eplb
