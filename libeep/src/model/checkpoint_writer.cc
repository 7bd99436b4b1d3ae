// write_checkpoint(): a WeightSource as a Hugging Face checkpoint directory.
#include "eep/common.h"
#include "eep/model.h"

namespace eep {

void write_checkpoint(const WeightSource& src, const std::string& dir, DType dtype,
                      size_t shard_bytes) {
  throw Error(ErrorCode::kInvalidArgument, "write_checkpoint not implemented yet");
}

}  // namespace eep
