// Presets, config.json mapping, validation and tensor names.
#include <gtest/gtest.h>

#include "eep/common.h"
#include "eep/model.h"

namespace {

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const eep::Error& e) {
    EXPECT_EQ(e.code(), eep::ErrorCode::kInvalidArgument) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no eep::Error thrown";
  return "";
}

TEST(ModelConfig, PresetsValidate) {
  for (const auto& name : eep::preset_names()) {
    auto c = eep::preset_config(name);
    EXPECT_EQ(c.name, name);
    EXPECT_NO_THROW(c.validate()) << name;
  }
  auto q = eep::preset_config("qwen3-30b-a3b");
  EXPECT_EQ(q.vocab_size, 151936);
  EXPECT_EQ(q.hidden_size, 2048);
  EXPECT_EQ(q.num_layers, 48);
  EXPECT_EQ(q.num_heads, 32);
  EXPECT_EQ(q.num_kv_heads, 4);
  EXPECT_EQ(q.head_dim, 128);
  EXPECT_EQ(q.num_experts, 128);
  EXPECT_EQ(q.num_experts_per_tok, 8);
  EXPECT_EQ(q.moe_intermediate_size, 768);
  EXPECT_EQ(q.max_position_embeddings, 40960);
  EXPECT_FLOAT_EQ(q.rope_theta, 1e6f);
  EXPECT_TRUE(q.norm_topk_prob);
  EXPECT_EQ(q.expert_bytes(eep::DType::kBF16), size_t(3) * 2048 * 768 * 2);
}

TEST(ModelConfig, UnknownPresetNamesKnownOnes) {
  auto msg = error_of([] { eep::preset_config("huge"); });
  EXPECT_NE(msg.find("huge"), std::string::npos);
  EXPECT_NE(msg.find("tiny"), std::string::npos);
}

// "preset:NAME,layers=N": the preset's tensors, first N layers only; bad counts are refused.
TEST(ModelConfig, PresetCutToLayers) {
  auto full = eep::open_weights("preset:tiny");
  auto cut = eep::open_weights("preset:tiny,layers=1");
  EXPECT_EQ(cut->config().num_layers, 1);
  EXPECT_GT(full->config().num_layers, 1);
  EXPECT_EQ(cut->config().hidden_size, full->config().hidden_size);
  EXPECT_EQ(cut->config().num_experts, full->config().num_experts);
  for (const char* bad : {"preset:tiny,layers=0", "preset:tiny,layers=x", "preset:tiny,layers=",
                          "preset:tiny,layers=2x", "preset:tiny,layers=1000"}) {
    auto msg = error_of([&] { eep::open_weights(bad); });
    EXPECT_NE(msg.find("layers"), std::string::npos) << bad << ": " << msg;
  }
}

TEST(ModelConfig, HfJsonRoundTrip) {
  for (const auto& name : eep::preset_names()) {
    auto c = eep::preset_config(name);
    auto j = c.to_hf_json();
    EXPECT_EQ(j["model_type"], "qwen3_moe");
    EXPECT_EQ(j["num_hidden_layers"], c.num_layers);
    auto back = eep::ModelConfig::from_hf_json(nlohmann::json::parse(j.dump()), name);
    EXPECT_EQ(back.vocab_size, c.vocab_size);
    EXPECT_EQ(back.hidden_size, c.hidden_size);
    EXPECT_EQ(back.num_layers, c.num_layers);
    EXPECT_EQ(back.num_heads, c.num_heads);
    EXPECT_EQ(back.num_kv_heads, c.num_kv_heads);
    EXPECT_EQ(back.head_dim, c.head_dim);
    EXPECT_EQ(back.num_experts, c.num_experts);
    EXPECT_EQ(back.num_experts_per_tok, c.num_experts_per_tok);
    EXPECT_EQ(back.moe_intermediate_size, c.moe_intermediate_size);
    EXPECT_EQ(back.norm_topk_prob, c.norm_topk_prob);
    EXPECT_EQ(back.rms_norm_eps, c.rms_norm_eps);
    EXPECT_EQ(back.rope_theta, c.rope_theta);
    EXPECT_EQ(back.max_position_embeddings, c.max_position_embeddings);
    EXPECT_EQ(back.tie_word_embeddings, c.tie_word_embeddings);
  }
  EXPECT_NE(eep::preset_config("tiny").to_hf_json().dump().find("\"rms_norm_eps\":1e-06"),
            std::string::npos);
}

TEST(ModelConfig, RejectsOtherModelsAndDenseLayers) {
  auto base = eep::preset_config("tiny").to_hf_json();
  auto j = base;
  j["model_type"] = "llama";
  EXPECT_NE(error_of([&] { eep::ModelConfig::from_hf_json(j, "ck"); }).find("llama"),
            std::string::npos);
  j = base;
  j["decoder_sparse_step"] = 2;
  EXPECT_NE(error_of([&] { eep::ModelConfig::from_hf_json(j, "ck"); }).find("decoder_sparse_step"),
            std::string::npos);
  j = base;
  j["mlp_only_layers"] = {0, 3};
  EXPECT_NE(error_of([&] { eep::ModelConfig::from_hf_json(j, "ck"); }).find("mlp_only_layers"),
            std::string::npos);
  j = base;
  j.erase("num_experts");
  auto msg = error_of([&] { eep::ModelConfig::from_hf_json(j, "ck"); });
  EXPECT_NE(msg.find("num_experts"), std::string::npos);
  EXPECT_EQ(msg.rfind("ck:", 0), 0u) << msg;
  j = base;
  j["num_key_value_heads"] = 3;
  EXPECT_NE(error_of([&] { eep::ModelConfig::from_hf_json(j, "ck"); }).find("num_key_value_heads"),
            std::string::npos);
  j = base;
  j["num_experts_per_tok"] = 9;
  EXPECT_NE(error_of([&] { eep::ModelConfig::from_hf_json(j, "ck"); }).find("num_experts_per_tok"),
            std::string::npos);
  j = base;
  j["hidden_size"] = "64";
  EXPECT_NE(error_of([&] { eep::ModelConfig::from_hf_json(j, "ck"); }).find("hidden_size"),
            std::string::npos);
}

TEST(ModelConfig, ValidateNamesField) {
  auto c = eep::preset_config("tiny");
  c.head_dim = 0;
  EXPECT_NE(error_of([&] { c.validate(); }).find("head_dim"), std::string::npos);
}

TEST(ModelConfig, DTypes) {
  for (auto d : {eep::DType::kF32, eep::DType::kBF16, eep::DType::kF16})
    EXPECT_EQ(eep::dtype_from_name(eep::dtype_name(d)), d);
  EXPECT_EQ(eep::dtype_size(eep::DType::kF32), 4u);
  EXPECT_EQ(eep::dtype_size(eep::DType::kBF16), 2u);
  EXPECT_NE(error_of([] { eep::dtype_from_name("I64"); }).find("I64"), std::string::npos);
}

TEST(ModelNames, HuggingFaceNames) {
  EXPECT_EQ(eep::tensor_name_embed(), "model.embed_tokens.weight");
  EXPECT_EQ(eep::tensor_name_final_norm(), "model.norm.weight");
  EXPECT_EQ(eep::tensor_name_lm_head(), "lm_head.weight");
  EXPECT_EQ(eep::tensor_name_layer(3, "self_attn.q_norm"), "model.layers.3.self_attn.q_norm.weight");
  EXPECT_EQ(eep::tensor_name_layer(0, "mlp.gate"), "model.layers.0.mlp.gate.weight");
  EXPECT_EQ(eep::tensor_name_expert(47, 127, "down_proj"),
            "model.layers.47.mlp.experts.127.down_proj.weight");
  error_of([] { eep::tensor_name_layer(0, "mlp.up"); });
  error_of([] { eep::tensor_name_expert(0, 0, "w1"); });
}

TEST(ModelNames, LayoutShapes) {
  auto c = eep::preset_config("tiny");
  auto layout = eep::tensor_layout(c);
  EXPECT_EQ(layout.size(), size_t(1 + c.num_layers * (9 + 3 * c.num_experts) + 2));
  std::map<std::string, std::vector<int64_t>> m(layout.begin(), layout.end());
  EXPECT_EQ(m.size(), layout.size());
  EXPECT_EQ(m[eep::tensor_name_layer(1, "self_attn.q_proj")], (std::vector<int64_t>{64, 64}));
  EXPECT_EQ(m[eep::tensor_name_layer(1, "self_attn.k_proj")], (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(m[eep::tensor_name_layer(1, "self_attn.o_proj")], (std::vector<int64_t>{64, 64}));
  EXPECT_EQ(m[eep::tensor_name_layer(1, "self_attn.k_norm")], (std::vector<int64_t>{16}));
  EXPECT_EQ(m[eep::tensor_name_layer(1, "mlp.gate")], (std::vector<int64_t>{8, 64}));
  EXPECT_EQ(m[eep::tensor_name_expert(2, 7, "gate_proj")], (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(m[eep::tensor_name_expert(2, 7, "down_proj")], (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(m[eep::tensor_name_lm_head()], (std::vector<int64_t>{512, 64}));
  c.tie_word_embeddings = true;
  EXPECT_EQ(eep::tensor_layout(c).size(), layout.size() - 1);
}

}  // namespace
