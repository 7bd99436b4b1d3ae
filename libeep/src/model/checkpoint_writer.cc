// write_checkpoint(): a WeightSource as a Hugging Face checkpoint directory (config.json,
// model-0000i-of-0000n.safetensors shards, model.safetensors.index.json).
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "eep/common.h"
#include "eep/model.h"
#include "model/convert.h"

namespace eep {

namespace {

namespace fs = std::filesystem;

[[noreturn]] void fail(const std::string& where, const std::string& problem) {
  throw Error(ErrorCode::kInvalidArgument, where + ": " + problem);
}

const char* torch_dtype(DType d) {
  switch (d) {
    case DType::kF32: return "float32";
    case DType::kBF16: return "bfloat16";
    case DType::kF16: return "float16";
  }
  return "float32";
}

struct PlannedTensor {
  std::string name;
  std::vector<int64_t> shape;
  size_t bytes;
};

// Writes through a temporary name and renames, so a crash never leaves a half file that looks
// complete.
class FileWriter {
 public:
  explicit FileWriter(const fs::path& path) : path_(path), tmp_(path.string() + ".tmp") {
    f_ = std::fopen(tmp_.c_str(), "wb");
    if (f_ == nullptr) fail(tmp_, std::string("cannot create: ") + std::strerror(errno));
  }
  ~FileWriter() {
    if (f_ != nullptr) {
      std::fclose(f_);
      std::remove(tmp_.c_str());
    }
  }
  void write(const void* p, size_t n) {
    if (n != 0 && std::fwrite(p, 1, n, f_) != n)
      fail(tmp_, std::string("write failed: ") + std::strerror(errno));
  }
  void commit() {
    int rc = std::fclose(f_);
    f_ = nullptr;
    if (rc != 0) fail(tmp_, std::string("close failed: ") + std::strerror(errno));
    std::error_code ec;
    fs::rename(tmp_, path_, ec);
    if (ec) fail(path_.string(), "rename failed: " + ec.message());
  }

 private:
  fs::path path_;
  std::string tmp_;
  FILE* f_ = nullptr;
};

void write_text(const fs::path& path, const std::string& text) {
  FileWriter w(path);
  w.write(text.data(), text.size());
  w.commit();
}

std::string shard_name(size_t i, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "model-%05zu-of-%05zu.safetensors", i + 1, n);
  return buf;
}

}  // namespace

void write_checkpoint(const WeightSource& src, const std::string& dir, DType dtype,
                      size_t shard_bytes) {
  const ModelConfig& config = src.config();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail(dir, "cannot create directory: " + ec.message());

  // Plan: tensors in layout order, a new shard whenever the next tensor would overflow this one
  // (a tensor larger than shard_bytes gets a shard of its own).
  const size_t elem = dtype_size(dtype);
  std::vector<std::vector<PlannedTensor>> shards(1);
  size_t in_shard = 0;
  for (const auto& [name, layout_shape] : tensor_layout(config)) {
    auto shape = src.shape(name);
    size_t numel = 1;
    for (int64_t d : shape) numel *= size_t(d);
    const size_t bytes = numel * elem;
    if (!shards.back().empty() && in_shard + bytes > shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back({name, shape, bytes});
    in_shard += bytes;
  }

  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  size_t total = 0;
  std::vector<float> f32;
  std::vector<uint16_t> half;
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file = shard_name(s, shards.size());
    nlohmann::ordered_json header;
    header["__metadata__"] = {{"format", "pt"}};
    size_t offset = 0;
    for (const auto& t : shards[s]) {
      header[t.name] = {{"dtype", dtype_name(dtype)},
                        {"shape", t.shape},
                        {"data_offsets", {offset, offset + t.bytes}}};
      offset += t.bytes;
      weight_map[t.name] = file;
    }
    total += offset;
    std::string text = header.dump();
    // Pad with spaces so the data starts 8-byte aligned, as the reference writer does.
    text.append((8 - text.size() % 8) % 8, ' ');
    const uint64_t len = text.size();
    uint8_t len_le[8];
    for (int i = 0; i < 8; ++i) len_le[i] = uint8_t(len >> (8 * i));

    FileWriter w(fs::path(dir) / file);
    w.write(len_le, 8);
    w.write(text.data(), text.size());
    for (const auto& t : shards[s]) {
      src.read(t.name, f32);
      if (f32.size() * elem != t.bytes)
        fail(dir, "source returned " + std::to_string(f32.size()) + " values for '" + t.name + "'");
      if (dtype == DType::kF32) {
        w.write(f32.data(), t.bytes);
        continue;
      }
      half.resize(f32.size());
      if (dtype == DType::kBF16) {
        for (size_t i = 0; i < f32.size(); ++i) half[i] = model::f32_to_bf16(f32[i]);
      } else {
        for (size_t i = 0; i < f32.size(); ++i) half[i] = model::f32_to_f16(f32[i]);
      }
      w.write(half.data(), t.bytes);
    }
    w.commit();
  }

  nlohmann::ordered_json index;
  index["metadata"] = {{"total_size", total}};
  index["weight_map"] = weight_map;
  write_text(fs::path(dir) / "model.safetensors.index.json", index.dump(2) + "\n");
  auto cfg = config.to_hf_json();
  cfg["torch_dtype"] = torch_dtype(dtype);
  write_text(fs::path(dir) / "config.json", cfg.dump(2) + "\n");
}

}  // namespace eep
