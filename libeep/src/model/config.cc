// ModelConfig: validation and the Hugging Face qwen3_moe config.json mapping.
#include <charconv>
#include <cstdlib>
#include <string>

#include "eep/common.h"
#include "eep/model.h"

namespace eep {

const char* dtype_name(DType d) {
  switch (d) {
    case DType::kF32: return "F32";
    case DType::kBF16: return "BF16";
    case DType::kF16: return "F16";
  }
  return "?";
}

DType dtype_from_name(const std::string& name) {
  if (name == "F32") return DType::kF32;
  if (name == "BF16") return DType::kBF16;
  if (name == "F16") return DType::kF16;
  throw Error(ErrorCode::kInvalidArgument,
              "unsupported dtype '" + name + "' (expected F32, BF16 or F16)");
}

size_t dtype_size(DType d) { return d == DType::kF32 ? 4 : 2; }

namespace {

void require_positive(int v, const char* field) {
  EEP_CHECK(v > 0, ErrorCode::kInvalidArgument,
            std::string("model config: ") + field + " must be > 0, got " + std::to_string(v));
}

// Torch dtype spelling of config.json for the dtype a checkpoint is stored in.
const char* torch_dtype_name(DType d) {
  switch (d) {
    case DType::kF32: return "float32";
    case DType::kBF16: return "bfloat16";
    case DType::kF16: return "float16";
  }
  return "float32";
}

// The double with the float's shortest decimal spelling, so config.json says 1e-06 rather than
// 9.999999974752427e-07 (and still reads back to the same float).
double clean_double(float f) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof(buf), f);
  return std::strtod(std::string(buf, r.ptr).c_str(), nullptr);
}

}  // namespace

void ModelConfig::validate() const {
  require_positive(vocab_size, "vocab_size");
  require_positive(hidden_size, "hidden_size");
  require_positive(num_layers, "num_hidden_layers");
  require_positive(num_heads, "num_attention_heads");
  require_positive(num_kv_heads, "num_key_value_heads");
  require_positive(head_dim, "head_dim");
  require_positive(num_experts, "num_experts");
  require_positive(num_experts_per_tok, "num_experts_per_tok");
  require_positive(moe_intermediate_size, "moe_intermediate_size");
  require_positive(max_position_embeddings, "max_position_embeddings");
  EEP_CHECK(num_heads % num_kv_heads == 0, ErrorCode::kInvalidArgument,
            "model config: num_attention_heads (" + std::to_string(num_heads) +
                ") must be a multiple of num_key_value_heads (" + std::to_string(num_kv_heads) +
                ")");
  // rotate_half pairs element i with i + head_dim/2.
  EEP_CHECK(head_dim % 2 == 0, ErrorCode::kInvalidArgument,
            "model config: head_dim must be even, got " + std::to_string(head_dim));
  EEP_CHECK(num_experts_per_tok <= num_experts, ErrorCode::kInvalidArgument,
            "model config: num_experts_per_tok (" + std::to_string(num_experts_per_tok) +
                ") exceeds num_experts (" + std::to_string(num_experts) + ")");
  EEP_CHECK(rms_norm_eps > 0.0f, ErrorCode::kInvalidArgument,
            "model config: rms_norm_eps must be > 0");
  EEP_CHECK(rope_theta > 0.0f, ErrorCode::kInvalidArgument,
            "model config: rope_theta must be > 0");
}

nlohmann::json ModelConfig::to_hf_json() const {
  nlohmann::json j;
  j["architectures"] = {"Qwen3MoeForCausalLM"};
  j["model_type"] = "qwen3_moe";
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["num_hidden_layers"] = num_layers;
  j["num_attention_heads"] = num_heads;
  j["num_key_value_heads"] = num_kv_heads;
  j["head_dim"] = head_dim;
  j["num_experts"] = num_experts;
  j["num_experts_per_tok"] = num_experts_per_tok;
  j["moe_intermediate_size"] = moe_intermediate_size;
  // Every layer is sparse; the dense-FFN fields are written so Hugging Face loads the config.
  j["intermediate_size"] = moe_intermediate_size * num_experts_per_tok;
  j["decoder_sparse_step"] = 1;
  j["mlp_only_layers"] = nlohmann::json::array();
  j["norm_topk_prob"] = norm_topk_prob;
  j["rms_norm_eps"] = clean_double(rms_norm_eps);
  j["rope_theta"] = clean_double(rope_theta);
  j["rope_scaling"] = nullptr;
  j["max_position_embeddings"] = max_position_embeddings;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["hidden_act"] = "silu";
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["use_sliding_window"] = false;
  j["torch_dtype"] = torch_dtype_name(DType::kF32);
  return j;
}

namespace {

int get_int(const nlohmann::json& j, const char* key, const std::string& src) {
  EEP_CHECK(j.contains(key), ErrorCode::kInvalidArgument,
            src + ": config.json lacks \"" + key + "\"");
  const auto& v = j.at(key);
  EEP_CHECK(v.is_number_integer(), ErrorCode::kInvalidArgument,
            src + ": config.json \"" + key + "\" must be an integer");
  auto x = v.get<int64_t>();
  EEP_CHECK(x >= 0 && x <= (int64_t(1) << 31) - 1, ErrorCode::kInvalidArgument,
            src + ": config.json \"" + key + "\" out of range");
  return static_cast<int>(x);
}

int get_int_or(const nlohmann::json& j, const char* key, int def, const std::string& src) {
  if (!j.contains(key) || j.at(key).is_null()) return def;
  return get_int(j, key, src);
}

float get_float_or(const nlohmann::json& j, const char* key, float def, const std::string& src) {
  if (!j.contains(key) || j.at(key).is_null()) return def;
  EEP_CHECK(j.at(key).is_number(), ErrorCode::kInvalidArgument,
            src + ": config.json \"" + key + "\" must be a number");
  return j.at(key).get<float>();
}

bool get_bool_or(const nlohmann::json& j, const char* key, bool def, const std::string& src) {
  if (!j.contains(key) || j.at(key).is_null()) return def;
  EEP_CHECK(j.at(key).is_boolean(), ErrorCode::kInvalidArgument,
            src + ": config.json \"" + key + "\" must be true or false");
  return j.at(key).get<bool>();
}

}  // namespace

ModelConfig ModelConfig::from_hf_json(const nlohmann::json& j, const std::string& name) {
  const std::string& src = name;
  EEP_CHECK(j.is_object(), ErrorCode::kInvalidArgument, src + ": config.json is not an object");
  EEP_CHECK(j.contains("model_type") && j.at("model_type").is_string(),
            ErrorCode::kInvalidArgument, src + ": config.json lacks \"model_type\"");
  const auto model_type = j.at("model_type").get<std::string>();
  EEP_CHECK(model_type == "qwen3_moe", ErrorCode::kInvalidArgument,
            src + ": model_type \"" + model_type + "\" is not supported (only qwen3_moe)");

  // eep runs every layer as MoE; Hugging Face allows dense layers through these two fields.
  int sparse_step = get_int_or(j, "decoder_sparse_step", 1, src);
  EEP_CHECK(sparse_step == 1, ErrorCode::kInvalidArgument,
            src + ": decoder_sparse_step " + std::to_string(sparse_step) +
                " means dense FFN layers, which eep does not support (only 1)");
  if (j.contains("mlp_only_layers") && !j.at("mlp_only_layers").is_null()) {
    EEP_CHECK(j.at("mlp_only_layers").is_array() && j.at("mlp_only_layers").empty(),
              ErrorCode::kInvalidArgument,
              src + ": mlp_only_layers lists dense FFN layers, which eep does not support");
  }
  // Features of the architecture that the CPU reference does not implement: refuse rather than
  // compute something else.
  EEP_CHECK(!j.contains("rope_scaling") || j.at("rope_scaling").is_null(),
            ErrorCode::kInvalidArgument, src + ": rope_scaling is not supported");
  EEP_CHECK(!get_bool_or(j, "attention_bias", false, src), ErrorCode::kInvalidArgument,
            src + ": attention_bias is not supported");
  EEP_CHECK(!get_bool_or(j, "use_sliding_window", false, src), ErrorCode::kInvalidArgument,
            src + ": use_sliding_window is not supported");
  if (j.contains("hidden_act") && j.at("hidden_act").is_string()) {
    EEP_CHECK(j.at("hidden_act").get<std::string>() == "silu", ErrorCode::kInvalidArgument,
              src + ": hidden_act must be silu");
  }

  ModelConfig c;
  c.name = name;
  c.vocab_size = get_int(j, "vocab_size", src);
  c.hidden_size = get_int(j, "hidden_size", src);
  c.num_layers = get_int(j, "num_hidden_layers", src);
  c.num_heads = get_int(j, "num_attention_heads", src);
  // Hugging Face defaults, where the config may leave a field out.
  c.num_kv_heads = get_int_or(j, "num_key_value_heads", c.num_heads, src);
  c.head_dim = get_int_or(j, "head_dim", c.num_heads > 0 ? c.hidden_size / c.num_heads : 0, src);
  c.num_experts = get_int(j, "num_experts", src);
  c.num_experts_per_tok = get_int(j, "num_experts_per_tok", src);
  c.moe_intermediate_size = get_int(j, "moe_intermediate_size", src);
  c.norm_topk_prob = get_bool_or(j, "norm_topk_prob", false, src);
  c.rms_norm_eps = get_float_or(j, "rms_norm_eps", 1e-6f, src);
  c.rope_theta = get_float_or(j, "rope_theta", 10000.0f, src);
  c.max_position_embeddings = get_int_or(j, "max_position_embeddings", 32768, src);
  c.tie_word_embeddings = get_bool_or(j, "tie_word_embeddings", false, src);
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(ErrorCode::kInvalidArgument, src + ": " + e.what());
  }
  return c;
}

size_t ModelConfig::expert_bytes(DType d) const {
  return size_t(3) * size_t(hidden_size) * size_t(moe_intermediate_size) * dtype_size(d);
}

}  // namespace eep
