// Client side of the protocol (eep-bench, eep-scale, scripts): one DEALER socket to the
// coordinator. Raw send/recv for streaming clients, call() for request/reply tools.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include <zmq.hpp>

#include "eep/proto.h"

namespace eep {

class Client {
 public:
  explicit Client(const std::string& coord_addr);
  // Sends a body (a "seq" is added when missing); returns the seq.
  int64_t send(proto::Body body);
  // Next message from the coordinator, or nullopt after timeout.
  std::optional<proto::Body> recv(std::chrono::milliseconds timeout);
  // Sends and waits for the reply with the same seq (other messages are dropped). Throws
  // Error(kTimeout, "no answer from ADDR ...") or the reply's error.
  proto::Body call(proto::Body body, std::chrono::milliseconds timeout);
  const std::string& address() const { return addr_; }

 private:
  std::string addr_;
  zmq::context_t ctx_{1};
  zmq::socket_t sock_{ctx_, zmq::socket_type::dealer};
  int64_t next_seq_ = 1;
};

}  // namespace eep
