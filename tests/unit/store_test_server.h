// An in-process store server for tests: a ROUTER socket on tcp://127.0.0.1:<free port> served
// by handle_store_request + StoreWaiters on its own thread, the way eep-coord serves it.
#pragma once

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include <zmq.hpp>

#include "eep/proto.h"
#include "eep/store.h"

namespace eep::testing {

class StoreTestServer {
 public:
  StoreTestServer() : sock_(ctx_, zmq::socket_type::router) {
    sock_.set(zmq::sockopt::linger, 0);
    sock_.bind("tcp://127.0.0.1:*");
    address_ = sock_.get(zmq::sockopt::last_endpoint);
    // The socket moves to the serving thread; thread start is a full memory barrier.
    thread_ = std::thread([this] { serve(); });
  }
  ~StoreTestServer() { stop(); }
  StoreTestServer(const StoreTestServer&) = delete;
  StoreTestServer& operator=(const StoreTestServer&) = delete;

  const std::string& address() const { return address_; }
  // Stops serving and closes the socket: clients then see no answers (a dead coordinator).
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  // Number of keys, read after stop() (the state belongs to the serving thread until then).
  size_t keys_after_stop() const { return state_.size(); }

 private:
  void serve() {
    while (!stop_) {
      zmq::pollitem_t item{sock_.handle(), 0, ZMQ_POLLIN, 0};
      auto timeout = std::chrono::milliseconds(10);
      zmq::poll(&item, 1, timeout);
      if (item.revents & ZMQ_POLLIN) handle_one();
      for (auto& r : waiters_.poll(state_)) proto::send_to(sock_, r.identity, r.body);
    }
    sock_.close();
  }

  void handle_one() {
    zmq::message_t id, body;
    if (!sock_.recv(id, zmq::recv_flags::dontwait)) return;
    std::string identity = id.to_string();
    // Drain to the last frame; that is the body.
    bool more = id.more();
    while (more) {
      if (!sock_.recv(body, zmq::recv_flags::dontwait)) return;
      more = body.more();
    }
    proto::Body reply;
    try {
      proto::Body req = proto::decode(body);
      if (req["type"] != "store") {
        reply = proto::error_reply(req, ErrorCode::kProtocol, "unknown type");
      } else {
        auto r = waiters_.handle(state_, identity, req);
        if (!r) return;
        reply = std::move(*r);
      }
    } catch (const Error& e) {
      reply = proto::error_reply_undecodable(e.what());
    }
    proto::send_to(sock_, identity, reply);
  }

  zmq::context_t ctx_{1};
  zmq::socket_t sock_;
  std::string address_;
  StoreState state_;
  StoreWaiters waiters_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace eep::testing
