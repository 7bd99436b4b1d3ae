// Hugging Face Qwen3-MoE tensor names and the full tensor layout of a model.
#include <array>

#include "eep/common.h"
#include "eep/model.h"

namespace eep {

namespace {

constexpr std::array<const char*, 9> kLayerFields = {
    "input_layernorm",     "post_attention_layernorm", "self_attn.q_proj",
    "self_attn.k_proj",    "self_attn.v_proj",         "self_attn.o_proj",
    "self_attn.q_norm",    "self_attn.k_norm",         "mlp.gate"};
constexpr std::array<const char*, 3> kExpertProjs = {"gate_proj", "up_proj", "down_proj"};

std::string layer_prefix(int layer) { return "model.layers." + std::to_string(layer) + "."; }

}  // namespace

std::vector<std::string> dense_tensor_names(const ModelConfig& c) {
  std::vector<std::string> names = {tensor_name_embed(), tensor_name_final_norm(),
                                    tensor_name_lm_head()};
  for (int l = 0; l < c.num_layers; ++l)
    for (const char* f : kLayerFields) names.push_back(layer_prefix(l) + f + ".weight");
  return names;
}

std::string tensor_name_embed() { return "model.embed_tokens.weight"; }
std::string tensor_name_final_norm() { return "model.norm.weight"; }
std::string tensor_name_lm_head() { return "lm_head.weight"; }

std::string tensor_name_layer(int layer, const std::string& field) {
  bool known = false;
  for (const char* f : kLayerFields) known = known || field == f;
  EEP_CHECK(known, ErrorCode::kInvalidArgument, "unknown layer tensor field '" + field + "'");
  EEP_CHECK(layer >= 0, ErrorCode::kInvalidArgument, "negative layer index");
  return layer_prefix(layer) + field + ".weight";
}

std::string tensor_name_expert(int layer, int expert, const std::string& proj) {
  bool known = false;
  for (const char* p : kExpertProjs) known = known || proj == p;
  EEP_CHECK(known, ErrorCode::kInvalidArgument, "unknown expert projection '" + proj + "'");
  EEP_CHECK(layer >= 0 && expert >= 0, ErrorCode::kInvalidArgument,
            "negative layer or expert index");
  return layer_prefix(layer) + "mlp.experts." + std::to_string(expert) + "." + proj + ".weight";
}

std::vector<std::pair<std::string, std::vector<int64_t>>> tensor_layout(const ModelConfig& c) {
  const int64_t hidden = c.hidden_size, hd = c.head_dim, inter = c.moe_intermediate_size;
  const int64_t q_out = int64_t(c.num_heads) * hd, kv_out = int64_t(c.num_kv_heads) * hd;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  out.reserve(size_t(c.num_layers) * (9 + 3 * size_t(c.num_experts)) + 3);
  out.push_back({tensor_name_embed(), {c.vocab_size, hidden}});
  for (int l = 0; l < c.num_layers; ++l) {
    out.push_back({tensor_name_layer(l, "input_layernorm"), {hidden}});
    out.push_back({tensor_name_layer(l, "self_attn.q_proj"), {q_out, hidden}});
    out.push_back({tensor_name_layer(l, "self_attn.k_proj"), {kv_out, hidden}});
    out.push_back({tensor_name_layer(l, "self_attn.v_proj"), {kv_out, hidden}});
    out.push_back({tensor_name_layer(l, "self_attn.o_proj"), {hidden, q_out}});
    out.push_back({tensor_name_layer(l, "self_attn.q_norm"), {hd}});
    out.push_back({tensor_name_layer(l, "self_attn.k_norm"), {hd}});
    out.push_back({tensor_name_layer(l, "post_attention_layernorm"), {hidden}});
    out.push_back({tensor_name_layer(l, "mlp.gate"), {c.num_experts, hidden}});
    for (int e = 0; e < c.num_experts; ++e) {
      out.push_back({tensor_name_expert(l, e, "gate_proj"), {inter, hidden}});
      out.push_back({tensor_name_expert(l, e, "up_proj"), {inter, hidden}});
      out.push_back({tensor_name_expert(l, e, "down_proj"), {hidden, inter}});
    }
  }
  out.push_back({tensor_name_final_norm(), {hidden}});
  // Tied checkpoints carry no lm_head tensor; sources answer it with the embedding.
  if (!c.tie_word_embeddings) out.push_back({tensor_name_lm_head(), {c.vocab_size, hidden}});
  return out;
}

}  // namespace eep
