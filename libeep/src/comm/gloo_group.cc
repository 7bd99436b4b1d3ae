// GlooGroup: eep::Group over Gloo's TCP transport, rendezvous through the coordinator's store.
//
// Threading: collectives must be called from one thread per group, in the same order on every
// rank (their Gloo tags come from a per-group counter that advances identically everywhere).
// send/recv use a separate slot space keyed by the caller's tag, so a weight-transfer thread can
// run them alongside the collectives. The per-step collectives are eep's own exchanges on
// unbound buffers (PendingExchange says why); abort_handle() is the one call another thread may
// make.
#include <atomic>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/common/logging.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/unbound_buffer.h>
#include <gloo/types.h>

#include "comm/gloo_store.h"
#include "eep/comm.h"
#include "eep/common.h"
#include "eep/store.h"

namespace eep {

namespace {

// Slot prefixes: point-to-point transfers, and eep's own collectives (below); Gloo's own
// collectives use 0x01..0x08.
constexpr uint8_t kP2PSlotPrefix = 0x40;
constexpr uint8_t kExchangeSlotPrefix = 0x41;

// The unbound buffers of the exchange in flight, so that another thread can end its waits.
// Why eep posts the per-step collectives itself instead of calling gloo::alltoallv and
// gloo::allreduce: when a peer is killed, a member may wait for a send that Gloo's TCP transport
// never fails (seen in 2 of ~100 kills: the survivor sat out the whole collective timeout, 30 s,
// while the coordinator had re-formed the group at once). Gloo's collectives keep their buffers
// inside; here they are registered, and abort() ends their waits (abortWaitSend/Recv).
class PendingExchange final : public GroupAbort {
 public:
  void abort(const std::string& why) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (aborted_) return;
    aborted_ = true;
    why_ = why;
    for (auto* b : sends_) b->abortWaitSend();
    for (auto* b : recvs_) b->abortWaitRecv();
  }
  // Registers the buffers of one exchange; throws Error(kAborted) if the group was aborted.
  void arm(const std::vector<std::unique_ptr<gloo::transport::UnboundBuffer>>& sends,
           const std::vector<std::unique_ptr<gloo::transport::UnboundBuffer>>& recvs) {
    std::lock_guard<std::mutex> lock(mu_);
    if (aborted_) throw Error(ErrorCode::kAborted, "aborted: " + why_);
    for (const auto& b : sends) sends_.push_back(b.get());
    for (const auto& b : recvs) recvs_.push_back(b.get());
  }
  // Before the buffers go: abort() must not reach them afterwards.
  void disarm() {
    std::lock_guard<std::mutex> lock(mu_);
    sends_.clear();
    recvs_.clear();
  }
  std::string why() {
    std::lock_guard<std::mutex> lock(mu_);
    return why_;
  }

 private:
  std::mutex mu_;
  bool aborted_ = false;
  std::string why_;
  std::vector<gloo::transport::UnboundBuffer*> sends_, recvs_;
};

// One message of an exchange: `bytes` at `data` to or from `peer`.
struct Piece {
  void* data;
  size_t bytes;
  int peer;
};

// Gloo reports timeouts as IoException with this text; we keep them apart from dead peers.
bool is_timeout_message(const std::string& what) {
  return what.find("Timed out") != std::string::npos || what.find("timed out") != std::string::npos;
}

class GlooGroup final : public Group {
 public:
  GlooGroup(StoreClient& store, const GlooGroupOptions& opts) : opts_(opts) {
    if (opts_.size == 1) return;  // size-1 groups never touch Gloo or the store
    comm::GlooStoreAdapter adapter(store, opts_.timeout);
    try {
      join(adapter);
    } catch (...) {
      // A failed join leaves no stale address behind for a retry under the same name to read.
      erase_keys(store, adapter);
      throw;
    }
    erase_keys(store, adapter);
    logger("comm")->debug("group {}: rank {} of {} connected", opts_.name, opts_.rank, opts_.size);
  }

  void join(comm::GlooStoreAdapter& adapter) {
    guard("join", [&] {
      gloo::transport::tcp::attr attr;
      attr.hostname = opts_.host;
      device_ = gloo::transport::tcp::CreateDevice(attr);
      gloo::rendezvous::PrefixStore prefixed(opts_.name, adapter);
      auto ctx = std::make_shared<gloo::rendezvous::Context>(opts_.rank, opts_.size);
      ctx->setTimeout(opts_.timeout);
      ctx->connectFullMesh(prefixed, device_);
      ctx_ = ctx;
      // Every member has read every address once the barrier passes, so the rendezvous keys
      // can go (below): the store must not grow with each membership change.
      gloo::BarrierOptions b(ctx_);
      b.setTag(next_tag());
      b.setTimeout(opts_.timeout);
      gloo::barrier(b);
    });
  }

  // Each rank deletes exactly the keys it wrote. Not a prefix: group names nest ("eep/g3" and
  // "eep/g3/xfer" may form at the same time) and a prefix delete would take the other's keys.
  void erase_keys(StoreClient& store, const comm::GlooStoreAdapter& adapter) {
    for (const auto& key : adapter.keys_set()) {
      try {
        store.erase(key);
      } catch (const Error& e) {
        logger("comm")->warn("group {}: could not delete rendezvous key {}: {}", opts_.name, key, e.what());
      }
    }
  }

  ~GlooGroup() override {
    // Context before device: the pairs are registered with the device's event loop.
    ctx_.reset();
    device_.reset();
  }

  int rank() const override { return opts_.rank; }
  int size() const override { return opts_.size; }
  const std::string& name() const override { return opts_.name; }

  void allreduce_sum(int64_t* data, size_t count) override {
    allreduce(data, count, "allreduce_sum", &gloo::sum<int64_t>);
  }
  void allreduce_max(int64_t* data, size_t count) override {
    allreduce(data, count, "allreduce_max", &gloo::max<int64_t>);
  }
  void allreduce_min(int64_t* data, size_t count) override {
    allreduce(data, count, "allreduce_min", &gloo::min<int64_t>);
  }

  void allgather(const int64_t* in, int64_t* out, size_t count) override {
    if (count == 0) return;
    if (opts_.size == 1) {
      std::memmove(out, in, count * sizeof(int64_t));
      return;
    }
    allgather_as("allgather", in, out, count);
  }

  std::shared_ptr<GroupAbort> abort_handle() override { return pending_; }

  void alltoallv(const void* in, const std::vector<int64_t>& send_bytes, void* out,
                 const std::vector<int64_t>& recv_bytes) override {
    check_counts(send_bytes, "send_bytes");
    check_counts(recv_bytes, "recv_bytes");
    EEP_CHECK(send_bytes[opts_.rank] == recv_bytes[opts_.rank], ErrorCode::kInvalidArgument,
              "group " + opts_.name + ": alltoallv sends " + std::to_string(send_bytes[opts_.rank]) +
                  " bytes to itself but expects " + std::to_string(recv_bytes[opts_.rank]));
    if (opts_.size == 1) {
      if (send_bytes[0] > 0) std::memmove(out, in, static_cast<size_t>(send_bytes[0]));
      return;
    }
    // Packed in rank order on both sides; empty messages are skipped on both sides (the
    // counts were exchanged first, so the peer's recv_bytes is this rank's send_bytes).
    const char* src = static_cast<const char*>(in);
    char* dst = static_cast<char*>(out);
    std::vector<Piece> sends, recvs;
    size_t send_at = 0, recv_at = 0;
    for (int p = 0; p < opts_.size; ++p) {
      const auto sb = static_cast<size_t>(send_bytes[p]), rb = static_cast<size_t>(recv_bytes[p]);
      if (p == opts_.rank) {
        if (sb > 0) std::memmove(dst + recv_at, src + send_at, sb);
      } else {
        if (sb > 0) sends.push_back({const_cast<char*>(src) + send_at, sb, p});  // only read
        if (rb > 0) recvs.push_back({dst + recv_at, rb, p});
      }
      send_at += sb;
      recv_at += rb;
    }
    exchange("alltoallv", sends, recvs);
  }

  void alltoall_counts(const int64_t* in, int64_t* out) override {
    out[opts_.rank] = in[opts_.rank];
    if (opts_.size == 1) return;
    std::vector<Piece> sends, recvs;
    for (int p = 0; p < opts_.size; ++p) {
      if (p == opts_.rank) continue;
      sends.push_back({const_cast<int64_t*>(in + p), sizeof(int64_t), p});  // only read
      recvs.push_back({out + p, sizeof(int64_t), p});
    }
    exchange("alltoall_counts", sends, recvs);
  }

  void send(const void* data, size_t bytes, int peer, uint32_t tag) override {
    check_peer(peer, "send");
    if (bytes == 0) return;  // both sides agree on the size, so both skip
    guard("send", [&] {
      auto buf = ctx_->createUnboundBuffer(const_cast<void*>(data), bytes);
      buf->send(peer, gloo::Slot::build(kP2PSlotPrefix, tag));
      if (!buf->waitSend(opts_.timeout)) throw Error(ErrorCode::kAborted, "send aborted");
    });
  }

  void recv(void* data, size_t bytes, int peer, uint32_t tag) override {
    check_peer(peer, "recv");
    if (bytes == 0) return;
    guard("recv", [&] {
      auto buf = ctx_->createUnboundBuffer(data, bytes);
      buf->recv(peer, gloo::Slot::build(kP2PSlotPrefix, tag));
      if (!buf->waitRecv(opts_.timeout)) throw Error(ErrorCode::kAborted, "recv aborted");
    });
  }

  void broadcast(void* data, size_t bytes, int root) override {
    EEP_CHECK(root >= 0 && root < opts_.size, ErrorCode::kInvalidArgument,
              "group " + opts_.name + ": broadcast root " + std::to_string(root) + " out of range");
    if (opts_.size == 1 || bytes == 0) return;
    guard("broadcast", [&] {
      gloo::BroadcastOptions o(ctx_);
      o.setOutput(static_cast<uint8_t*>(data), bytes);  // in place on every rank
      o.setRoot(root);
      o.setTag(next_tag());
      o.setTimeout(opts_.timeout);
      gloo::broadcast(o);
    });
  }

  void barrier() override {
    if (opts_.size == 1) return;
    guard("barrier", [&] {
      gloo::BarrierOptions o(ctx_);
      o.setTag(next_tag());
      o.setTimeout(opts_.timeout);
      gloo::barrier(o);
    });
  }

 private:
  using ReduceFn = void (*)(void*, const void*, const void*, size_t);

  // Every member's values to every other (these are a step's few flags and counts, not bulk
  // data), then the same reduction in rank order everywhere.
  void allreduce(int64_t* data, size_t count, const char* op, ReduceFn fn) {
    if (opts_.size == 1 || count == 0) return;
    std::vector<int64_t> all(count * opts_.size);
    allgather_as(op, data, all.data(), count);
    std::memcpy(data, all.data(), count * sizeof(int64_t));
    for (int p = 1; p < opts_.size; ++p) fn(data, data, all.data() + p * count, count);
  }

  void allgather_as(const char* op, const int64_t* in, int64_t* out, size_t count) {
    std::memmove(out + opts_.rank * count, in, count * sizeof(int64_t));
    std::vector<Piece> sends, recvs;
    for (int p = 0; p < opts_.size; ++p) {
      if (p == opts_.rank) continue;
      sends.push_back({const_cast<int64_t*>(in), count * sizeof(int64_t), p});  // only read
      recvs.push_back({out + p * count, count * sizeof(int64_t), p});
    }
    exchange(op, sends, recvs);
  }

  // Posts every receive and send of one collective on its own buffers under the next tag
  // (every member calls the collectives in the same order, so the tags match), then waits for
  // them, each with the group's timeout; abort_handle() can end the waits from another thread.
  void exchange(const char* op, const std::vector<Piece>& sends, const std::vector<Piece>& recvs) {
    guard(op, [&] {
      const uint64_t slot = gloo::Slot::build(kExchangeSlotPrefix, next_tag());
      std::vector<std::unique_ptr<gloo::transport::UnboundBuffer>> sbufs, rbufs;
      for (const Piece& r : recvs) rbufs.push_back(ctx_->createUnboundBuffer(r.data, r.bytes));
      for (const Piece& s : sends) sbufs.push_back(ctx_->createUnboundBuffer(s.data, s.bytes));
      pending_->arm(sbufs, rbufs);
      struct Disarm {
        PendingExchange& p;
        ~Disarm() { p.disarm(); }
      } disarm{*pending_};
      for (size_t i = 0; i < recvs.size(); ++i) rbufs[i]->recv(recvs[i].peer, slot);
      for (size_t i = 0; i < sends.size(); ++i) sbufs[i]->send(sends[i].peer, slot);
      for (auto& b : sbufs)
        if (!b->waitSend(opts_.timeout)) throw Error(ErrorCode::kAborted, "aborted: " + pending_->why());
      for (auto& b : rbufs)
        if (!b->waitRecv(opts_.timeout)) throw Error(ErrorCode::kAborted, "aborted: " + pending_->why());
    });
  }

  uint32_t next_tag() { return tag_++; }

  void check_counts(const std::vector<int64_t>& counts, const char* what) const {
    EEP_CHECK(counts.size() == static_cast<size_t>(opts_.size), ErrorCode::kInvalidArgument,
              "group " + opts_.name + ": " + what + " has " + std::to_string(counts.size()) +
                  " entries for " + std::to_string(opts_.size) + " ranks");
    for (auto c : counts)
      EEP_CHECK(c >= 0, ErrorCode::kInvalidArgument, "group " + opts_.name + ": negative " + what);
  }

  void check_peer(int peer, const char* op) const {
    EEP_CHECK(peer >= 0 && peer < opts_.size && peer != opts_.rank, ErrorCode::kInvalidArgument,
              "group " + opts_.name + ": " + op + " to invalid peer " + std::to_string(peer));
  }

  // Runs one Gloo operation, turning every Gloo failure into eep::Error. After a failure the
  // pairs are in an unknown state (half-sent messages), so the group refuses further work:
  // the caller must form a new group.
  template <typename F>
  void guard(const char* op, F&& f) {
    if (broken_) {
      throw Error(ErrorCode::kUnavailable,
                  "group " + opts_.name + ": " + op + " after an earlier failure: " + broken_reason_);
    }
    ErrorCode code = ErrorCode::kUnavailable;
    std::string what;
    try {
      f();
      return;
    } catch (const Error& e) {
      code = e.code();
      what = e.what();
    } catch (const gloo::IoException& e) {
      what = e.what();
      if (is_timeout_message(what)) code = ErrorCode::kTimeout;
    } catch (const gloo::EnforceNotMet& e) {
      what = e.what();
    } catch (const gloo::Exception& e) {
      what = e.what();
    } catch (const std::exception& e) {
      what = e.what();
    }
    broken_reason_ = what;
    broken_ = true;
    throw Error(code, "group " + opts_.name + ": " + op + ": " + what);
  }

  GlooGroupOptions opts_;
  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::Context> ctx_;
  std::shared_ptr<PendingExchange> pending_ = std::make_shared<PendingExchange>();
  uint32_t tag_ = 0;
  std::atomic<bool> broken_{false};
  std::string broken_reason_;
};

}  // namespace

std::unique_ptr<Group> make_gloo_group(StoreClient& store, const GlooGroupOptions& opts) {
  EEP_CHECK(!opts.name.empty(), ErrorCode::kInvalidArgument, "gloo group: empty name");
  EEP_CHECK(opts.size >= 1, ErrorCode::kInvalidArgument,
            "gloo group " + opts.name + ": size " + std::to_string(opts.size));
  EEP_CHECK(opts.rank >= 0 && opts.rank < opts.size, ErrorCode::kInvalidArgument,
            "gloo group " + opts.name + ": rank " + std::to_string(opts.rank) + " out of range");
  EEP_CHECK(opts.timeout.count() > 0, ErrorCode::kInvalidArgument,
            "gloo group " + opts.name + ": timeout must be positive");
  return std::make_unique<GlooGroup>(store, opts);
}

}  // namespace eep
