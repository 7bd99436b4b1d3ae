// StoreClient: synchronous calls to the coordinator's store over one ZMQ DEALER socket.
#include <mutex>

#include <zmq.hpp>

#include "eep/proto.h"
#include "eep/store.h"
#include "store/wire.h"

namespace eep {

namespace {
// Extra time the client waits beyond a server-side wait, so the server's own kTimeout reply
// (which names the missing keys) normally arrives before the client gives up on the server.
constexpr std::chrono::milliseconds kReplyGrace{2000};
}  // namespace

struct StoreClient::Impl {
  // Own context: no static-destruction-order or fork hazards, and one IO thread per client
  // is cheap next to an engine process.
  zmq::context_t ctx{1};
  zmq::socket_t sock{ctx, zmq::socket_type::dealer};
  std::mutex mu;
  int64_t seq = 0;
};

StoreClient::StoreClient(const std::string& coord_addr, std::chrono::milliseconds timeout)
    : impl_(std::make_unique<Impl>()), addr_(coord_addr), timeout_(timeout) {
  EEP_CHECK(timeout.count() > 0, ErrorCode::kInvalidArgument, "store client: timeout must be positive");
  try {
    impl_->sock.set(zmq::sockopt::linger, 0);
    impl_->sock.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(proto::kMaxBodyBytes));
    impl_->sock.connect(coord_addr);
  } catch (const zmq::error_t& e) {
    throw Error(ErrorCode::kUnavailable, "store: cannot connect to " + coord_addr + ": " + e.what());
  }
}

StoreClient::~StoreClient() {
  try {
    impl_->sock.close();
    impl_->ctx.close();
  } catch (...) {
    // Destructors must not throw; nothing useful to do with a close failure here.
  }
}

nlohmann::json StoreClient::call(nlohmann::json request, std::chrono::milliseconds timeout) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  const int64_t seq = ++impl_->seq;
  request["v"] = proto::kProtocolVersion;
  request["type"] = "store";
  request["seq"] = seq;
  proto::send(impl_->sock, request);
  const auto deadline = Clock::now() + timeout;
  while (true) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) break;
    std::optional<nlohmann::json> reply;
    try {
      reply = proto::recv(impl_->sock, left);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kProtocol) throw;
      continue;  // a garbled frame is not our answer; keep waiting for the real one
    }
    if (!reply) break;
    auto s = reply->find("seq");
    if (s == reply->end() || !s->is_number_integer() || s->get<int64_t>() != seq) continue;  // stale
    proto::throw_if_error(*reply);
    return std::move(*reply);
  }
  throw Error(ErrorCode::kTimeout, store_wire::describe(request) + ": no answer from " + addr_ +
                                       " within " + std::to_string(timeout.count()) + " ms");
}

void StoreClient::set(const std::string& key, const Bytes& value) {
  call({{"op", "set"}, {"key", key}, {"value", store_wire::to_bin(value)}}, timeout_);
}

Bytes StoreClient::get(const std::string& key) {
  auto r = call({{"op", "get"}, {"key", key}, {"timeout_ms", timeout_.count()}}, timeout_ + kReplyGrace);
  return store_wire::get_bytes(r, "value");
}

std::optional<Bytes> StoreClient::try_get(const std::string& key) {
  auto r = call({{"op", "get"}, {"key", key}, {"nowait", true}}, timeout_);
  if (!r.value("found", false)) return std::nullopt;
  return store_wire::get_bytes(r, "value");
}

int64_t StoreClient::add(const std::string& key, int64_t delta) {
  auto r = call({{"op", "add"}, {"key", key}, {"delta", delta}}, timeout_);
  return proto::get_int(r, "value");
}

bool StoreClient::check(const std::vector<std::string>& keys) {
  auto r = call({{"op", "check"}, {"keys", keys}}, timeout_);
  return r.value("present", false);
}

bool StoreClient::erase(const std::string& key) {
  auto r = call({{"op", "delete"}, {"key", key}}, timeout_);
  return r.value("existed", false);
}

std::optional<Bytes> StoreClient::compare_set(const std::string& key,
                                              const std::optional<Bytes>& expected,
                                              const Bytes& desired) {
  nlohmann::json req = {{"op", "compare_set"}, {"key", key}, {"desired", store_wire::to_bin(desired)}};
  req["expected"] = expected ? store_wire::to_bin(*expected) : nlohmann::json(nullptr);
  auto r = call(std::move(req), timeout_);
  if (!r.value("found", false)) return std::nullopt;
  return store_wire::get_bytes(r, "value");
}

size_t StoreClient::erase_prefix(const std::string& prefix) {
  auto r = call({{"op", "erase_prefix"}, {"prefix", prefix}}, timeout_);
  return static_cast<size_t>(proto::get_int(r, "count"));
}

void StoreClient::wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) {
  EEP_CHECK(timeout.count() >= 0, ErrorCode::kInvalidArgument, "store wait: negative timeout");
  call({{"op", "wait"}, {"keys", keys}, {"timeout_ms", timeout.count()}}, timeout + kReplyGrace);
}

}  // namespace eep
