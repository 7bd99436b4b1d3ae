// Seeded synthetic weights: determinism, independence of tensors, scales, errors.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>

#include "eep/common.h"
#include "eep/model.h"
#include "model/sources.h"

namespace {

bool same(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

TEST(ModelSynthetic, PureFunctionOfPresetSeedAndName) {
  auto a = eep::open_weights("preset:tiny", 1);
  auto b = eep::open_weights("preset:tiny", 1);
  auto c = eep::open_weights("preset:tiny", 2);
  const auto q = eep::tensor_name_layer(0, "self_attn.q_proj");
  // Order of reads does not matter.
  auto e7 = b->read(eep::tensor_name_expert(3, 7, "up_proj"));
  EXPECT_TRUE(same(a->read(q), b->read(q)));
  EXPECT_TRUE(same(a->read(eep::tensor_name_expert(3, 7, "up_proj")), e7));
  EXPECT_FALSE(same(a->read(q), c->read(q)));
  EXPECT_FALSE(same(a->read(eep::tensor_name_expert(3, 7, "up_proj")),
                    a->read(eep::tensor_name_expert(3, 6, "up_proj"))));
  EXPECT_EQ(a->config().name, "tiny");
  EXPECT_EQ(a->shape(q), (std::vector<int64_t>{64, 64}));
  EXPECT_TRUE(a->has(q));
  EXPECT_FALSE(a->has("model.layers.99.mlp.gate.weight"));
}

TEST(ModelSynthetic, ValuesDoNotDependOnLengthOrThreads) {
  // A big fill runs on several threads; its prefix must equal a small single-threaded fill.
  const std::string name = eep::tensor_name_expert(0, 1, "gate_proj");
  std::vector<float> big(5'000'001), small(4097);
  eep::model::synthetic_fill("tiny", 9, name, {1, 64}, big.data(), big.size());
  eep::model::synthetic_fill("tiny", 9, name, {1, 64}, small.data(), small.size());
  EXPECT_EQ(0, std::memcmp(big.data(), small.data(), small.size() * sizeof(float)));
  std::vector<float> again(big.size());
  eep::model::synthetic_fill("tiny", 9, name, {1, 64}, again.data(), again.size());
  EXPECT_EQ(0, std::memcmp(big.data(), again.data(), big.size() * sizeof(float)));
}

TEST(ModelSynthetic, Scales) {
  auto w = eep::open_weights("preset:small");
  auto check_std = [&](const std::string& name, double expect) {
    auto v = w->read(name);
    double s = 0, s2 = 0;
    for (float x : v) s += x, s2 += double(x) * x;
    double mean = s / v.size(), sd = std::sqrt(s2 / v.size() - mean * mean);
    EXPECT_NEAR(mean, 0.0, 0.1 * expect) << name;
    EXPECT_NEAR(sd, expect, 0.05 * expect) << name;
  };
  check_std(eep::tensor_name_expert(0, 0, "gate_proj"), 1.0 / std::sqrt(256.0));
  check_std(eep::tensor_name_expert(0, 0, "down_proj"), 1.0 / std::sqrt(128.0));
  check_std(eep::tensor_name_layer(5, "self_attn.o_proj"), 1.0 / std::sqrt(256.0));
  check_std(eep::tensor_name_embed(), 1.0);
  for (const auto& n : {eep::tensor_name_layer(2, "input_layernorm"),
                        eep::tensor_name_layer(2, "self_attn.q_norm"), eep::tensor_name_final_norm()}) {
    auto v = w->read(n);
    float lo = 2, hi = 0;
    for (float x : v) lo = std::min(lo, x), hi = std::max(hi, x);
    EXPECT_GE(lo, 0.9f) << n;
    EXPECT_LE(hi, 1.1f) << n;
    EXPECT_LT(lo, hi) << n;
  }
}

TEST(ModelSynthetic, Errors) {
  try {
    eep::open_weights("preset:nope");
    FAIL();
  } catch (const eep::Error& e) {
    EXPECT_EQ(e.code(), eep::ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("nope"), std::string::npos);
  }
  auto w = eep::open_weights("preset:tiny");
  try {
    w->read("model.layers.0.mlp.experts.8.up_proj.weight");
    FAIL();
  } catch (const eep::Error& e) {
    EXPECT_EQ(e.code(), eep::ErrorCode::kNotFound);
  }
  try {
    eep::open_weights("/no/such/dir");
    FAIL();
  } catch (const eep::Error& e) {
    EXPECT_EQ(e.code(), eep::ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("/no/such/dir"), std::string::npos);
  }
}

TEST(ModelSynthetic, RealShapesAreCheapPerTensor) {
  auto w = eep::open_weights("preset:qwen3-30b-a3b");
  EXPECT_EQ(w->shape(eep::tensor_name_lm_head()), (std::vector<int64_t>{151936, 2048}));
  auto t0 = std::chrono::steady_clock::now();
  std::vector<float> v;
  for (const char* p : {"gate_proj", "up_proj", "down_proj"})
    w->read(eep::tensor_name_expert(47, 127, p), v);
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(v.size(), size_t(2048) * 768);
  // Generous bound (debug builds, slow CI): one expert is ~4.7M values.
  EXPECT_LT(ms, 2000.0);
  RecordProperty("expert_ms", std::to_string(ms));
}

}  // namespace
