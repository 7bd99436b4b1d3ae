// Hugging Face checkpoint directories as a WeightSource.
#include "eep/common.h"
#include "model/sources.h"

namespace eep::model {

std::unique_ptr<WeightSource> open_checkpoint_dir(const std::string& dir) {
  throw Error(ErrorCode::kInvalidArgument, dir + ": checkpoint directories not implemented yet");
}

}  // namespace eep::model
