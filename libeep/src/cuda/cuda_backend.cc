// Placeholder: the CUDA backend is being written (issue 6).
#include "eep/backend.h"
#include "eep/common.h"

namespace eep {

void check_cuda_device_usable() {
  throw Error(ErrorCode::kUnavailable,
              "the CUDA engine backend is not implemented in this version; use --backend cpu");
}

std::unique_ptr<Backend> make_cuda_backend(const ModelConfig&, const BackendOptions&) {
  check_cuda_device_usable();
  return nullptr;
}

int cuda_kv_blocks_for_memory(const ModelConfig&, int, int, double, int) {
  check_cuda_device_usable();
  return 0;
}

}  // namespace eep
