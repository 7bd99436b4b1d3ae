// StoreWaiters: parks get/wait requests that cannot be answered yet, for eep-coord's loop.
#include <algorithm>

#include "eep/proto.h"
#include "eep/store.h"
#include "store/wire.h"

namespace eep {

std::optional<nlohmann::json> StoreWaiters::handle(StoreState& state, const std::string& identity,
                                                   const nlohmann::json& req, Clock::time_point now) {
  auto reply = handle_store_request(state, req);
  if (reply) return reply;
  // handle_store_request validated timeout_ms before returning nullopt.
  parked_.push_back(Parked{identity, req, now + store_wire::get_timeout(req)});
  return std::nullopt;
}

std::vector<StoreWaiters::Reply> StoreWaiters::poll(StoreState& state, Clock::time_point now) {
  std::vector<Reply> due;
  if (parked_.empty()) return due;
  bool changed = state.version() != seen_version_;
  seen_version_ = state.version();
  std::vector<Parked> still;
  still.reserve(parked_.size());
  for (auto& p : parked_) {
    if (changed) {
      auto reply = handle_store_request(state, p.request);
      if (reply) {
        due.push_back(Reply{std::move(p.identity), std::move(*reply)});
        continue;
      }
    }
    if (now >= p.deadline) {
      auto ms = store_wire::get_timeout(p.request).count();
      due.push_back(Reply{std::move(p.identity),
                          proto::error_reply(p.request, ErrorCode::kTimeout,
                                             store_wire::describe(p.request) + ": not set within " +
                                                 std::to_string(ms) + " ms")});
      continue;
    }
    still.push_back(std::move(p));
  }
  parked_ = std::move(still);
  return due;
}

void StoreWaiters::drop(const std::string& identity) {
  std::erase_if(parked_, [&](const Parked& p) { return p.identity == identity; });
}

std::optional<Clock::time_point> StoreWaiters::next_deadline() const {
  if (parked_.empty()) return std::nullopt;
  auto it = std::min_element(parked_.begin(), parked_.end(),
                             [](const Parked& a, const Parked& b) { return a.deadline < b.deadline; });
  return it->deadline;
}

}  // namespace eep
