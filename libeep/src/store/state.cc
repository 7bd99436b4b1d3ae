// StoreState: the coordinator's in-memory key-value map.
#include <charconv>

#include "eep/common.h"
#include "eep/store.h"

namespace eep {

void StoreState::set(const std::string& key, Bytes value) {
  kv_[key] = std::move(value);
  ++version_;
}

std::optional<Bytes> StoreState::get(const std::string& key) const {
  auto it = kv_.find(key);
  if (it == kv_.end()) return std::nullopt;
  return it->second;
}

int64_t StoreState::add(const std::string& key, int64_t delta) {
  int64_t current = 0;
  auto it = kv_.find(key);
  if (it != kv_.end()) {
    const std::string& text = it->second;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), current);
    if (ec != std::errc() || end != text.data() + text.size())
      throw Error(ErrorCode::kInvalidArgument, "store add " + key + ": value is not an integer");
  }
  int64_t next = 0;
  if (__builtin_add_overflow(current, delta, &next))
    throw Error(ErrorCode::kInvalidArgument, "store add " + key + ": int64 overflow");
  kv_[key] = std::to_string(next);
  ++version_;
  return next;
}

bool StoreState::check(const std::vector<std::string>& keys) const {
  for (const auto& k : keys)
    if (kv_.find(k) == kv_.end()) return false;
  return true;
}

bool StoreState::erase(const std::string& key) {
  bool existed = kv_.erase(key) > 0;
  if (existed) ++version_;
  return existed;
}

std::optional<Bytes> StoreState::compare_set(const std::string& key,
                                             const std::optional<Bytes>& expected, Bytes desired) {
  auto it = kv_.find(key);
  bool matches = expected ? (it != kv_.end() && it->second == *expected) : it == kv_.end();
  if (matches) {
    kv_[key] = std::move(desired);
    ++version_;
    return kv_[key];
  }
  if (it == kv_.end()) return std::nullopt;
  return it->second;
}

size_t StoreState::erase_prefix(const std::string& prefix) {
  size_t n = 0;
  auto it = kv_.lower_bound(prefix);
  while (it != kv_.end() && it->first.compare(0, prefix.size(), prefix) == 0) {
    it = kv_.erase(it);
    ++n;
  }
  if (n > 0) ++version_;
  return n;
}

}  // namespace eep
