#include "engine/cpu_backend.h"

#include <cmath>
#include <cstring>

#include "eep/comm.h"
#include "eep/common.h"

namespace eep {

CpuBackend::CpuBackend(const ModelConfig& cfg, const BackendOptions& opts) : cfg_(cfg), opts_(opts) {
  cfg_.validate();
  EEP_CHECK(opts.num_kv_blocks > 0 && opts.block_size > 0, ErrorCode::kInvalidArgument,
            "KV cache needs at least one block of at least one token");
  size_t per_layer = static_cast<size_t>(opts.num_kv_blocks) * opts.block_size *
                     cfg_.num_kv_heads * cfg_.head_dim;
  k_cache_.assign(per_layer * cfg_.num_layers, 0.0f);
  v_cache_.assign(per_layer * cfg_.num_layers, 0.0f);
}

void CpuBackend::load_dense(const WeightSource& src) {
  src.read(tensor_name_embed(), embed_);
  src.read(tensor_name_final_norm(), final_norm_);
  if (cfg_.tie_word_embeddings && !src.has(tensor_name_lm_head())) {
    lm_head_ = embed_;
  } else {
    src.read(tensor_name_lm_head(), lm_head_);
  }
  layers_.resize(cfg_.num_layers);
  for (int l = 0; l < cfg_.num_layers; ++l) {
    DenseLayer& d = layers_[l];
    src.read(tensor_name_layer(l, "input_layernorm"), d.input_norm);
    src.read(tensor_name_layer(l, "self_attn.q_proj"), d.wq);
    src.read(tensor_name_layer(l, "self_attn.k_proj"), d.wk);
    src.read(tensor_name_layer(l, "self_attn.v_proj"), d.wv);
    src.read(tensor_name_layer(l, "self_attn.o_proj"), d.wo);
    src.read(tensor_name_layer(l, "self_attn.q_norm"), d.q_norm);
    src.read(tensor_name_layer(l, "self_attn.k_norm"), d.k_norm);
    src.read(tensor_name_layer(l, "post_attention_layernorm"), d.post_norm);
    src.read(tensor_name_layer(l, "mlp.gate"), d.router);
  }
}

void CpuBackend::load_experts(const WeightSource& src, const Placement& placement, int rank) {
  EEP_CHECK(placement.num_layers == cfg_.num_layers && placement.num_experts == cfg_.num_experts,
            ErrorCode::kInvalidArgument, "placement does not match the model's layers/experts");
  int spr = placement.slots_per_rank();
  slots_.resize(cfg_.num_layers);
  for (int l = 0; l < cfg_.num_layers; ++l) {
    std::vector<ExpertSlot> next(spr);
    for (int s = 0; s < spr; ++s) {
      int expert = placement.phy2log[l][rank * spr + s];
      // Reuse weights already held in any local slot (a move within this rank costs no read).
      bool reused = false;
      for (auto& old : slots_[l]) {
        if (old.expert == expert && !old.gate.empty()) {
          next[s] = old;
          reused = true;
          break;
        }
      }
      if (reused) continue;
      next[s].expert = expert;
      src.read(tensor_name_expert(l, expert, "gate_proj"), next[s].gate);
      src.read(tensor_name_expert(l, expert, "up_proj"), next[s].up);
      src.read(tensor_name_expert(l, expert, "down_proj"), next[s].down);
    }
    slots_[l] = std::move(next);
  }
  placement_ = placement;
  rank_ = rank;
  load_.assign(cfg_.num_layers, std::vector<int64_t>(placement.num_slots, 0));
}

void CpuBackend::reset_expert_load() {
  for (auto& row : load_) std::fill(row.begin(), row.end(), 0);
}

ops::KvLayerView CpuBackend::kv_view(int layer) {
  size_t per_layer = static_cast<size_t>(opts_.num_kv_blocks) * opts_.block_size *
                     cfg_.num_kv_heads * cfg_.head_dim;
  ops::KvLayerView v;
  v.k = k_cache_.data() + per_layer * layer;
  v.v = v_cache_.data() + per_layer * layer;
  v.block_size = opts_.block_size;
  v.num_kv_heads = cfg_.num_kv_heads;
  v.head_dim = cfg_.head_dim;
  return v;
}

void CpuBackend::attention(int layer, const StepBatch& batch, const std::vector<float>& h,
                           std::vector<float>& out) {
  const DenseLayer& d = layers_[layer];
  const int rows = batch.num_rows();
  const int hd = cfg_.head_dim;
  const int q_dim = cfg_.num_heads * hd;
  const int kv_dim = cfg_.num_kv_heads * hd;
  std::vector<float> q(static_cast<size_t>(rows) * q_dim), k(static_cast<size_t>(rows) * kv_dim),
      v(static_cast<size_t>(rows) * kv_dim), attn(static_cast<size_t>(rows) * q_dim);
  ops::matmul_nt(h.data(), d.wq.data(), q.data(), rows, cfg_.hidden_size, q_dim);
  ops::matmul_nt(h.data(), d.wk.data(), k.data(), rows, cfg_.hidden_size, kv_dim);
  ops::matmul_nt(h.data(), d.wv.data(), v.data(), rows, cfg_.hidden_size, kv_dim);
  // Qwen3: per-head RMSNorm of q and k before the rotary embedding.
  ops::rmsnorm(q.data(), d.q_norm.data(), q.data(), rows * cfg_.num_heads, hd, cfg_.rms_norm_eps);
  ops::rmsnorm(k.data(), d.k_norm.data(), k.data(), rows * cfg_.num_kv_heads, hd,
               cfg_.rms_norm_eps);
  ops::rope(q.data(), batch.positions.data(), rows, cfg_.num_heads, hd, cfg_.rope_theta);
  ops::rope(k.data(), batch.positions.data(), rows, cfg_.num_kv_heads, hd, cfg_.rope_theta);
  ops::KvLayerView kv = kv_view(layer);
  for (const SeqSlice& s : batch.seqs) {
    const int32_t* pos = batch.positions.data() + s.row_begin;
    ops::kv_write(kv, s.block_table, pos, s.num_rows, k.data() + size_t(s.row_begin) * kv_dim,
                  v.data() + size_t(s.row_begin) * kv_dim);
    ops::paged_attention(kv, s.block_table, pos, s.num_rows,
                         q.data() + size_t(s.row_begin) * q_dim, cfg_.num_heads,
                         attn.data() + size_t(s.row_begin) * q_dim);
  }
  out.resize(static_cast<size_t>(rows) * cfg_.hidden_size);
  ops::matmul_nt(attn.data(), d.wo.data(), out.data(), rows, q_dim, cfg_.hidden_size);
}

void CpuBackend::forward(const StepBatch& batch, Group& group, std::vector<float>& logits) {
  const int rows = batch.num_rows();
  const int hidden = cfg_.hidden_size;
  std::vector<float> x(static_cast<size_t>(rows) * hidden), h(x.size()), tmp;
  for (int r = 0; r < rows; ++r) {
    int32_t tok = batch.tokens[r];
    EEP_CHECK(tok >= 0 && tok < cfg_.vocab_size, ErrorCode::kInternal, "token id out of range");
    std::memcpy(&x[size_t(r) * hidden], &embed_[size_t(tok) * hidden], hidden * sizeof(float));
  }
  for (int l = 0; l < cfg_.num_layers; ++l) {
    const DenseLayer& d = layers_[l];
    ops::rmsnorm(x.data(), d.input_norm.data(), h.data(), rows, hidden, cfg_.rms_norm_eps);
    attention(l, batch, h, tmp);
    for (size_t i = 0; i < x.size(); ++i) x[i] += tmp[i];
    ops::rmsnorm(x.data(), d.post_norm.data(), h.data(), rows, hidden, cfg_.rms_norm_eps);
    moe(l, h, rows, group, tmp);
    for (size_t i = 0; i < x.size(); ++i) x[i] += tmp[i];
  }
  // Logits only for the rows that sample.
  std::vector<float> last;
  int num_sample = 0;
  for (const SeqSlice& s : batch.seqs) {
    if (!s.sample) continue;
    const float* row = &x[size_t(s.row_begin + s.num_rows - 1) * hidden];
    last.insert(last.end(), row, row + hidden);
    ++num_sample;
  }
  std::vector<float> normed(last.size());
  ops::rmsnorm(last.data(), final_norm_.data(), normed.data(), num_sample, hidden,
               cfg_.rms_norm_eps);
  logits.resize(static_cast<size_t>(num_sample) * cfg_.vocab_size);
  ops::matmul_nt(normed.data(), lm_head_.data(), logits.data(), num_sample, hidden,
                 cfg_.vocab_size);
}

std::unique_ptr<Backend> make_cpu_backend(const ModelConfig& cfg, const BackendOptions& opts) {
  return std::make_unique<CpuBackend>(cfg, opts);
}

}  // namespace eep
