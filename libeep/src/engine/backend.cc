// Backend selection: which backends this build has and whether they can run here. The CUDA
// backend itself lives in libeep/src/cuda/ and is compiled only when nvcc was found.
#include "eep/backend.h"

#include "eep/common.h"

namespace eep {

#ifdef EEP_HAVE_CUDA
// Defined in libeep/src/cuda/cuda_backend.cc: throws the reason no GPU is usable.
void check_cuda_device_usable();
#endif

void check_backend_available(const std::string& backend) {
  if (backend == "cpu") return;
  if (backend == "cuda") {
#ifdef EEP_HAVE_CUDA
    check_cuda_device_usable();
    return;
#else
    throw Error(ErrorCode::kUnavailable,
                "eep was built without CUDA: rebuild on a machine with nvcc, or use --backend cpu");
#endif
  }
  throw Error(ErrorCode::kInvalidArgument, "unknown backend '" + backend + "' (cpu or cuda)");
}

#ifndef EEP_HAVE_CUDA
std::unique_ptr<Backend> make_cuda_backend(const ModelConfig&, const BackendOptions&) {
  throw Error(ErrorCode::kUnavailable,
              "eep was built without CUDA: rebuild on a machine with nvcc, or use --backend cpu");
}

int cuda_kv_blocks_for_memory(const ModelConfig&, int, int, double, int) {
  throw Error(ErrorCode::kUnavailable,
              "eep was built without CUDA: rebuild on a machine with nvcc, or use --backend cpu");
}
#endif

}  // namespace eep
