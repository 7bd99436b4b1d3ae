// Group's default methods.
#include "eep/comm.h"
#include "eep/common.h"

namespace eep {

void Group::send_recv_batch(const std::vector<P2POp>&) {
  throw Error(ErrorCode::kUnavailable,
              "group " + name() + " has no batched point-to-point transfers (device groups only)");
}

}  // namespace eep
