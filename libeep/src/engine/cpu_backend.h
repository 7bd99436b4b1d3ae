// CPU reference backend: fp32 weights, paged KV cache in host memory, MoE through Gloo
// all-to-all. Batch-invariant: every row's result depends only on its own inputs (see ops.h).
#pragma once

#include <vector>

#include "eep/backend.h"
#include "eep/ops.h"

namespace eep {

class CpuBackend : public Backend {
 public:
  CpuBackend(const ModelConfig& cfg, const BackendOptions& opts);

  const ModelConfig& config() const override { return cfg_; }
  void load_dense(const WeightSource& src) override;
  void load_experts(const WeightSource& src, const Placement& placement, int rank) override;
  void forward(const StepBatch& batch, Group& group, std::vector<float>& logits) override;
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
  void restore_previous() override;
  void release_previous() override;
  size_t kv_bytes() const override { return (k_cache_.size() + v_cache_.size()) * sizeof(float); }
  const char* name() const override { return "cpu"; }
  double benchmark_moe(int layer, int rows, int iters, Group& group) override;

 private:
  struct DenseLayer {
    std::vector<float> input_norm, wq, wk, wv, wo, q_norm, k_norm, post_norm, router;
  };
  struct ExpertSlot {
    int expert = -1;
    std::vector<float> gate, up, down;
  };

  void attention(int layer, const StepBatch& batch, const std::vector<float>& h,
                 std::vector<float>& out);
  // MoE FFN of one layer across the group: route, dispatch rows to slot owners, run local
  // experts, return results, combine in a fixed order.
  void moe(int layer, const std::vector<float>& h, int rows, Group& group, std::vector<float>& out);
  ops::KvLayerView kv_view(int layer);
  std::vector<float>* dense_ptr(const std::string& name);
  const std::vector<float>* dense_ptr(const std::string& name) const {
    return const_cast<CpuBackend*>(this)->dense_ptr(name);
  }

  ModelConfig cfg_;
  BackendOptions opts_;
  std::vector<float> embed_, final_norm_, lm_head_;
  std::vector<DenseLayer> layers_;
  std::vector<std::vector<ExpertSlot>> slots_;  // [layer][local slot]
  Placement placement_;
  int rank_ = 0;
  // Staged by stage_experts, made live by commit_staged.
  std::vector<std::vector<ExpertSlot>> staged_slots_;
  Placement staged_placement_;
  int staged_rank_ = -1;
  // The slots commit_staged replaced, kept for restore_previous until release_previous.
  std::vector<std::vector<ExpertSlot>> previous_slots_;
  Placement previous_placement_;
  int previous_rank_ = -1;
  std::vector<float> k_cache_, v_cache_;         // [layers][blocks][block_size][kv_heads][hd]
  std::vector<std::vector<int64_t>> load_;       // [layers][num_slots]
};

}  // namespace eep
