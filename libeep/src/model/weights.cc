// open_weights(): "preset:NAME" or a checkpoint directory.
#include <filesystem>

#include "eep/common.h"
#include "model/sources.h"

namespace eep {

std::unique_ptr<WeightSource> open_weights(const std::string& spec, uint64_t seed) {
  static const std::string kPresetPrefix = "preset:";
  EEP_CHECK(!spec.empty(), ErrorCode::kInvalidArgument,
            "empty weights spec (expected preset:NAME or a checkpoint directory)");
  if (spec.rfind(kPresetPrefix, 0) == 0) {
    return model::make_synthetic_source(preset_config(spec.substr(kPresetPrefix.size())), seed);
  }
  std::error_code ec;
  EEP_CHECK(std::filesystem::is_directory(spec, ec), ErrorCode::kInvalidArgument,
            spec + ": not a directory (expected preset:NAME or a checkpoint directory)");
  return model::open_checkpoint_dir(spec);
}

}  // namespace eep
