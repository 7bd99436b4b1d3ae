// Named model presets: shapes for tests and demos, plus the real Qwen3-30B-A3B shapes.
#include "eep/common.h"
#include "eep/model.h"

namespace eep {

namespace {

ModelConfig make_tiny() {
  // Small enough that one CPU core decodes many tokens per second, yet with every feature of
  // the architecture: GQA (4 query / 2 KV heads), several layers, top-2 of 8 experts.
  ModelConfig c;
  c.name = "tiny";
  c.vocab_size = 512;
  c.hidden_size = 64;
  c.num_layers = 4;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.num_experts = 8;
  c.num_experts_per_tok = 2;
  c.moe_intermediate_size = 32;
  c.norm_topk_prob = true;
  c.rms_norm_eps = 1e-6f;
  c.rope_theta = 10000.0f;
  c.max_position_embeddings = 1024;
  c.tie_word_embeddings = false;
  return c;
}

ModelConfig make_small() {
  ModelConfig c;
  c.name = "small";
  c.vocab_size = 2048;
  c.hidden_size = 256;
  c.num_layers = 6;
  c.num_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 32;
  c.num_experts = 16;
  c.num_experts_per_tok = 4;
  c.moe_intermediate_size = 128;
  c.norm_topk_prob = true;
  c.rms_norm_eps = 1e-6f;
  c.rope_theta = 1000000.0f;
  c.max_position_embeddings = 4096;
  c.tie_word_embeddings = false;
  return c;
}

ModelConfig make_qwen3_30b_a3b() {
  // Qwen/Qwen3-30B-A3B config.json.
  ModelConfig c;
  c.name = "qwen3-30b-a3b";
  c.vocab_size = 151936;
  c.hidden_size = 2048;
  c.num_layers = 48;
  c.num_heads = 32;
  c.num_kv_heads = 4;
  c.head_dim = 128;
  c.num_experts = 128;
  c.num_experts_per_tok = 8;
  c.moe_intermediate_size = 768;
  c.norm_topk_prob = true;
  c.rms_norm_eps = 1e-6f;
  c.rope_theta = 1000000.0f;
  c.max_position_embeddings = 40960;
  c.tie_word_embeddings = false;
  return c;
}

}  // namespace

std::vector<std::string> preset_names() { return {"tiny", "small", "qwen3-30b-a3b"}; }

ModelConfig preset_config(const std::string& name) {
  if (name == "tiny") return make_tiny();
  if (name == "small") return make_small();
  if (name == "qwen3-30b-a3b") return make_qwen3_30b_a3b();
  throw Error(ErrorCode::kInvalidArgument,
              "unknown model preset '" + name + "' (known: tiny, small, qwen3-30b-a3b)");
}

}  // namespace eep
