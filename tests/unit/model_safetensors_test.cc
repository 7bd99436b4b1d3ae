// Safetensors reading, checkpoint writing and round trips, and rejection of corrupt files.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "eep/common.h"
#include "eep/model.h"
#include "model/convert.h"
#include "model/safetensors.h"

namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() /
            ("eep_model_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A raw safetensors file: header JSON text and data bytes.
std::string safetensors_bytes(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = char(n >> (8 * i));
  return out + header + data;
}

// Expects an Error(kInvalidArgument) whose message contains every fragment.
void expect_invalid(const std::function<void()>& fn, std::initializer_list<std::string> fragments) {
  try {
    fn();
    ADD_FAILURE() << "no eep::Error thrown";
  } catch (const eep::Error& e) {
    EXPECT_EQ(e.code(), eep::ErrorCode::kInvalidArgument) << e.what();
    for (const auto& f : fragments)
      EXPECT_NE(std::string(e.what()).find(f), std::string::npos)
          << "message '" << e.what() << "' lacks '" << f << "'";
  }
}

bool same(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

TEST(ModelConvert, F16RoundTripsEveryValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = eep::model::f16_to_f32(uint16_t(h));
    const uint32_t exp = (h >> 10) & 0x1F, man = h & 0x3FF;
    double ref = exp == 0 ? std::ldexp(double(man), -24)
                          : std::ldexp(1.0 + man / 1024.0, int(exp) - 15);
    if (exp == 31) {
      EXPECT_TRUE(man ? std::isnan(f) : std::isinf(f)) << h;
      if (man) continue;
    } else {
      EXPECT_EQ(double(std::fabs(f)), ref) << h;
    }
    EXPECT_EQ(std::signbit(f), bool(h & 0x8000)) << h;
    EXPECT_EQ(eep::model::f32_to_f16(f), uint16_t(h)) << h;
  }
}

TEST(ModelConvert, RoundToNearestEven) {
  using eep::model::f32_from_bits;
  // bf16: halfway cases go to the even mantissa, others to the nearest.
  EXPECT_EQ(eep::model::f32_to_bf16(f32_from_bits(0x3F808000)), 0x3F80);  // tie, even below
  EXPECT_EQ(eep::model::f32_to_bf16(f32_from_bits(0x3F818000)), 0x3F82);  // tie, even above
  EXPECT_EQ(eep::model::f32_to_bf16(f32_from_bits(0x3F808001)), 0x3F81);
  EXPECT_EQ(eep::model::f32_to_bf16(f32_from_bits(0x3F807FFF)), 0x3F80);
  EXPECT_EQ(eep::model::f32_to_bf16(f32_from_bits(0x7F7FFFFF)), 0x7F80);  // overflow to inf
  EXPECT_TRUE(std::isnan(eep::model::bf16_to_f32(eep::model::f32_to_bf16(std::nanf("")))));
  // f16: 1 + 2^-11 is halfway between 1 and 1 + 2^-10.
  EXPECT_EQ(eep::model::f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);
  EXPECT_EQ(eep::model::f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);
  EXPECT_EQ(eep::model::f32_to_f16(65520.0f), 0x7C00);
  EXPECT_EQ(eep::model::f32_to_f16(65519.0f), 0x7BFF);
  EXPECT_EQ(eep::model::f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);  // tie to even (zero)
  EXPECT_EQ(eep::model::f32_to_f16(std::ldexp(1.5f, -25)), 0x0001);
}

TEST(ModelCheckpoint, F32RoundTripIsBitwise) {
  TempDir dir;
  auto src = eep::open_weights("preset:tiny", 3);
  eep::write_checkpoint(*src, dir.str(), eep::DType::kF32);
  EXPECT_TRUE(fs::exists(dir.path() / "config.json"));
  EXPECT_TRUE(fs::exists(dir.path() / "model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(dir.path() / "model-00001-of-00001.safetensors"));
  auto back = eep::open_weights(dir.str());
  EXPECT_EQ(back->config().num_experts, 8);
  EXPECT_EQ(back->config().name, dir.str());
  for (const auto& [name, shape] : eep::tensor_layout(src->config())) {
    EXPECT_EQ(back->shape(name), shape);
    EXPECT_TRUE(same(back->read(name), src->read(name))) << name;
  }
  auto cfg = nlohmann::json::parse(read_file(dir.path() / "config.json"));
  EXPECT_EQ(cfg["torch_dtype"], "float32");
  EXPECT_EQ(cfg["model_type"], "qwen3_moe");
}

TEST(ModelCheckpoint, HalfPrecisionRoundTripsToRoundedValues) {
  for (auto dtype : {eep::DType::kBF16, eep::DType::kF16}) {
    TempDir dir;
    auto src = eep::open_weights("preset:tiny");
    eep::write_checkpoint(*src, dir.str(), dtype);
    auto back = eep::open_weights(dir.str());
    for (const auto& [name, shape] : eep::tensor_layout(src->config())) {
      auto v = src->read(name);
      for (auto& x : v) {
        x = dtype == eep::DType::kBF16 ? eep::model::bf16_to_f32(eep::model::f32_to_bf16(x))
                                       : eep::model::f16_to_f32(eep::model::f32_to_f16(x));
      }
      EXPECT_TRUE(same(back->read(name), v)) << name;
    }
    auto cfg = nlohmann::json::parse(read_file(dir.path() / "config.json"));
    EXPECT_EQ(cfg["torch_dtype"], dtype == eep::DType::kBF16 ? "bfloat16" : "float16");
  }
}

TEST(ModelCheckpoint, ShardsAndListingWithoutIndex) {
  TempDir dir;
  auto src = eep::open_weights("preset:tiny");
  eep::write_checkpoint(*src, dir.str(), eep::DType::kBF16, 64 << 10);
  int shards = 0;
  for (const auto& de : fs::directory_iterator(dir.path()))
    shards += de.path().extension() == ".safetensors";
  EXPECT_GT(shards, 3);
  char last[64];
  std::snprintf(last, sizeof(last), "model-%05d-of-%05d.safetensors", shards, shards);
  EXPECT_TRUE(fs::exists(dir.path() / last)) << last;
  auto index = nlohmann::json::parse(read_file(dir.path() / "model.safetensors.index.json"));
  EXPECT_EQ(index["weight_map"].size(), eep::tensor_layout(src->config()).size());
  auto with_index = eep::open_weights(dir.str());
  fs::remove(dir.path() / "model.safetensors.index.json");
  auto listed = eep::open_weights(dir.str());
  for (const auto& [name, shape] : eep::tensor_layout(src->config()))
    EXPECT_TRUE(same(with_index->read(name), listed->read(name))) << name;
}

TEST(ModelCheckpoint, TiedEmbeddings) {
  TempDir dir;
  auto c = eep::preset_config("tiny");
  c.tie_word_embeddings = true;
  auto cfg = c.to_hf_json();
  write_file(dir.path() / "config.json", cfg.dump());
  auto src = eep::open_weights("preset:tiny");
  // A tied checkpoint: every tensor but lm_head, in one F32 shard.
  std::string header = "{", data;
  for (const auto& [name, shape] : eep::tensor_layout(c)) {
    auto v = src->read(name);
    header += (header.size() > 1 ? "," : "") + ("\"" + name + "\":{\"dtype\":\"F32\",\"shape\":") +
              nlohmann::json(shape).dump() + ",\"data_offsets\":[" + std::to_string(data.size()) +
              "," + std::to_string(data.size() + v.size() * 4) + "]}";
    data.append(reinterpret_cast<const char*>(v.data()), v.size() * 4);
  }
  write_file(dir.path() / "model.safetensors", safetensors_bytes(header + "}", data));
  auto w = eep::open_weights(dir.str());
  EXPECT_TRUE(w->has(eep::tensor_name_lm_head()));
  EXPECT_TRUE(same(w->read(eep::tensor_name_lm_head()), src->read(eep::tensor_name_embed())));
}

TEST(ModelSafetensors, ReadsDtypesAndUnalignedData) {
  TempDir dir;
  // Header of odd length: the data starts unaligned.
  std::string header =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[8,12]},)"
      R"("c":{"dtype":"F16","shape":[1,2],"data_offsets":[12,16]},)"
      R"("i":{"dtype":"I64","shape":[],"data_offsets":[16,24]},"__metadata__":{"x":"y"}})";
  if (header.size() % 2 == 0) header += " ";
  std::string data;
  float a[2] = {1.5f, -2.25f};
  uint16_t b[2] = {0x3F80, 0xC040};  // 1, -3
  uint16_t c[2] = {0x3C00, 0x3555};  // 1, ~1/3
  data.append(reinterpret_cast<char*>(a), 8);
  data.append(reinterpret_cast<char*>(b), 4);
  data.append(reinterpret_cast<char*>(c), 4);
  data.append(8, '\0');
  write_file(dir.path() / "x.safetensors", safetensors_bytes(header, data));
  eep::model::SafetensorsFile f((dir.path() / "x.safetensors").string());
  EXPECT_EQ(f.tensors().size(), 4u);
  std::vector<float> out(2);
  f.read_f32("a", *f.find("a"), out.data());
  EXPECT_EQ(out, (std::vector<float>{1.5f, -2.25f}));
  f.read_f32("b", *f.find("b"), out.data());
  EXPECT_EQ(out, (std::vector<float>{1.0f, -3.0f}));
  f.read_f32("c", *f.find("c"), out.data());
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_NEAR(out[1], 1.0 / 3.0, 1e-3);
  EXPECT_EQ(f.find("c")->shape, (std::vector<int64_t>{1, 2}));
  expect_invalid([&] { f.read_f32("i", *f.find("i"), out.data()); }, {"x.safetensors", "I64"});
}

TEST(ModelSafetensors, RejectsCorruptFiles) {
  TempDir dir;
  const auto p = (dir.path() / "bad.safetensors").string();
  auto open = [&] { eep::model::SafetensorsFile f(p); };
  const std::string ok = R"({"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";

  write_file(p, safetensors_bytes(ok, std::string(16, '\0')));
  EXPECT_NO_THROW(open());

  write_file(p, "abc");
  expect_invalid(open, {p, "too short"});
  write_file(p, safetensors_bytes(ok, std::string(16, '\0')).substr(0, 20));
  expect_invalid(open, {p, "header length"});
  write_file(p, safetensors_bytes(ok, std::string(10, '\0')));  // truncated data
  expect_invalid(open, {p, "'t'", "past the end"});
  write_file(p, safetensors_bytes(R"({"t":{"dtype":"F32",)", ""));
  expect_invalid(open, {p, "JSON"});
  write_file(p, safetensors_bytes("[1,2]", ""));
  expect_invalid(open, {p, "object"});
  write_file(p, safetensors_bytes(R"({"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,999]}})",
                                  std::string(16, '\0')));
  expect_invalid(open, {p, "data_offsets"});
  write_file(p, safetensors_bytes(R"({"t":{"dtype":"F32","shape":[3,2],"data_offsets":[0,16]}})",
                                  std::string(16, '\0')));
  expect_invalid(open, {p, "need 24 bytes"});
  write_file(p, safetensors_bytes(R"({"t":{"dtype":"Q4","shape":[2,2],"data_offsets":[0,16]}})",
                                  std::string(16, '\0')));
  expect_invalid(open, {p, "unknown dtype 'Q4'"});
  write_file(p, safetensors_bytes(R"({"t":{"dtype":"F32","shape":[2,-2],"data_offsets":[0,16]}})",
                                  std::string(16, '\0')));
  expect_invalid(open, {p, "shape"});
  write_file(p, safetensors_bytes(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})",
                                  std::string(16, '\0')));
  expect_invalid(open, {p, "begin > end"});
  write_file(p, safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                  std::string(16, '\0')));
  expect_invalid(open, {p, "overlap"});
  write_file(p, safetensors_bytes(R"({"t":{"dtype":"F32","shape":[4611686018427387904,4],)"
                                  R"("data_offsets":[0,16]}})",
                                  std::string(16, '\0')));
  expect_invalid(open, {p, "more than the file"});
  std::string huge(8, '\0');
  huge[4] = 1;  // 2^32-byte header
  write_file(p, huge + "{}");
  expect_invalid(open, {p, "100 MiB"});
  expect_invalid([&] { eep::model::SafetensorsFile f(p + ".missing"); }, {"cannot open"});
}

TEST(ModelCheckpoint, RejectsBadDirectories) {
  {
    TempDir dir;
    expect_invalid([&] { eep::open_weights(dir.str()); }, {dir.str(), "config.json"});
  }
  {
    TempDir dir;
    auto cfg = eep::preset_config("tiny").to_hf_json();
    cfg["model_type"] = "qwen2";
    write_file(dir.path() / "config.json", cfg.dump());
    expect_invalid([&] { eep::open_weights(dir.str()); }, {dir.str(), "qwen2"});
    write_file(dir.path() / "config.json", "{not json");
    expect_invalid([&] { eep::open_weights(dir.str()); }, {"config.json", "JSON"});
    write_file(dir.path() / "config.json", eep::preset_config("tiny").to_hf_json().dump());
    expect_invalid([&] { eep::open_weights(dir.str()); }, {dir.str(), "no *.safetensors"});
  }
  {
    // A tensor missing from the index (and so from the model).
    TempDir dir;
    auto src = eep::open_weights("preset:tiny");
    eep::write_checkpoint(*src, dir.str(), eep::DType::kBF16);
    const auto index_path = dir.path() / "model.safetensors.index.json";
    auto index = nlohmann::json::parse(read_file(index_path));
    const auto victim = eep::tensor_name_expert(2, 5, "up_proj");
    index["weight_map"].erase(victim);
    write_file(index_path, index.dump());
    expect_invalid([&] { eep::open_weights(dir.str()); }, {"missing tensor", victim});
    // The index points at a shard that lacks the tensor.
    index["weight_map"][victim] = "other.safetensors";
    write_file(dir.path() / "other.safetensors", safetensors_bytes("{}", ""));
    write_file(index_path, index.dump());
    expect_invalid([&] { eep::open_weights(dir.str()); }, {"other.safetensors", victim});
    index["weight_map"][victim] = "../escape.safetensors";
    write_file(index_path, index.dump());
    expect_invalid([&] { eep::open_weights(dir.str()); }, {"bad file"});
    index["weight_map"][victim] = "gone.safetensors";
    write_file(index_path, index.dump());
    expect_invalid([&] { eep::open_weights(dir.str()); }, {"gone.safetensors", "no such file"});
  }
  {
    // A config whose shapes disagree with the tensors.
    TempDir dir;
    auto src = eep::open_weights("preset:tiny");
    eep::write_checkpoint(*src, dir.str(), eep::DType::kF32);
    auto cfg = eep::preset_config("tiny").to_hf_json();
    cfg["moe_intermediate_size"] = 48;
    write_file(dir.path() / "config.json", cfg.dump());
    expect_invalid([&] { eep::open_weights(dir.str()); }, {"shape [32, 64]", "expected [48, 64]"});
  }
  {
    // A truncated shard.
    TempDir dir;
    auto src = eep::open_weights("preset:tiny");
    eep::write_checkpoint(*src, dir.str(), eep::DType::kF32);
    const auto shard = dir.path() / "model-00001-of-00001.safetensors";
    fs::resize_file(shard, fs::file_size(shard) - 100);
    expect_invalid([&] { eep::open_weights(dir.str()); }, {shard.string(), "truncated"});
  }
}

TEST(ModelCheckpoint, UnknownTensorIsNotFound) {
  TempDir dir;
  eep::write_checkpoint(*eep::open_weights("preset:tiny"), dir.str(), eep::DType::kBF16);
  auto w = eep::open_weights(dir.str());
  EXPECT_FALSE(w->has("model.layers.9.mlp.gate.weight"));
  try {
    w->read("model.layers.9.mlp.gate.weight");
    FAIL();
  } catch (const eep::Error& e) {
    EXPECT_EQ(e.code(), eep::ErrorCode::kNotFound);
  }
}

}  // namespace
