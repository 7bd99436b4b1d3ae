// gloo::rendezvous::Store over the coordinator's store (eep::StoreClient), so Gloo groups
// rendezvous through eep-coord instead of a file system or Redis.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include <gloo/rendezvous/store.h>

#include "eep/store.h"

namespace eep::comm {

class GlooStoreAdapter : public gloo::rendezvous::Store {
 public:
  GlooStoreAdapter(StoreClient& client, std::chrono::milliseconds timeout)
      : client_(client), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override;
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override;

  // Every key this member wrote (full keys, prefix included), so it can delete exactly its own
  // keys once the group is connected. Gloo versions differ in which keys they write
  // ("<rank>", "rank_<rank>", ...), so we record rather than guess.
  const std::vector<std::string>& keys_set() const { return keys_set_; }

 private:
  StoreClient& client_;
  std::chrono::milliseconds timeout_;
  std::vector<std::string> keys_set_;
};

}  // namespace eep::comm
