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

#include <memory>
#include <mutex>
#include <vector>

#include "cuda/cuda_util.h"
#include "eep/backend.h"

namespace eep::kernels {
class GroupedGemm;
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
  const std::vector<std::vector<int64_t>>& expert_load() const override { return load_; }
  void reset_expert_load() override;
  std::vector<std::string> dense_tensor_names() const override;
  void get_dense(const std::string& name, std::vector<float>& out) const override;
  void set_dense(const std::string& name, std::vector<float> data) override;
  bool get_expert(int layer, int expert, std::vector<float>& out) const override;
  void stage_experts(const Placement& placement, int rank,
                     const std::map<std::pair<int, int>, std::vector<float>>& received) override;
  void commit_staged() override;
  void discard_staged() override;
  size_t kv_bytes() const override { return k_cache_.bytes() + v_cache_.bytes(); }
  const char* name() const override { return "cuda"; }
  double benchmark_moe(int layer, int rows, int iters, Group& group) override;

 private:
  struct DenseLayer {
    DeviceArray<bf16> input_norm, wq, wk, wv, wo, q_norm, k_norm, post_norm, router;
  };
  // The expert slots of one layer on this rank: slot s is rows [s * 2 * inter, (s+1) * 2 * inter)
  // of gate_up (gate rows first, then up: one GEMM gives both) and [s * hidden, (s+1) * hidden)
  // of down. Slots are updated in place, so their addresses stay put.
  struct ExpertLayer {
    DeviceArray<bf16> gate_up;  // [slots][2 * inter][hidden]
    DeviceArray<bf16> down;     // [slots][hidden][inter]
    std::vector<int> expert;    // logical expert of each local slot (-1: empty)
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
  // MoE FFN of one layer for h_[rows] across the group; result in moe_out_ (bf16 [rows][hidden]).
  void moe(int layer, const bf16* h, int rows, Group& group, bf16* out);
  void gemm(const bf16* x, const bf16* w, void* y, cudaDataType_t y_type, int rows, int k, int n);
  void upload_f32_as_bf16(const std::vector<float>& src, bf16* dst, cudaStream_t stream);
  DeviceArray<bf16>* dense_array(const std::string& name);
  const DeviceArray<bf16>* dense_array(const std::string& name) const {
    return const_cast<CudaBackend*>(this)->dense_array(name);
  }
  void allocate_experts(std::vector<ExpertLayer>& layers, int slots_per_rank) const;
  void activate() const;  // cudaSetDevice for the calling thread

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
  mutable std::mutex side_mutex_;  // side_stream_ and its staging buffers

  DeviceArray<bf16> k_cache_, v_cache_;  // [layers][blocks][block_size][kv_heads][head_dim]
  std::vector<std::vector<int64_t>> load_;

  // Forward workspace (grown on demand).
  DeviceArray<float> x_, router_logits_, topk_w_, logits_, ones_;
  DeviceArray<bf16> h_, q_, k_, v_, attn_, delta_, moe_out_, final_h_;
  DeviceArray<int32_t> meta_, topk_ids_, moe_idx_, offsets_dev_, slot_rows_;
  DeviceArray<bf16> send_rows_, recv_rows_, permuted_, gu_, act_, y_, results_, returned_;
  DeviceArray<int32_t> hdr_dev_send_, hdr_dev_recv_;
  PinnedArray<int32_t> meta_host_, ids_host_, idx_host_, hdr_send_, hdr_recv_, slot_ids_host_;
  PinnedArray<char> stage_send_, stage_recv_;
  DeviceArray<float> side_f32_;  // set_dense / stage_experts conversions
  DeviceArray<int32_t> sampled_;
  DeviceArray<char> sampling_rows_, sampling_ws_;
};

}  // namespace eep::cuda
