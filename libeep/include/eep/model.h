// Qwen3-MoE model description and weight sources (design.md §3): named presets with seeded
// synthetic weights of real shapes, and Hugging Face checkpoint directories (config.json +
// *.safetensors in fp32/bf16/fp16, Hugging Face's Qwen3-MoE tensor names).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace eep {

enum class DType { kF32, kBF16, kF16 };
const char* dtype_name(DType d);        // "F32", "BF16", "F16" (safetensors spelling)
DType dtype_from_name(const std::string& name);  // throws Error(kInvalidArgument)
size_t dtype_size(DType d);

struct ModelConfig {
  std::string name;  // preset name or checkpoint directory
  int vocab_size = 0;
  int hidden_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int num_experts = 0;
  int num_experts_per_tok = 0;
  int moe_intermediate_size = 0;
  bool norm_topk_prob = true;
  float rms_norm_eps = 1e-6f;
  float rope_theta = 1e6f;
  int max_position_embeddings = 0;
  bool tie_word_embeddings = false;

  // Throws Error(kInvalidArgument) naming the first bad field (zero sizes, heads not divisible
  // by kv heads, top-k > experts, ...).
  void validate() const;
  // Hugging Face config.json (model_type "qwen3_moe") in and out. from_hf_json rejects other
  // model types and missing fields with Error(kInvalidArgument).
  nlohmann::json to_hf_json() const;
  static ModelConfig from_hf_json(const nlohmann::json& j, const std::string& name);

  // Parameter bytes of one expert (gate + up + down) at dtype, for planning transfers.
  size_t expert_bytes(DType d) const;
};

// Presets: "tiny" (a few layers, fast on CPU, for tests), "small" (bigger CPU demo),
// "qwen3-30b-a3b" (the real shapes: 48 layers, 128 experts, top-8, hidden 2048, moe 768,
// 32/4 heads of 128, vocab 151936).
std::vector<std::string> preset_names();
ModelConfig preset_config(const std::string& name);  // throws Error(kInvalidArgument)

// Hugging Face tensor names.
std::string tensor_name_embed();                  // model.embed_tokens.weight
std::string tensor_name_final_norm();             // model.norm.weight
std::string tensor_name_lm_head();                // lm_head.weight
// field: input_layernorm, post_attention_layernorm, self_attn.q_proj, self_attn.k_proj,
// self_attn.v_proj, self_attn.o_proj, self_attn.q_norm, self_attn.k_norm, mlp.gate
std::string tensor_name_layer(int layer, const std::string& field);
// proj: gate_proj, up_proj, down_proj
std::string tensor_name_expert(int layer, int expert, const std::string& proj);
// Names of the dense (non-expert) tensors every engine holds: embedding, final norm, lm_head,
// then each layer's fields in the order of the comment above tensor_name_layer.
std::vector<std::string> dense_tensor_names(const ModelConfig& c);
// Every tensor name of the model with its shape, in a stable order.
std::vector<std::pair<std::string, std::vector<int64_t>>> tensor_layout(const ModelConfig& c);

// Read-only source of weights, converted to fp32 on read. Thread-safe.
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual const ModelConfig& config() const = 0;
  virtual bool has(const std::string& tensor) const = 0;
  virtual std::vector<int64_t> shape(const std::string& tensor) const = 0;
  // Reads a whole tensor as fp32 into out (resized). Throws Error(kNotFound) for unknown names,
  // Error(kInvalidArgument) for a corrupt file.
  virtual void read(const std::string& tensor, std::vector<float>& out) const = 0;
  std::vector<float> read(const std::string& tensor) const {
    std::vector<float> v;
    read(tensor, v);
    return v;
  }
};

// Opens "preset:NAME" (seeded synthetic weights: each tensor is a pure function of the preset,
// the seed and the tensor name, so any engine can make any tensor on its own) or a checkpoint
// directory. Throws Error(kInvalidArgument) naming what is wrong with the spec or the files.
std::unique_ptr<WeightSource> open_weights(const std::string& spec, uint64_t seed = 0);

// Writes every tensor of src as a Hugging Face checkpoint: config.json, model-0000i-of-0000n.
// safetensors shards of at most shard_bytes, model.safetensors.index.json.
void write_checkpoint(const WeightSource& src, const std::string& dir, DType dtype,
                      size_t shard_bytes = size_t(2) << 30);

}  // namespace eep
