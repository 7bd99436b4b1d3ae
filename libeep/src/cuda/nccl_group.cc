// Placeholder: the NCCL group is being written (issue 6).
#include "eep/comm.h"
#include "eep/common.h"

namespace eep {

std::unique_ptr<Group> make_nccl_group(StoreClient&, const NcclGroupOptions&) {
  throw Error(ErrorCode::kUnavailable, "NCCL groups are not implemented yet");
}

}  // namespace eep
