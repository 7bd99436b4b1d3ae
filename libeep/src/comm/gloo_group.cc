// GlooGroup: eep::Group over Gloo's TCP transport, rendezvous through the coordinator's store.
//
// Threading: collectives must be called from one thread per group, in the same order on every
// rank (their Gloo tags come from a per-group counter that advances identically everywhere).
// send/recv use a separate slot space keyed by the caller's tag, so a weight-transfer thread can
// run them alongside the collectives.
#include <atomic>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/alltoall.h>
#include <gloo/alltoallv.h>
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

// Slot prefix for point-to-point transfers; Gloo's own collectives use 0x01..0x08.
constexpr uint8_t kP2PSlotPrefix = 0x40;

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
    guard("allgather", [&] {
      gloo::AllgatherOptions o(ctx_);
      o.setInput(const_cast<int64_t*>(in), count);  // Gloo only reads the input
      o.setOutput(out, count * opts_.size);
      o.setTag(next_tag());
      o.setTimeout(opts_.timeout);
      gloo::allgather(o);
    });
  }

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
    // Gloo creates buffers even for empty sides; give it a valid address to point at.
    static char empty_buffer[1];
    void* in_ptr = in ? const_cast<void*>(in) : empty_buffer;
    void* out_ptr = out ? out : empty_buffer;
    guard("alltoallv", [&] {
      gloo::AlltoallvOptions o(ctx_);
      o.setInput(static_cast<uint8_t*>(in_ptr), send_bytes);
      o.setOutput(static_cast<uint8_t*>(out_ptr), recv_bytes);
      o.setTag(next_tag());
      o.setTimeout(opts_.timeout);
      gloo::alltoallv(o);
    });
  }

  void alltoall_counts(const int64_t* in, int64_t* out) override {
    if (opts_.size == 1) {
      out[0] = in[0];
      return;
    }
    guard("alltoall_counts", [&] {
      gloo::AlltoallOptions o(ctx_);
      o.setInput(const_cast<int64_t*>(in), static_cast<size_t>(opts_.size));
      o.setOutput(out, static_cast<size_t>(opts_.size));
      o.setTag(next_tag());
      o.setTimeout(opts_.timeout);
      gloo::alltoall(o);
    });
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

  void allreduce(int64_t* data, size_t count, const char* op, ReduceFn fn) {
    if (opts_.size == 1 || count == 0) return;
    guard(op, [&] {
      gloo::AllreduceOptions o(ctx_);
      o.setOutput(data, count);  // in place: the output doubles as input
      o.setReduceFunction(fn);
      o.setTag(next_tag());
      o.setTimeout(opts_.timeout);
      gloo::allreduce(o);
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
