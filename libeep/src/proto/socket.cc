// Sending and receiving protocol bodies on ZMQ sockets.
#include <string>
#include <vector>

#include "eep/proto.h"

namespace eep::proto {

namespace {

void send_frame(zmq::socket_t& sock, const void* data, size_t size, zmq::send_flags flags) {
  try {
    // Blocking send: DEALER/ROUTER sockets queue up to the high-water mark; ROUTER drops
    // messages to unknown peers instead of blocking, so this does not hang on a dead peer.
    auto sent = sock.send(zmq::const_buffer(data, size), flags);
    if (!sent) throw Error(ErrorCode::kUnavailable, "zmq send would block");
  } catch (const zmq::error_t& e) {
    // ROUTER_MANDATORY: the addressed peer is not connected (any more).
    if (e.num() == EHOSTUNREACH) throw Error(ErrorCode::kNotFound, "peer is not connected");
    throw Error(ErrorCode::kUnavailable, std::string("zmq send: ") + e.what());
  }
}

}  // namespace

void send(zmq::socket_t& sock, const Body& body) {
  std::string wire = encode(body);
  send_frame(sock, wire.data(), wire.size(), zmq::send_flags::none);
}

void send_to(zmq::socket_t& sock, const std::string& identity, const Body& body) {
  std::string wire = encode(body);  // encode first so a bad body never leaves half a message
  send_frame(sock, identity.data(), identity.size(), zmq::send_flags::sndmore);
  send_frame(sock, wire.data(), wire.size(), zmq::send_flags::none);
}

std::optional<Body> recv(zmq::socket_t& sock, std::chrono::milliseconds timeout) {
  zmq::pollitem_t item{sock.handle(), 0, ZMQ_POLLIN, 0};
  try {
    int n = zmq::poll(&item, 1, timeout);
    if (n == 0 || !(item.revents & ZMQ_POLLIN)) return std::nullopt;
    // All frames of a message arrive together, so the remaining frames never block.
    zmq::message_t last;
    bool have = false;
    while (true) {
      zmq::message_t frame;
      auto got = sock.recv(frame, zmq::recv_flags::dontwait);
      if (!got) {
        if (!have) return std::nullopt;  // spurious wakeup
        break;
      }
      last = std::move(frame);
      have = true;
      if (!last.more()) break;
    }
    return decode(last);
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return std::nullopt;  // a signal: the caller checks its stop flag
    throw Error(ErrorCode::kUnavailable, std::string("zmq recv: ") + e.what());
  }
}

}  // namespace eep::proto
