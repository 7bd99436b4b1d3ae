#include "eep/client.h"

#include "eep/common.h"

namespace eep {

Client::Client(const std::string& coord_addr) : addr_(coord_addr) {
  sock_.set(zmq::sockopt::linger, 0);
  try {
    sock_.connect(coord_addr);
  } catch (const zmq::error_t& e) {
    throw Error(ErrorCode::kInvalidArgument, "bad coordinator address " + coord_addr + ": " + e.what());
  }
}

int64_t Client::send(proto::Body body) {
  if (!body.contains("seq")) body["seq"] = next_seq_++;
  int64_t seq = body["seq"].get<int64_t>();
  proto::send(sock_, body);
  return seq;
}

std::optional<proto::Body> Client::recv(std::chrono::milliseconds timeout) {
  return proto::recv(sock_, timeout);
}

proto::Body Client::call(proto::Body body, std::chrono::milliseconds timeout) {
  const std::string type = body.value("type", "?");
  int64_t seq = send(std::move(body));
  auto deadline = Clock::now() + timeout;
  while (true) {
    // Rounded up: a caller whose timeout is its own deadline must not see it end early.
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0)
      throw Error(ErrorCode::kTimeout, "no answer to '" + type + "' from " + addr_ + " within " +
                                           std::to_string(timeout.count()) + " ms");
    auto reply = recv(left);
    if (!reply) continue;
    if (reply->value("seq", int64_t{-1}) != seq) continue;
    proto::throw_if_error(*reply);
    return *reply;
  }
}

}  // namespace eep
