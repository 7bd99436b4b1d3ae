#include "comm/gloo_store.h"

#include "eep/common.h"

namespace eep::comm {

void GlooStoreAdapter::set(const std::string& key, const std::vector<char>& data) {
  client_.set(key, Bytes(data.begin(), data.end()));
  keys_set_.push_back(key);
}

std::vector<char> GlooStoreAdapter::get(const std::string& key) {
  // Gloo expects get to block until the key exists; bound it by the group timeout rather than
  // the client's default.
  client_.wait({key}, timeout_);
  auto v = client_.try_get(key);
  if (!v) throw Error(ErrorCode::kNotFound, "store get " + key + ": key vanished after wait");
  return std::vector<char>(v->begin(), v->end());
}

void GlooStoreAdapter::wait(const std::vector<std::string>& keys,
                            const std::chrono::milliseconds& timeout) {
  // Gloo passes kNoTimeout (0) to mean "forever"; we never wait forever.
  client_.wait(keys, timeout.count() > 0 ? timeout : timeout_);
}

}  // namespace eep::comm
