// Group's default methods.
#include "eep/comm.h"
#include "eep/common.h"

namespace eep {

void Group::send_recv_batch(const std::vector<P2POp>&) {
  throw Error(ErrorCode::kUnavailable,
              "group " + name() + " has no batched point-to-point transfers (device groups only)");
}

void Group::send_recv_batch_async(const std::vector<P2POp>&, void*) {
  throw Error(ErrorCode::kUnavailable,
              "group " + name() + " has no stream-ordered transfers (device groups only)");
}

void Group::wait_stream(void*) {
  throw Error(ErrorCode::kUnavailable,
              "group " + name() + " has no stream-ordered transfers (device groups only)");
}

}  // namespace eep
