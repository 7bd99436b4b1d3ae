// A plain Qwen3-MoE forward pass built from the CPU ops over synthetic tiny weights: greedy
// decoding must depend on the prompt (the synthetic model is not degenerate), and prefill
// in one call must equal token-by-token decoding bitwise (batch invariance end to end).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <numeric>
#include <set>

#include "eep/model.h"
#include "eep/ops.h"

namespace {

using eep::tensor_name_expert;
using eep::tensor_name_layer;

class TinyModel {
 public:
  explicit TinyModel(const eep::WeightSource& w) : c_(w.config()) {
    for (auto& [name, shape] : eep::tensor_layout(c_)) t_[name] = w.read(name);
    if (c_.tie_word_embeddings) t_[eep::tensor_name_lm_head()] = w.read(eep::tensor_name_lm_head());
    const int blocks = c_.max_position_embeddings / kBlock;
    kv_width_ = c_.num_kv_heads * c_.head_dim;
    kcache_.assign(c_.num_layers, std::vector<float>(size_t(blocks) * kBlock * kv_width_));
    vcache_ = kcache_;
    table_.resize(blocks);
    // Reverse order: block ids unrelated to positions.
    std::iota(table_.rbegin(), table_.rend(), 0);
  }

  // Runs tokens at positions pos0.. and returns the logits of the last one.
  std::vector<float> forward(const std::vector<int32_t>& tokens, int pos0) {
    const int T = int(tokens.size()), H = c_.hidden_size, hd = c_.head_dim;
    const int qw = c_.num_heads * hd, E = c_.num_experts, K = c_.num_experts_per_tok;
    std::vector<int32_t> pos(T);
    std::iota(pos.begin(), pos.end(), pos0);
    std::vector<float> h(size_t(T) * H), x(h.size()), q(size_t(T) * qw), k(size_t(T) * kv_width_),
        v(k.size()), a(q.size()), o(h.size()), logits(size_t(T) * E), eo(H);
    std::vector<int32_t> ids(size_t(T) * K);
    std::vector<float> wts(ids.size());
    const auto& emb = t_[eep::tensor_name_embed()];
    for (int t = 0; t < T; ++t)
      std::copy_n(emb.data() + size_t(tokens[t]) * H, H, h.data() + size_t(t) * H);
    for (int l = 0; l < c_.num_layers; ++l) {
      auto W = [&](const char* f) { return t_[tensor_name_layer(l, f)].data(); };
      eep::ops::rmsnorm(h.data(), W("input_layernorm"), x.data(), T, H, c_.rms_norm_eps);
      eep::ops::matmul_nt(x.data(), W("self_attn.q_proj"), q.data(), T, H, qw);
      eep::ops::matmul_nt(x.data(), W("self_attn.k_proj"), k.data(), T, H, kv_width_);
      eep::ops::matmul_nt(x.data(), W("self_attn.v_proj"), v.data(), T, H, kv_width_);
      eep::ops::rmsnorm(q.data(), W("self_attn.q_norm"), q.data(), T * c_.num_heads, hd,
                        c_.rms_norm_eps);
      eep::ops::rmsnorm(k.data(), W("self_attn.k_norm"), k.data(), T * c_.num_kv_heads, hd,
                        c_.rms_norm_eps);
      eep::ops::rope(q.data(), pos.data(), T, c_.num_heads, hd, c_.rope_theta);
      eep::ops::rope(k.data(), pos.data(), T, c_.num_kv_heads, hd, c_.rope_theta);
      eep::ops::KvLayerView kv{kcache_[l].data(), vcache_[l].data(), kBlock, c_.num_kv_heads, hd};
      eep::ops::kv_write(kv, table_.data(), pos.data(), T, k.data(), v.data());
      eep::ops::paged_attention(kv, table_.data(), pos.data(), T, q.data(), c_.num_heads, a.data());
      eep::ops::matmul_nt(a.data(), W("self_attn.o_proj"), o.data(), T, qw, H);
      for (size_t i = 0; i < h.size(); ++i) h[i] += o[i];
      eep::ops::rmsnorm(h.data(), W("post_attention_layernorm"), x.data(), T, H, c_.rms_norm_eps);
      eep::ops::matmul_nt(x.data(), W("mlp.gate"), logits.data(), T, H, E);
      eep::ops::router_topk(logits.data(), T, E, K, c_.norm_topk_prob, ids.data(), wts.data());
      for (int t = 0; t < T; ++t) {
        std::fill(o.begin(), o.begin() + H, 0.0f);
        for (int j = 0; j < K; ++j) {
          const int e = ids[t * K + j];
          eep::ops::swiglu_expert(x.data() + size_t(t) * H, 1,
                                  t_[tensor_name_expert(l, e, "gate_proj")].data(),
                                  t_[tensor_name_expert(l, e, "up_proj")].data(),
                                  t_[tensor_name_expert(l, e, "down_proj")].data(), H,
                                  c_.moe_intermediate_size, eo.data());
          for (int i = 0; i < H; ++i) o[i] += wts[t * K + j] * eo[i];
        }
        for (int i = 0; i < H; ++i) h[size_t(t) * H + i] += o[i];
      }
      experts_used_.insert(ids.begin(), ids.end());
    }
    std::vector<float> last(H), out(c_.vocab_size);
    eep::ops::rmsnorm(h.data() + size_t(T - 1) * H, t_[eep::tensor_name_final_norm()].data(),
                      last.data(), 1, H, c_.rms_norm_eps);
    eep::ops::matmul_nt(last.data(), t_[eep::tensor_name_lm_head()].data(), out.data(), 1, H,
                        c_.vocab_size);
    return out;
  }

  static int argmax(const std::vector<float>& v) {
    return int(std::max_element(v.begin(), v.end()) - v.begin());
  }

  std::vector<int32_t> greedy(const std::vector<int32_t>& prompt, int n) {
    std::vector<int32_t> out;
    auto logits = forward(prompt, 0);
    int pos = int(prompt.size());
    for (int i = 0; i < n; ++i) {
      out.push_back(argmax(logits));
      logits = forward({out.back()}, pos++);
    }
    return out;
  }

  const std::set<int32_t>& experts_used() const { return experts_used_; }

 private:
  static constexpr int kBlock = 16;
  eep::ModelConfig c_;
  std::map<std::string, std::vector<float>> t_;
  int kv_width_;
  std::vector<std::vector<float>> kcache_, vcache_;
  std::vector<int32_t> table_;
  std::set<int32_t> experts_used_;
};

TEST(ModelForward, TinyGreedyDependsOnPrompt) {
  auto w = eep::open_weights("preset:tiny");
  std::set<int> first_tokens;
  std::set<int32_t> all_tokens;
  for (int p = 0; p < 6; ++p) {
    TinyModel m(*w);
    std::vector<int32_t> prompt = {int32_t(1 + 37 * p), int32_t(200 + 11 * p), int32_t(7 * p + 3)};
    auto out = m.greedy(prompt, 12);
    first_tokens.insert(out[0]);
    all_tokens.insert(out.begin(), out.end());
    // Not one token repeated from the start.
    EXPECT_GT(std::set<int32_t>(out.begin(), out.end()).size(), 2u) << "prompt " << p;
    // Routing uses more than a couple of experts.
    EXPECT_GE(m.experts_used().size(), 6u);
  }
  EXPECT_GE(first_tokens.size(), 4u);
  EXPECT_GE(all_tokens.size(), 20u);
}

TEST(ModelForward, PrefillEqualsTokenByToken) {
  auto w = eep::open_weights("preset:tiny", 5);
  std::vector<int32_t> prompt = {5, 99, 300, 12, 511, 0, 42, 77, 128};
  TinyModel a(*w), b(*w);
  auto la = a.forward(prompt, 0);
  std::vector<float> lb;
  for (int i = 0; i < int(prompt.size()); ++i) lb = b.forward({prompt[i]}, i);
  EXPECT_EQ(0, std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)));
}

TEST(ModelForward, TinyDecodeIsFast) {
  auto w = eep::open_weights("preset:tiny");
  TinyModel m(*w);
  auto t0 = std::chrono::steady_clock::now();
  m.greedy({1, 2, 3}, 100);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  RecordProperty("tokens_per_s", std::to_string(100 / s));
  EXPECT_LT(s, 5.0);  // hundreds of tokens/s expected; only catch pathological slowness
}

}  // namespace
