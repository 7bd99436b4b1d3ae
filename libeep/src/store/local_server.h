// A rendezvous store served in-process: a ROUTER socket on tcp://127.0.0.1:<free port>, answered
// by StoreWaiters on a thread of its own exactly as eep-coord answers "store" requests, so groups
// of threads form with make_gloo_group or make_nccl_group without a coordinator running. Used by
// eep-bench (moe, decode, transfer) and by the unit and GPU tests.
#pragma once

#include <atomic>
#include <string>
#include <thread>

#include <zmq.hpp>

#include "eep/store.h"

namespace eep {

class LocalStoreServer {
 public:
  LocalStoreServer();
  ~LocalStoreServer() { stop(); }
  LocalStoreServer(const LocalStoreServer&) = delete;
  LocalStoreServer& operator=(const LocalStoreServer&) = delete;

  // The endpoint to give StoreClient.
  const std::string& address() const { return address_; }
  // Stops serving and closes the socket: clients then see no answers (a dead coordinator).
  void stop();
  // Number of keys, read after stop() (the state belongs to the serving thread until then).
  size_t keys_after_stop() const { return state_.size(); }

 private:
  void serve();
  void answer_one();

  zmq::context_t ctx_{1};
  zmq::socket_t sock_;
  std::string address_;
  StoreState state_;
  StoreWaiters waiters_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace eep
