// CUDA backend (design.md §6): bf16 weights and activations with fp32 accumulation, an fp32
// residual stream, a paged bf16 KV cache, kernels from kernels/ and cuBLAS GEMMs. The MoE
// exchange goes through the step's Group: device pointers straight to NCCL, or staged through
// pinned host memory for a host group (Gloo), so engines can also share one GPU in tests.
//
// Threads: forward() runs on the engine's main thread on stream_; the elastic prepare worker
// calls get_dense/get_expert/set_dense/stage_experts on its own stream (side_stream_), which
// only reads serving slots or writes staged ones, so both can run at once.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <atomic>
#include <map>
#include <memory>
#include <tuple>
#include <mutex>
#include <vector>

#include "cuda/cuda_util.h"
#include "cuda/step_profile.h"
#include "eep/backend.h"

namespace eep::kernels {
class GroupedGemm;
struct MoeCombine;
}

namespace eep::cuda {

using bf16 = __nv_bfloat16;

class CudaBackend : public Backend {
 public:
  CudaBackend(const ModelConfig& cfg, const BackendOptions& opts);
  ~CudaBackend() override;

  const ModelConfig& config() const override { return cfg_; }
  void load_dense(const WeightSource& src) override;
  void load_experts(const WeightSource& src, const Placement& placement, int rank) override;
  void forward(const StepBatch& batch, Group& group, std::vector<float>& logits) override;
  void forward_tokens(const StepBatch& batch, Group& group,
                      const std::vector<const SamplingParams*>& params,
                      const std::vector<int64_t>& positions, std::vector<int32_t>& tokens) override;
  const std::vector<std::vector<int64_t>>& expert_load() const override {
    fold_device_load();
    return load_;
  }
  void reset_expert_load() override;
  std::vector<std::string> dense_tensor_names() const override;
  void get_dense(const std::string& name, std::vector<float>& out) const override;
  void set_dense(const std::string& name, std::vector<float> data) override;
  bool get_expert(int layer, int expert, std::vector<float>& out) const override;
  void stage_experts(const Placement& placement, int rank,
                     const std::map<std::pair<int, int>, std::vector<float>>& received) override;
  void commit_staged() override;
  void discard_staged() override;
  void restore_previous() override;
  void release_previous() override;
  bool device_weights() const override { return true; }
  DeviceRegion dense_region(const std::string& name) override;
  std::vector<DeviceRegion> expert_regions(int layer, int expert) override;
  void begin_staging(const Placement& placement, int rank) override;
  std::vector<DeviceRegion> staged_expert_regions(int layer, int expert) override;
  void end_staging() override;
  size_t kv_bytes() const override { return k_cache_.bytes() + v_cache_.bytes(); }
  const char* name() const override { return "cuda"; }
  double benchmark_moe(int layer, int rows, int iters, Group& group) override;
  Counters counters() const override {
    return {graph_captures_, graph_replays_, device_exchanges_};
  }

 private:
  struct DenseLayer {
    DeviceArray<bf16> input_norm, wo, q_norm, k_norm, post_norm;
    // q_proj, k_proj and v_proj stacked ([q_dim + 2 * kv_dim][hidden]): one GEMM gives a row's
    // q, k and v side by side (at batch 256 the three GEMMs were 13 + 7 + 7 us a layer).
    DeviceArray<bf16> wqkv;
    // The router stays fp32 (as read from the source) and multiplies the fp32 normalised rows:
    // experts whose logits nearly tie must be picked as the fp32 CPU reference picks them.
    DeviceArray<float> router;
  };
  // A dense tensor by name: exactly one of the two is set.
  struct DenseRef {
    DeviceArray<bf16>* bf16_array = nullptr;
    DeviceArray<float>* f32_array = nullptr;
    // A tensor stored inside a larger bf16 array (q, k and v in wqkv): `count` elements from
    // `offset` of an array of `whole` elements. count 0: the tensor is the whole array.
    size_t offset = 0, count = 0, whole = 0;
  };
  // The expert slots of one layer on this rank: slot s is rows [s * 2 * inter, (s+1) * 2 * inter)
  // of gate_up (gate rows first, then up: one GEMM gives both) and [s * hidden, (s+1) * hidden)
  // of down. Slots are updated in place, so their addresses stay put.
  struct ExpertLayer {
    DeviceArray<bf16> gate_up;  // [slots][2 * inter][hidden]
    DeviceArray<bf16> down;     // [slots][hidden][inter]
    std::vector<int> expert;    // logical expert of each local slot (-1: empty)
    // kernels::route_local's table for this rank (replica counts, replica slots, slot experts)
    // and its width; used by the device-routed MoE of a group of one.
    DeviceArray<int32_t> route;
    // The same with the expert of every slot of the group at its end ([num_slots] instead of
    // [slots per rank]): the sender's table of the stream-ordered exchange (moe_device_exchange).
    DeviceArray<int32_t> route_all;
    int max_replicas = 1;
  };

  // Per-step metadata uploaded in one copy: see forward().
  // Per row: token, position, KV-cache slot, attention length (pos + 1), its sequence's block
  // table. Per sequence (prefill kernel): first row, rows, start position, block table.
  struct StepMeta {
    int rows = 0, num_sample = 0, max_blocks = 0, num_seqs = 0, max_seq_rows = 0;
    const int32_t *tokens, *positions, *kv_slots, *seq_lens, *block_tables, *sample_rows;
    const int32_t *seq_q_start, *seq_rows, *seq_start, *seq_tables;
  };

  // The step up to the logits of the sampling rows, left on the device in logits_ (enqueued on
  // stream_, not waited for); returns the number of sampling rows.
  int forward_on_device(const StepBatch& batch, Group& group);
  void attention(int layer, const StepMeta& m);
  // Enqueues the layers of a step on stream_ (embedding to the sampling rows' logits). Host work
  // only when the MoE must route on the host (a group of more than one).
  void run_layers(const StepMeta& m, Group& group);
  // MoE FFN of one layer for h [rows] (h_f32: the same rows in fp32, the router's input) across
  // the group; result in out (bf16 [rows][hidden]). With `deferred`, the device-routed path may
  // leave its combine to the next residual norm instead (deferred->y set; out not written).
  void moe(int layer, const bf16* h, const float* h_f32, int rows, Group& group, bf16* out,
           kernels::MoeCombine* deferred = nullptr);
  // The MoE after the router, for a group of more than one: replicas chosen on the host, rows
  // exchanged, every arriving row checked on the host.
  void moe_host_routed(int layer, const bf16* h, int rows, Group& group, bf16* out);
  // The MoE after the router for a group of more than one over device buffers, ordered on
  // stream_ with no host wait (EEP_CUDA_DEVICE_EXCHANGE=1, decode-sized steps): items routed
  // to all slots on the device, fixed-capacity blocks per owner (exchange_cap_ rows) with each
  // owner's per-slot offsets and expected experts, checked and grouped by slot on arrival,
  // grouped GEMMs with device offsets, results back the same way, combined.
  void moe_device_exchange(int layer, const bf16* h, int rows, Group& group, bf16* out,
                           kernels::MoeCombine* deferred);
  // gate|up, SwiGLU and down of the local slots on rows grouped by slot (offsets on the device,
  // at most max_rows rows); returns the outputs in the same order (y_).
  bf16* local_experts(const ExpertLayer& ex, const bf16* permuted, const int32_t* offsets,
                      int max_rows);
  // The MoE after the router, for a group of one: everything on the device (kernels::route_permute_tokens,
  // the permutation, device-offset grouped GEMMs), so a step can be a CUDA graph.
  void moe_device_routed(int layer, const bf16* h, int rows, bf16* out,
                         kernels::MoeCombine* deferred);
  void gemm(const bf16* x, const bf16* w, void* y, cudaDataType_t y_type, int rows, int k, int n);
  // fp32 × fp32 → fp32 (the router), without TF32.
  void gemm_f32(const float* x, const float* w, float* y, int rows, int k, int n);
  // Fills route (and max_replicas) of each layer for `rank` of `placement`; side_stream_.
  void upload_routes(std::vector<ExpertLayer>& layers, const Placement& placement, int rank);
  // After the step's work is enqueued: copies the device routing error flag, waits for stream_,
  // and throws kInternal if a row reached a slot that does not hold its expert.
  void finish_step();
  // Folds the device-counted load of the device-routed MoE into load_.
  void fold_device_load() const;
  // Zeroes load_ and the device counts for placement_ (after a load or a commit).
  void restart_load_counts(cudaStream_t stream);
  // Graphs of decode steps, by shape; dropped when the experts, the placement or any workspace
  // move (graph nodes hold device addresses).
  void drop_graphs();
  void upload_f32_as_bf16(const std::vector<float>& src, bf16* dst, cudaStream_t stream);
  DenseRef dense_array(const std::string& name);
  void store_dense(const std::string& name, const DenseRef& ref, const std::vector<float>& data);
  // Where a bf16 tensor of numel elements goes: a whole array is (re)allocated at numel, a
  // part of a stacked array must have its model size (the array is allocated whole).
  bf16* dense_bf16_target(const std::string& name, const DenseRef& ref, size_t numel);
  void allocate_experts(std::vector<ExpertLayer>& layers, int slots_per_rank) const;
  std::vector<ExpertLayer> fill_staged(
      const Placement& placement, int rank,
      const std::map<std::pair<int, int>, std::vector<float>>* received);
  void activate() const;  // cudaSetDevice for the calling thread
  // First calls into cuBLAS and the grouped GEMM on scratch data (cuda_warmup.cc): their
  // one-time set-up, ~250 ms, would otherwise be the engine's first step.
  void warm_up_libraries();
  // Ends a profiled phase (EEP_CUDA_PROFILE; see step_profile.h); nothing otherwise.
  void mark(const char* phase) {
    if (profile_ && profile_->active()) profile_->mark(phase, stream_);
  }

  ModelConfig cfg_;
  BackendOptions opts_;
  cudaStream_t stream_ = nullptr;       // forward
  cudaStream_t side_stream_ = nullptr;  // loading and the elastic prepare worker
  cublasHandle_t cublas_ = nullptr;
  std::unique_ptr<kernels::GroupedGemm> grouped_;
  int grouped_capacity_ = 0;

  DeviceArray<bf16> embed_, final_norm_, lm_head_;
  std::vector<DenseLayer> layers_;
  std::vector<ExpertLayer> experts_;  // [layer]
  Placement placement_;
  int rank_ = 0;
  std::vector<ExpertLayer> staged_;
  Placement staged_placement_;
  int staged_rank_ = -1;
  // The slots commit_staged replaced (device memory untouched), for restore_previous until
  // release_previous.
  std::vector<ExpertLayer> previous_;
  Placement previous_placement_;
  int previous_rank_ = -1;
  // Device-transfer staging between begin_staging and end_staging: the slots, the slots left
  // for received experts ((layer, slot)), and the slot each received expert went to.
  std::vector<ExpertLayer> staging_;
  Placement staging_placement_;
  int staging_rank_ = -1;
  std::vector<std::pair<int, int>> staging_missing_;
  std::map<std::pair<int, int>, int> staging_received_;
  mutable std::mutex side_mutex_;  // side_stream_ and its staging buffers

  DeviceArray<bf16> k_cache_, v_cache_;  // [layers][blocks][block_size][kv_heads][head_dim]
  mutable std::vector<std::vector<int64_t>> load_;
  // Per local slot of each layer, rows counted on the device ([layers][slots per rank]), folded
  // into load_ between steps.
  DeviceArray<unsigned long long> load_dev_;
  mutable bool load_dev_dirty_ = false;
  DeviceArray<int32_t> route_error_;     // kernels::route_local's error record [5]
  PinnedArray<int32_t> route_error_host_;
  DeviceArray<char> cublas_workspace_;   // fixed, so captured cuBLAS calls never allocate

  struct GraphKey {
    int rows, num_seqs, num_sample, max_blocks;
    bool operator<(const GraphKey& o) const {
      return std::tie(rows, num_seqs, num_sample, max_blocks) <
             std::tie(o.rows, o.num_seqs, o.num_sample, o.max_blocks);
    }
  };
  struct StepGraph {
    cudaGraphExec_t exec = nullptr;
    int seen = 0;  // eager runs of this shape so far (capture on the second)
  };
  std::map<GraphKey, StepGraph> graphs_;
  uint64_t graphs_generation_ = 0;  // device_alloc_generation() when graphs_ were captured
  std::atomic<bool> graphs_stale_{false};  // weights or placement replaced (any thread)
  bool use_graphs_ = true;          // EEP_CUDA_GRAPHS=0 turns them off
  bool host_routing_ = false;       // EEP_CUDA_HOST_ROUTING=1: the host path even for a group of one
  bool device_exchange_ = false;    // EEP_CUDA_DEVICE_EXCHANGE=1: moe_device_exchange when it fits
  // This step: the exchange's rows per owner block (0: this step uses the host-routed path) and
  // the group whose stream-ordered transfers finish_step must wait for.
  int exchange_cap_ = 0;
  Group* exchange_group_ = nullptr;
  int64_t graph_replays_ = 0, graph_captures_ = 0, device_exchanges_ = 0;
  std::unique_ptr<StepProfile> profile_;  // EEP_CUDA_PROFILE=N: the first N steps

  // Forward workspace (grown on demand).
  DeviceArray<float> x_, h_f32_, router_logits_, topk_w_, logits_, ones_;
  DeviceArray<bf16> h_, qkv_, q_, attn_, delta_, moe_out_, final_h_;
  DeviceArray<int32_t> meta_, topk_ids_, moe_idx_, offsets_dev_, slot_rows_;
  DeviceArray<bf16> send_rows_, recv_rows_, permuted_, gu_, act_, y_, results_, returned_;
  DeviceArray<int32_t> hdr_dev_send_, hdr_dev_recv_;
  DeviceArray<int32_t> xchg_offsets_, xchg_perm_src_, xchg_arr_dst_;
  DeviceArray<unsigned> router_counters_;  // router_fused's per-row arrival counters (zeros)
  PinnedArray<int32_t> meta_host_, ids_host_, idx_host_, hdr_send_, hdr_recv_, slot_ids_host_;
  PinnedArray<char> stage_send_, stage_recv_;
  DeviceArray<float> side_f32_;  // set_dense / stage_experts conversions
  DeviceArray<float> attn_split_;  // decode attention's partial results when it splits sequences
  DeviceArray<int32_t> sampled_;
  DeviceArray<char> sampling_rows_, sampling_ws_;
};

}  // namespace eep::cuda
