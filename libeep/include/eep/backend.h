// The backend seam (design.md §6): everything an engine needs from a device. The engine owns
// scheduling, messaging and the step loop; a backend owns weights, the KV cache and the forward
// pass, including the MoE dispatch/combine through the group's collectives. CpuBackend (fp32,
// Gloo) is the reference; the CUDA backend implements the same interface.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "eep/model.h"
#include "eep/placement.h"
#include "eep/scheduler.h"

namespace eep {

class Group;

// One sequence's part of a step: rows [row_begin, row_begin + num_rows) of the flattened batch
// are positions [start, start + num_rows) of a sequence whose KV blocks are block_table.
struct SeqSlice {
  const int32_t* block_table = nullptr;
  int num_blocks = 0;
  int start = 0;
  int row_begin = 0;
  int num_rows = 0;
  bool sample = false;  // produce logits for the last row
};

struct StepBatch {
  std::vector<int32_t> tokens;     // [rows]
  std::vector<int32_t> positions;  // [rows]
  std::vector<SeqSlice> seqs;
  // Rows of this step summed over the group's members (the engine learns it from the step's
  // all-reduce; 0: unknown). Every member sees the same value, so a backend may size a
  // fixed-capacity exchange by it.
  int64_t group_rows = 0;
  int num_rows() const { return static_cast<int>(tokens.size()); }
};

struct BackendOptions {
  int num_kv_blocks = 512;
  int block_size = 16;
  int device = 0;
};

// KV blocks that fit on `device` once this engine holds the dense weights and the experts of
// num_experts / min_ranks slots (the most it holds at the smallest size it may shrink to), using
// at most `memory_fraction` of the device's memory. CUDA only; throws Error(kUnavailable) on a
// CPU-only build or without a GPU, Error(kResourceExhausted) if not even one block fits.
int cuda_kv_blocks_for_memory(const ModelConfig& cfg, int block_size, int device,
                              double memory_fraction, int min_ranks);

// The peak memory bandwidth of GPU `device` in GB/s (10^9 bytes a second) from its memory
// clock and bus width (double data rate), and in `description` the device's name and those
// two figures. CUDA only; throws Error(kUnavailable) on a CPU-only build or without a GPU.
double cuda_peak_memory_bandwidth_gbs(int device, std::string* description);

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const ModelConfig& config() const = 0;
  // Loads the replicated (non-expert) weights.
  virtual void load_dense(const WeightSource& src) = 0;
  // Makes the local slots of `placement` for `rank` hold their experts, reading from src only the
  // slots whose expert changed (so an unchanged placement costs nothing).
  virtual void load_experts(const WeightSource& src, const Placement& placement, int rank) = 0;
  // Runs one step on every engine of `group` in lockstep: an empty batch still joins every
  // collective (dummy step). logits gets [number of sampling seqs][vocab], in seqs order.
  virtual void forward(const StepBatch& batch, Group& group, std::vector<float>& logits) = 0;
  // One step that returns the sampled token of each sampling seq (seqs order) instead of
  // logits: params[i] and positions[i] (index of the token being generated) are those of the
  // i-th sampling seq, drawn with eep::sample_token's rule. A GPU backend samples on the device
  // (no [seqs][vocab] copy to the host); the default runs forward() and samples on the host.
  virtual void forward_tokens(const StepBatch& batch, Group& group,
                              const std::vector<const SamplingParams*>& params,
                              const std::vector<int64_t>& positions, std::vector<int32_t>& tokens);
  // Tokens routed to each physical slot, cumulative: [layers][num_slots] (only local slots of
  // this rank are non-zero).
  virtual const std::vector<std::vector<int64_t>>& expert_load() const = 0;
  virtual void reset_expert_load() = 0;

  // Elastic transitions: weights to and from peers by name, and expert slots staged off to the
  // side while the current ones keep serving.
  virtual std::vector<std::string> dense_tensor_names() const = 0;
  virtual void get_dense(const std::string& name, std::vector<float>& out) const = 0;
  virtual void set_dense(const std::string& name, std::vector<float> data) = 0;
  // gate, up and down of (layer, expert) concatenated, from a local slot holding it; false if
  // no local slot does.
  virtual bool get_expert(int layer, int expert, std::vector<float>& out) const = 0;
  // Builds the slots `placement` gives `rank` from local slots and `received` ((layer, expert)
  // -> gate|up|down), leaving the serving slots untouched. Throws Error(kInternal) if an expert
  // is neither local nor received.
  virtual void stage_experts(const Placement& placement, int rank,
                             const std::map<std::pair<int, int>, std::vector<float>>& received) = 0;
  virtual void commit_staged() = 0;   // staged slots become the serving ones
  virtual void discard_staged() = 0;  // rollback
  // commit_staged keeps the slots it replaces, untouched, until release_previous;
  // restore_previous makes them serve again with their placement and rank. So a rollback after
  // the switch needs no copy of the experts a rank gave up and no peer: the memory is the
  // staging's peak (old and new slots together), held until the transition finishes. Throws
  // Error(kInternal) when nothing is kept.
  virtual void restore_previous() = 0;
  virtual void release_previous() = 0;

  // Device-resident transfers (a GPU backend and a group with device buffers; weight_move.h):
  // the weights move between engines' device memory in their stored form (bf16 weights, fp32
  // router), with no host copy. The defaults say "not supported" (false / kUnavailable).
  struct DeviceRegion {
    void* data = nullptr;
    size_t bytes = 0;
  };
  virtual bool device_weights() const { return false; }
  // A dense tensor's device memory: what a peer sends, and, on an engine that receives it, where
  // it is received (allocated at its full size on first use).
  virtual DeviceRegion dense_region(const std::string& name);
  // The regions (gate|up, then down) of a serving slot that holds (layer, expert); empty if no
  // local slot does.
  virtual std::vector<DeviceRegion> expert_regions(int layer, int expert);
  // Staging in place of stage_experts: begin_staging allocates the slots `placement` gives
  // `rank` and fills those whose expert is held locally; staged_expert_regions gives where a
  // received expert goes (its first staged slot; receive into it before end_staging);
  // end_staging copies each received expert to its other staged slots and completes the
  // staging (commit_staged / discard_staged as after stage_experts).
  virtual void begin_staging(const Placement& placement, int rank);
  virtual std::vector<DeviceRegion> staged_expert_regions(int layer, int expert);
  virtual void end_staging();
  virtual size_t kv_bytes() const = 0;
  virtual const char* name() const = 0;

  // Micro-benchmark hook (eep-bench moe): runs the MoE FFN of `layer` (route, dispatch through
  // `group`, local experts, combine) on `rows` seeded random hidden rows, `iters` times after one
  // warm-up, in lockstep with the group's other members; returns seconds per call, measured
  // after the device has finished.
  virtual double benchmark_moe(int layer, int rows, int iters, Group& group) = 0;

  // How steps ran, for tests and benchmarks: CUDA graphs captured and replayed (decode steps of
  // a group of one on the CUDA backend; zero elsewhere).
  struct Counters {
    int64_t graph_captures = 0;
    int64_t graph_replays = 0;
    int64_t device_exchanges = 0;  // MoE layers through the CUDA stream-ordered exchange
  };
  virtual Counters counters() const { return {}; }
};

std::unique_ptr<Backend> make_cpu_backend(const ModelConfig& cfg, const BackendOptions& opts);
// Throws Error(kUnavailable, ...) naming why when `backend` ("cpu" or "cuda") cannot run here,
// so an engine fails before it registers rather than after.
void check_backend_available(const std::string& backend);
// Throws Error(kUnavailable, "eep was built without CUDA") in a CPU-only build.
std::unique_ptr<Backend> make_cuda_backend(const ModelConfig& cfg, const BackendOptions& opts);

}  // namespace eep
