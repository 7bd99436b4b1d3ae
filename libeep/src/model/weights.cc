// open_weights(): "preset:NAME[,layers=N]" or a checkpoint directory.
#include <filesystem>
#include <string>

#include "eep/common.h"
#include "model/sources.h"

namespace eep {

std::unique_ptr<WeightSource> open_weights(const std::string& spec, uint64_t seed) {
  static const std::string kPresetPrefix = "preset:";
  EEP_CHECK(!spec.empty(), ErrorCode::kInvalidArgument,
            "empty weights spec (expected preset:NAME or a checkpoint directory)");
  if (spec.rfind(kPresetPrefix, 0) == 0) {
    // "preset:NAME" or "preset:NAME,layers=N": the preset cut to its first N layers (a model's
    // tensor sizes at a fraction of its memory, for tests and benchmarks).
    std::string name = spec.substr(kPresetPrefix.size());
    int layers = 0;
    static const std::string kLayers = ",layers=";
    const size_t at = name.find(kLayers);
    if (at != std::string::npos) {
      const std::string n = name.substr(at + kLayers.size());
      name.resize(at);
      size_t used = 0;
      try {
        layers = std::stoi(n, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      EEP_CHECK(used == n.size() && used > 0 && layers >= 1, ErrorCode::kInvalidArgument,
                spec + ": layers=" + n + " is not a positive number of layers");
    }
    ModelConfig cfg = preset_config(name);
    if (layers > 0) {
      EEP_CHECK(layers <= cfg.num_layers, ErrorCode::kInvalidArgument,
                spec + ": the preset has " + std::to_string(cfg.num_layers) + " layers");
      cfg.num_layers = layers;
    }
    return model::make_synthetic_source(cfg, seed);
  }
  std::error_code ec;
  EEP_CHECK(std::filesystem::is_directory(spec, ec), ErrorCode::kInvalidArgument,
            spec + ": not a directory (expected preset:NAME or a checkpoint directory)");
  return model::open_checkpoint_dir(spec);
}

}  // namespace eep
