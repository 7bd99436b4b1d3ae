// handle_store_request: the server side of the "store" message (eep-protocol(7)).
//
// Request fields: "op" (set|get|add|check|delete|compare_set|erase_prefix|wait), "key" or
// "keys", "value"/"expected"/"desired" (msgpack bin or str, bytes kept exact), "delta",
// "timeout_ms" (get/wait), "nowait" (get: answer at once with found=false when missing).
// Replies: set {}; get {"found", "value"}; add {"value"}; check {"present"};
// delete {"existed"}; compare_set {"found", "value"}; erase_prefix {"count"}; wait {}.
#include <string>
#include <vector>

#include "eep/proto.h"
#include "eep/store.h"
#include "store/wire.h"

namespace eep {

namespace store_wire {

Bytes get_bytes(const nlohmann::json& req, const char* name) {
  auto it = req.find(name);
  if (it == req.end()) throw Error(ErrorCode::kProtocol, std::string("store: missing field \"") + name + "\"");
  if (it->is_binary()) {
    const auto& b = it->get_binary();
    return Bytes(reinterpret_cast<const char*>(b.data()), b.size());
  }
  if (it->is_string()) return it->get<std::string>();
  throw Error(ErrorCode::kProtocol, std::string("store: field \"") + name + "\" is not bytes");
}

nlohmann::json to_bin(const Bytes& b) {
  const auto* p = reinterpret_cast<const uint8_t*>(b.data());
  return nlohmann::json::binary(std::vector<uint8_t>(p, p + b.size()));
}

std::vector<std::string> get_keys(const nlohmann::json& req) {
  std::vector<std::string> keys;
  auto it = req.find("keys");
  if (it != req.end()) {
    if (!it->is_array()) throw Error(ErrorCode::kProtocol, "store: field \"keys\" is not an array");
    for (const auto& k : *it) {
      if (!k.is_string()) throw Error(ErrorCode::kProtocol, "store: \"keys\" holds a non-string");
      keys.push_back(k.get<std::string>());
    }
    return keys;
  }
  keys.push_back(proto::get_string(req, "key"));
  return keys;
}

std::chrono::milliseconds get_timeout(const nlohmann::json& req) {
  auto t = proto::get_opt_int(req, "timeout_ms");
  if (!t) return kDefaultWaitTimeout;
  if (*t < 0 || *t > kMaxWaitTimeout.count())
    throw Error(ErrorCode::kInvalidArgument, "store: timeout_ms " + std::to_string(*t) + " out of range");
  return std::chrono::milliseconds(*t);
}

std::string describe(const nlohmann::json& req) {
  std::string op = req.is_object() && req.contains("op") && req["op"].is_string()
                       ? req["op"].get<std::string>() : std::string("?");
  std::string what;
  try {
    for (const auto& k : get_keys(req)) what += (what.empty() ? "" : ",") + k;
  } catch (const Error&) {
  }
  return "store " + op + (what.empty() ? "" : " " + what);
}

}  // namespace store_wire

namespace {

using nlohmann::json;
using namespace store_wire;

std::optional<json> handle_op(StoreState& state, const json& req) {
  const std::string op = proto::get_string(req, "op");
  if (op == "set") {
    state.set(proto::get_string(req, "key"), get_bytes(req, "value"));
    return proto::ok_reply(req);
  }
  if (op == "get") {
    auto v = state.get(proto::get_string(req, "key"));
    if (v) return proto::ok_reply(req, {{"found", true}, {"value", to_bin(*v)}});
    auto nowait = req.find("nowait");
    if (nowait != req.end() && nowait->is_boolean() && nowait->get<bool>())
      return proto::ok_reply(req, {{"found", false}});
    get_timeout(req);  // validate now so a bad timeout is refused, not parked
    return std::nullopt;
  }
  if (op == "add") {
    int64_t v = state.add(proto::get_string(req, "key"), proto::get_int(req, "delta"));
    return proto::ok_reply(req, {{"value", v}});
  }
  if (op == "check") return proto::ok_reply(req, {{"present", state.check(get_keys(req))}});
  if (op == "delete") return proto::ok_reply(req, {{"existed", state.erase(proto::get_string(req, "key"))}});
  if (op == "compare_set") {
    std::optional<Bytes> expected;
    auto e = req.find("expected");
    if (e != req.end() && !e->is_null()) expected = get_bytes(req, "expected");
    auto now = state.compare_set(proto::get_string(req, "key"), expected, get_bytes(req, "desired"));
    if (now) return proto::ok_reply(req, {{"found", true}, {"value", to_bin(*now)}});
    return proto::ok_reply(req, {{"found", false}, {"value", nullptr}});
  }
  if (op == "erase_prefix") {
    return proto::ok_reply(req, {{"count", state.erase_prefix(proto::get_string(req, "prefix"))}});
  }
  if (op == "wait") {
    auto keys = get_keys(req);
    get_timeout(req);
    if (state.check(keys)) return proto::ok_reply(req);
    return std::nullopt;
  }
  throw Error(ErrorCode::kInvalidArgument, "store: unknown op \"" + op + "\"");
}

}  // namespace

std::optional<nlohmann::json> handle_store_request(StoreState& state, const nlohmann::json& req) {
  try {
    if (!req.is_object()) throw Error(ErrorCode::kProtocol, "store: request is not a map");
    return handle_op(state, req);
  } catch (const Error& e) {
    return proto::error_reply(req, e.code(), e.what());
  } catch (const std::exception& e) {
    return proto::error_reply(req, ErrorCode::kInternal, std::string("store: ") + e.what());
  }
}

}  // namespace eep
