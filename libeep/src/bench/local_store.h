// A rendezvous store served in-process (eep-bench moe/decode/transfer): a ROUTER socket on
// tcp://127.0.0.1:<free port>, answered by StoreWaiters on a thread of its own exactly as
// eep-coord answers "store" requests, so groups of threads form with make_gloo_group or
// make_nccl_group without a coordinator running.
#pragma once

#include <atomic>
#include <string>
#include <thread>

#include <zmq.hpp>

#include "eep/store.h"

namespace eep::bench {

class LocalStore {
 public:
  LocalStore();
  ~LocalStore();
  LocalStore(const LocalStore&) = delete;
  LocalStore& operator=(const LocalStore&) = delete;

  // The endpoint to give StoreClient.
  const std::string& address() const { return address_; }

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

}  // namespace eep::bench
