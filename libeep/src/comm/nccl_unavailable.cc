// make_nccl_group in a CPU-only build: the CUDA build defines it in libeep/src/cuda/.
#ifndef EEP_HAVE_CUDA
#include "eep/comm.h"
#include "eep/common.h"

namespace eep {

std::unique_ptr<Group> make_nccl_group(StoreClient&, const NcclGroupOptions&) {
  throw Error(ErrorCode::kUnavailable,
              "eep was built without CUDA, so without NCCL: rebuild on a machine with nvcc");
}

}  // namespace eep
#endif
