// Rendezvous key-value store hosted by eep-coord and used by engines to form communicator groups
// and run barriers (design.md §2). StoreState is the server-side logic (no sockets: eep-coord
// feeds it requests from its ROUTER socket); StoreClient is the engine-side client over its own
// ZMQ DEALER socket. Every wait has a timeout.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace eep {

using Bytes = std::string;  // opaque value bytes
using Clock = std::chrono::steady_clock;

// Server-side state. Not thread-safe: eep-coord calls it from its one event-loop thread.
class StoreState {
 public:
  void set(const std::string& key, Bytes value);
  std::optional<Bytes> get(const std::string& key) const;
  // Adds delta to the integer stored at key (absent = 0; stored as decimal text) and returns it.
  int64_t add(const std::string& key, int64_t delta);
  bool check(const std::vector<std::string>& keys) const;  // all present?
  bool erase(const std::string& key);                      // true if it existed
  // Sets key to desired when its current value equals expected (absent key matches an empty
  // expected only when expect_absent). Returns the value now stored (absent -> nullopt).
  std::optional<Bytes> compare_set(const std::string& key, const std::optional<Bytes>& expected,
                                   Bytes desired);
  // Deletes every key starting with prefix; returns how many (used to clean up old groups).
  size_t erase_prefix(const std::string& prefix);
  size_t size() const { return kv_.size(); }
  // Bumped by every call that may have changed a key; StoreWaiters retries parked requests
  // only when it moves.
  uint64_t version() const { return version_; }

 private:
  std::map<std::string, Bytes> kv_;
  uint64_t version_ = 0;
};

// Client of the coordinator's store: one DEALER socket, synchronous calls, each with a timeout.
// Thread-safe (calls are serialised by a mutex). Throws eep::Error: kTimeout when the coordinator
// does not answer or a wait runs out, kUnavailable when it cannot connect.
class StoreClient {
 public:
  // coord_addr: a ZMQ endpoint such as tcp://127.0.0.1:5555.
  explicit StoreClient(const std::string& coord_addr,
                       std::chrono::milliseconds timeout = std::chrono::seconds(30));
  ~StoreClient();
  StoreClient(const StoreClient&) = delete;
  StoreClient& operator=(const StoreClient&) = delete;

  void set(const std::string& key, const Bytes& value);
  Bytes get(const std::string& key);                // waits for the key up to the timeout
  std::optional<Bytes> try_get(const std::string& key);  // no wait
  int64_t add(const std::string& key, int64_t delta);
  bool check(const std::vector<std::string>& keys);
  bool erase(const std::string& key);
  std::optional<Bytes> compare_set(const std::string& key, const std::optional<Bytes>& expected,
                                   const Bytes& desired);
  size_t erase_prefix(const std::string& prefix);
  // Waits until every key exists. Throws kTimeout after `timeout`.
  void wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout);
  void wait(const std::vector<std::string>& keys) { wait(keys, timeout_); }

  std::chrono::milliseconds timeout() const { return timeout_; }
  const std::string& address() const { return addr_; }

 private:
  nlohmann::json call(nlohmann::json request, std::chrono::milliseconds timeout);
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string addr_;
  std::chrono::milliseconds timeout_;
};

// Server-side handling of one store request body (the "store" message of eep-protocol(7)).
// Returns the reply body, or nullopt for a wait that cannot be answered yet: the caller keeps
// the request and calls it again when keys change or answers kTimeout at its deadline.
std::optional<nlohmann::json> handle_store_request(StoreState& state, const nlohmann::json& req);

// Server-side parking of store requests that cannot be answered yet (get of a missing key,
// wait). eep-coord calls handle() for each "store" request and poll() from every iteration of
// its event loop; both hand back replies that are due, addressed by ROUTER identity.
class StoreWaiters {
 public:
  struct Reply {
    std::string identity;
    nlohmann::json body;
  };

  // Answers req now (returned) or parks it until its keys appear or its "timeout_ms" runs out
  // (nullopt). Malformed requests get an error reply, never an exception.
  std::optional<nlohmann::json> handle(StoreState& state, const std::string& identity,
                                       const nlohmann::json& req, Clock::time_point now = Clock::now());
  // Retries parked requests when the store changed since the last try and answers kTimeout to
  // those past their deadline.
  std::vector<Reply> poll(StoreState& state, Clock::time_point now = Clock::now());
  // Drops every request parked by one peer (it disconnected).
  void drop(const std::string& identity);
  // Earliest deadline of a parked request, to bound the caller's poll timeout.
  std::optional<Clock::time_point> next_deadline() const;
  size_t size() const { return parked_.size(); }

 private:
  struct Parked {
    std::string identity;
    nlohmann::json request;
    Clock::time_point deadline;
  };
  std::vector<Parked> parked_;
  uint64_t seen_version_ = 0;
};

}  // namespace eep
