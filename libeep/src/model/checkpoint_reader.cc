// Hugging Face checkpoint directories as a WeightSource: config.json plus *.safetensors, found
// through model.safetensors.index.json when there is one, else by listing the directory.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <unordered_map>

#include "eep/common.h"
#include "model/safetensors.h"
#include "model/sources.h"

namespace eep::model {

namespace {

namespace fs = std::filesystem;

[[noreturn]] void fail(const std::string& where, const std::string& problem) {
  throw Error(ErrorCode::kInvalidArgument, where + ": " + problem);
}

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) fail(path.string(), "cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    fail(path.string(), std::string("not valid JSON: ") + e.what());
  }
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

class CheckpointSource : public WeightSource {
 public:
  explicit CheckpointSource(const std::string& dir) : dir_(dir) {
    const fs::path root(dir);
    const fs::path config_path = root / "config.json";
    if (!fs::is_regular_file(config_path)) fail(dir, "no config.json (not a checkpoint directory)");
    config_ = ModelConfig::from_hf_json(read_json(config_path), dir);

    const fs::path index_path = root / "model.safetensors.index.json";
    if (fs::is_regular_file(index_path)) {
      load_from_index(root, index_path);
    } else {
      load_by_listing(root);
    }
    check_layout();
  }

  const ModelConfig& config() const override { return config_; }

  bool has(const std::string& tensor) const override {
    return tensors_.count(resolve(tensor)) != 0;
  }

  std::vector<int64_t> shape(const std::string& tensor) const override {
    return lookup(tensor).info->shape;
  }

  void read(const std::string& tensor, std::vector<float>& out) const override {
    const Entry& e = lookup(tensor);
    out.resize(e.info->numel());
    e.file->read_f32(resolve(tensor), *e.info, out.data());
  }

 private:
  struct Entry {
    const SafetensorsFile* file;
    const SafetensorsTensor* info;
  };

  const SafetensorsFile& open_file(const fs::path& path) {
    auto key = path.string();
    auto it = by_path_.find(key);
    if (it != by_path_.end()) return *it->second;
    if (!fs::is_regular_file(path)) fail(key, "no such file");
    files_.push_back(std::make_unique<SafetensorsFile>(key));
    by_path_[key] = files_.back().get();
    return *files_.back();
  }

  void load_from_index(const fs::path& root, const fs::path& index_path) {
    const auto index = read_json(index_path);
    const std::string where = index_path.string();
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
      fail(where, "no \"weight_map\" object");
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      if (!it.value().is_string()) fail(where, "weight_map entry of '" + it.key() + "' is not a file name");
      const std::string file = it.value().get<std::string>();
      // Shards live in the directory itself; refuse paths that would leave it.
      if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..")
        fail(where, "weight_map entry of '" + it.key() + "' names a bad file '" + file + "'");
      const SafetensorsFile& f = open_file(root / file);
      const SafetensorsTensor* info = f.find(it.key());
      if (info == nullptr)
        fail(f.path(), "lacks tensor '" + it.key() + "' that the index places there");
      tensors_[it.key()] = Entry{&f, info};
    }
  }

  void load_by_listing(const fs::path& root) {
    std::vector<fs::path> shards;
    for (const auto& de : fs::directory_iterator(root)) {
      if (de.is_regular_file() && de.path().extension() == ".safetensors") shards.push_back(de.path());
    }
    if (shards.empty()) fail(dir_, "no *.safetensors files");
    std::sort(shards.begin(), shards.end());
    for (const auto& p : shards) {
      const SafetensorsFile& f = open_file(p);
      for (const auto& [name, info] : f.tensors()) {
        auto [it, fresh] = tensors_.emplace(name, Entry{&f, &info});
        if (!fresh)
          fail(dir_, "tensor '" + name + "' is in both " + it->second.file->path() + " and " +
                         f.path());
      }
    }
  }

  // Every tensor the model needs is there, with its shape and a readable dtype.
  void check_layout() const {
    auto layout = tensor_layout(config_);
    for (const auto& [name, expect] : layout) {
      auto it = tensors_.find(name);
      if (it == tensors_.end()) fail(dir_, "missing tensor '" + name + "'");
      const auto& info = *it->second.info;
      if (info.shape != expect)
        fail(it->second.file->path(), "tensor '" + name + "' has shape " + shape_str(info.shape) +
                                          ", expected " + shape_str(expect));
      if (info.dtype != "F32" && info.dtype != "BF16" && info.dtype != "F16")
        fail(it->second.file->path(), "tensor '" + name + "' has dtype " + info.dtype +
                                          " (expected F32, BF16 or F16)");
    }
  }

  // Tied embeddings: lm_head is the embedding (Hugging Face ties them even if both are stored).
  std::string resolve(const std::string& tensor) const {
    if (config_.tie_word_embeddings && tensor == tensor_name_lm_head()) return tensor_name_embed();
    return tensor;
  }

  const Entry& lookup(const std::string& tensor) const {
    auto it = tensors_.find(resolve(tensor));
    EEP_CHECK(it != tensors_.end(), ErrorCode::kNotFound,
              dir_ + ": no tensor named '" + tensor + "'");
    return it->second;
  }

  std::string dir_;
  ModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::unordered_map<std::string, const SafetensorsFile*> by_path_;
  std::unordered_map<std::string, Entry> tensors_;
};

}  // namespace

std::unique_ptr<WeightSource> open_checkpoint_dir(const std::string& dir) {
  return std::make_unique<CheckpointSource>(dir);
}

}  // namespace eep::model
