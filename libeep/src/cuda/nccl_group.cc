// NcclGroup: eep::Group over one NCCL communicator (design.md §2, §6; docs/cuda.md, "NCCL groups").
//
// Rendezvous: rank 0 makes the ncclUniqueId and sets it (hex) under "<name>/nccl_unique_id" in
// the coordinator's store; the others wait for the key. Every member then calls
// ncclCommInitRankConfig non-blocking (config.blocking = 0) and polls ncclCommGetAsyncError
// against one deadline (opts.timeout, the store wait included). Rank 0 deletes the key once the
// communicator is up (all members have read it by then) or the join failed.
//
// Every call waits for its own completion: after enqueueing on the group's stream it polls
// ncclCommGetAsyncError (enqueue done / asynchronous error) and cudaStreamQuery (done) until the
// deadline. A timeout or an error aborts the communicator (ncclCommAbort: no kernel stays stuck
// waiting for a dead peer) and marks the group broken: every later call throws kUnavailable, and
// the caller makes a new group (through the store, under a new name).
//
// Threading: one thread per group at a time (calls are serialised by a mutex), and every member
// issues the same calls in the same order: NCCL matches collectives by order, and send/recv
// between a pair by order too (the tag is not used). A weight-transfer thread that runs beside
// the step's collectives needs a group of its own (split_nccl_group or another make_nccl_group).
//
// NVLink SHARP (NVLS) is never configured here; on shared multi-GPU hosts callers keep
// NCCL_NVLS_ENABLE=0 in the environment (docs/cuda.md).
#include "cuda/nccl_group.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <cuda_runtime.h>
#include <nccl.h>

#include "eep/comm.h"
#include "eep/common.h"
#include "eep/store.h"

namespace eep {

namespace {

using Deadline = Clock::time_point;

std::string to_hex(const void* data, size_t n) {
  static const char digits[] = "0123456789abcdef";
  const auto* p = static_cast<const unsigned char*>(data);
  std::string s(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    s[2 * i] = digits[p[i] >> 4];
    s[2 * i + 1] = digits[p[i] & 15];
  }
  return s;
}

bool from_hex(const std::string& s, void* out, size_t n) {
  if (s.size() != 2 * n) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  auto* p = static_cast<unsigned char*>(out);
  for (size_t i = 0; i < n; ++i) {
    int hi = nibble(s[2 * i]), lo = nibble(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    p[i] = static_cast<unsigned char>(hi << 4 | lo);
  }
  return true;
}

bool in_progress_or_ok(ncclResult_t r) { return r == ncclSuccess || r == ncclInProgress; }

// NCCL's text for r plus its last error message for comm, when it has one.
std::string nccl_text(ncclResult_t r, ncclComm_t comm) {
  std::string s = ncclGetErrorString(r);
  const char* last = comm ? ncclGetLastError(comm) : nullptr;
  if (last && *last) s += std::string(" (") + last + ")";
  return s;
}

// Short waits spin (an all-to-all per MoE layer should not pay a sleep); long ones back off.
void backoff(int& spins) {
  if (++spins < 2000) {
    std::this_thread::yield();
  } else {
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

long long ms_of(std::chrono::milliseconds d) { return static_cast<long long>(d.count()); }

// Makes `device` current for one call and restores the caller's device afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) : device_(device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    if (previous_ != device_) {
      cudaError_t e = cudaSetDevice(device_);
      if (e != cudaSuccess)
        throw Error(ErrorCode::kUnavailable, "cudaSetDevice(" + std::to_string(device_) +
                                                 "): " + cudaGetErrorString(e));
    }
  }
  ~DeviceGuard() {
    if (previous_ >= 0 && previous_ != device_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int device_;
  int previous_ = -1;
};

ncclConfig_t nonblocking_config(const std::string& name) {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  config.commName = name.c_str();  // NCCL copies it; shows in NCCL_DEBUG output
  return config;
}

void warn_if_nvls_unset(int size) {
  static std::once_flag once;
  if (size < 2 || std::getenv("NCCL_NVLS_ENABLE")) return;
  std::call_once(once, [] {
    logger("comm")->info(
        "NCCL_NVLS_ENABLE is not set; on shared multi-GPU hosts set NCCL_NVLS_ENABLE=0 "
        "(NVLink multicast can take the host's GPUs out of service)");
  });
}

class NcclGroup final : public Group {
 public:
  // Joins through the store (make_nccl_group).
  NcclGroup(StoreClient& store, const NcclGroupOptions& opts) : opts_(opts) {
    validate_options();
    DeviceGuard dg(opts_.device);
    const Deadline deadline = Clock::now() + opts_.timeout;
    warn_if_nvls_unset(opts_.size);
    ncclUniqueId id = exchange_id(store, deadline);
    try {
      ncclConfig_t config = nonblocking_config(opts_.name);
      ncclComm_t comm = nullptr;
      ncclResult_t r = ncclCommInitRankConfig(&comm, opts_.size, id, opts_.rank, &config);
      comm_ = comm;  // valid to poll and abort even while its init is in progress
      if (!in_progress_or_ok(r)) fail("ncclCommInitRankConfig", r);
      if (!comm_) fail("ncclCommInitRankConfig", ncclInternalError);
      wait_ready(comm_, "ncclCommInitRankConfig", deadline);
      make_resources();
    } catch (...) {
      erase_id(store);
      release();
      throw;
    }
    erase_id(store);
    logger("comm")->debug("nccl group {}: rank {} of {} on device {} ready", opts_.name,
                          opts_.rank, opts_.size, opts_.device);
  }

  // Wraps a communicator that is already initialised (split/shrink).
  NcclGroup(const NcclGroupOptions& opts, ncclComm_t comm) : opts_(opts), comm_(comm) {
    DeviceGuard dg(opts_.device);
    try {
      make_resources();
    } catch (...) {
      release();
      throw;
    }
  }

  ~NcclGroup() override {
    try {
      DeviceGuard dg(opts_.device);
      destroy_comm();
    } catch (const std::exception& e) {
      logger("comm")->warn("nccl group {}: rank {}: {}", opts_.name, opts_.rank, e.what());
    }
    release();
  }

  NcclGroup(const NcclGroup&) = delete;
  NcclGroup& operator=(const NcclGroup&) = delete;

  int rank() const override { return opts_.rank; }
  int size() const override { return opts_.size; }
  const std::string& name() const override { return opts_.name; }
  bool device_buffers() const override { return true; }

  // --- control calls: host pointers, staged through device memory -------------------------

  void allreduce_sum(int64_t* data, size_t count) override { allreduce(data, count, ncclSum, "allreduce_sum"); }
  void allreduce_max(int64_t* data, size_t count) override { allreduce(data, count, ncclMax, "allreduce_max"); }
  void allreduce_min(int64_t* data, size_t count) override { allreduce(data, count, ncclMin, "allreduce_min"); }

  void allgather(const int64_t* in, int64_t* out, size_t count) override {
    if (count == 0) return;
    Call c(*this, "allgather");
    const size_t total = count * static_cast<size_t>(opts_.size);
    ensure_staging(total);
    // In place: this rank's block already sits at its offset of the output.
    const size_t mine = count * static_cast<size_t>(opts_.rank);
    std::memcpy(host_ + mine, in, count * sizeof(int64_t));
    cuda(cudaMemcpyAsync(dev_ + mine, host_ + mine, count * sizeof(int64_t),
                         cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync");
    nccl(ncclAllGather(dev_ + mine, dev_, count, ncclInt64, comm_, stream_), "ncclAllGather");
    cuda(cudaMemcpyAsync(host_, dev_, total * sizeof(int64_t), cudaMemcpyDeviceToHost, stream_),
         "cudaMemcpyAsync");
    wait_complete(c.deadline);
    std::memcpy(out, host_, total * sizeof(int64_t));
  }

  void alltoall_counts(const int64_t* in, int64_t* out) override {
    Call c(*this, "alltoall_counts");
    const size_t n = static_cast<size_t>(opts_.size);
    ensure_staging(2 * n);
    std::memcpy(host_, in, n * sizeof(int64_t));
    cuda(cudaMemcpyAsync(dev_, host_, n * sizeof(int64_t), cudaMemcpyHostToDevice, stream_),
         "cudaMemcpyAsync");
    if (opts_.size > 1) {
      GroupCalls g(*this);
      for (int p = 0; p < opts_.size; ++p) {
        if (p == opts_.rank) continue;
        g.add(ncclSend(dev_ + p, 1, ncclInt64, p, comm_, stream_));
        g.add(ncclRecv(dev_ + n + p, 1, ncclInt64, p, comm_, stream_));
      }
      g.end("alltoall_counts");
    }
    cuda(cudaMemcpyAsync(host_ + n, dev_ + n, n * sizeof(int64_t), cudaMemcpyDeviceToHost, stream_),
         "cudaMemcpyAsync");
    wait_complete(c.deadline);
    host_[n + opts_.rank] = in[opts_.rank];
    std::memcpy(out, host_ + n, n * sizeof(int64_t));
  }

  void barrier() override {
    Call c(*this, "barrier");
    ensure_staging(1);
    nccl(ncclAllReduce(dev_, dev_, 1, ncclInt64, ncclSum, comm_, stream_), "ncclAllReduce");
    wait_complete(c.deadline);
  }

  // The calls a serving step makes, once each: the reduction (barrier), small point-to-point
  // messages (alltoall_counts) and bulk ones (alltoallv; NCCL changes protocol above a few KiB).
  void warm_up() override {
    if (opts_.size == 1) return;
    barrier();
    const size_t n = static_cast<size_t>(opts_.size);
    std::vector<int64_t> counts(n, 1), got(n);
    alltoall_counts(counts.data(), got.data());
    constexpr int64_t kBulk = int64_t{1} << 20;
    char* buf = nullptr;
    cuda(cudaMalloc(reinterpret_cast<void**>(&buf), 2 * n * kBulk), "cudaMalloc (warm-up)");
    std::vector<int64_t> bytes(n, kBulk);
    try {
      alltoallv(buf, bytes, buf + n * kBulk, bytes);
    } catch (...) {
      cudaFree(buf);
      throw;
    }
    cudaFree(buf);
    barrier();
  }

  // --- data calls: device pointers ---------------------------------------------------------

  void alltoallv(const void* in, const std::vector<int64_t>& send_bytes, void* out,
                 const std::vector<int64_t>& recv_bytes) override {
    check_counts(send_bytes, "send_bytes");
    check_counts(recv_bytes, "recv_bytes");
    const int me = opts_.rank;
    EEP_CHECK(send_bytes[me] == recv_bytes[me], ErrorCode::kInvalidArgument,
              where() + ": alltoallv sends " + std::to_string(send_bytes[me]) +
                  " bytes to itself but expects " + std::to_string(recv_bytes[me]));
    int64_t total_send = 0, total_recv = 0;
    for (int p = 0; p < opts_.size; ++p) {
      total_send += send_bytes[p];
      total_recv += recv_bytes[p];
    }
    Call c(*this, "alltoallv");
    if (total_send > 0) check_device_pointer(in, "alltoallv input");
    if (total_recv > 0) check_device_pointer(out, "alltoallv output");
    const auto* src = static_cast<const char*>(in);
    auto* dst = static_cast<char*>(out);
    int64_t soff = 0, roff = 0, self_soff = 0, self_roff = 0;
    for (int p = 0; p < me; ++p) {
      self_soff += send_bytes[p];
      self_roff += recv_bytes[p];
    }
    if (send_bytes[me] > 0)
      cuda(cudaMemcpyAsync(dst + self_roff, src + self_soff, static_cast<size_t>(send_bytes[me]),
                           cudaMemcpyDeviceToDevice, stream_), "cudaMemcpyAsync (self)");
    if (total_send - send_bytes[me] > 0 || total_recv - recv_bytes[me] > 0) {
      GroupCalls g(*this);
      for (int p = 0; p < opts_.size; ++p) {
        if (p != me && send_bytes[p] > 0)
          g.add(ncclSend(src + soff, static_cast<size_t>(send_bytes[p]), ncclUint8, p, comm_, stream_));
        if (p != me && recv_bytes[p] > 0)
          g.add(ncclRecv(dst + roff, static_cast<size_t>(recv_bytes[p]), ncclUint8, p, comm_, stream_));
        soff += send_bytes[p];
        roff += recv_bytes[p];
      }
      g.end("alltoallv");
    }
    wait_complete(c.deadline);
  }

  // NCCL has no tags: messages between one pair match in the order they were issued, so both
  // sides must issue their sends and recvs in the same order (see the header comment).
  void send(const void* data, size_t bytes, int peer, uint32_t /*tag*/) override {
    check_peer(peer, "send");
    if (bytes == 0) return;
    Call c(*this, "send");
    check_device_pointer(data, "send buffer");
    nccl(ncclSend(data, bytes, ncclUint8, peer, comm_, stream_), "ncclSend");
    wait_complete(c.deadline);
  }

  void recv(void* data, size_t bytes, int peer, uint32_t /*tag*/) override {
    check_peer(peer, "recv");
    if (bytes == 0) return;
    Call c(*this, "recv");
    check_device_pointer(data, "recv buffer");
    nccl(ncclRecv(data, bytes, ncclUint8, peer, comm_, stream_), "ncclRecv");
    wait_complete(c.deadline);
  }

  // One ncclGroupStart/End over every operation: NCCL then spreads them over its channels and
  // pipelines them, where one call per message waits on the host each time (weights: 252 KiB
  // messages reached 2.7 GB/s that way on two H200s, against ~300 GB/s for one large message).
  // The async form runs on the caller's stream (the CUDA backend's MoE exchange), so the
  // kernels before and after it are ordered on the device with no host wait in between.
  void send_recv_batch(const std::vector<P2POp>& ops) override {
    Call c(*this, "send_recv_batch");
    enqueue_batch(ops, stream_);
    wait_complete(c.deadline);
  }

  // The stream-ordered form runs once per MoE layer: it skips the per-buffer pointer query
  // (cudaPointerGetAttributes, ~1 us each) of the blocking form; its caller, the CUDA backend,
  // passes its own device arrays.
  void send_recv_batch_async(const std::vector<P2POp>& ops, void* stream) override {
    Call c(*this, "send_recv_batch_async");
    enqueue_batch(ops, static_cast<cudaStream_t>(stream), /*check_pointers=*/false);
  }

  void wait_stream(void* stream) override {
    Call c(*this, "wait_stream");
    wait_complete(c.deadline, static_cast<cudaStream_t>(stream));
  }

  void broadcast(void* data, size_t bytes, int root) override {
    EEP_CHECK(root >= 0 && root < opts_.size, ErrorCode::kInvalidArgument,
              where() + ": broadcast root " + std::to_string(root) + " out of range");
    if (bytes == 0) return;
    Call c(*this, "broadcast");
    check_device_pointer(data, "broadcast buffer");
    nccl(ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, stream_), "ncclBroadcast");
    wait_complete(c.deadline);
  }

  // --- derived communicators (nccl_group.h) -------------------------------------------------

  std::unique_ptr<Group> shrink(const std::vector<int>& exclude, const std::string& new_name) {
    std::vector<int> ex = exclude;
    std::sort(ex.begin(), ex.end());
    ex.erase(std::unique(ex.begin(), ex.end()), ex.end());
    for (int r : ex)
      EEP_CHECK(r >= 0 && r < opts_.size, ErrorCode::kInvalidArgument,
                where() + ": shrink excludes rank " + std::to_string(r) + ", out of range");
    EEP_CHECK(!std::binary_search(ex.begin(), ex.end(), opts_.rank), ErrorCode::kInvalidArgument,
              where() + ": an excluded rank must not call shrink_nccl_group");
    EEP_CHECK(static_cast<int>(ex.size()) < opts_.size, ErrorCode::kInvalidArgument,
              where() + ": shrink would exclude every rank");
    // NCCL refuses an empty exclude list; excluding nobody is a split into one color.
    if (ex.empty()) return split(0, opts_.rank, new_name);
    Call c(*this, "ncclCommShrink");
    ncclConfig_t config = nonblocking_config(new_name);
    auto* child = new ncclComm_t(nullptr);
    ncclResult_t r = ncclCommShrink(comm_, ex.data(), static_cast<int>(ex.size()), child, &config,
                                    NCCL_SHRINK_DEFAULT);
    return finish_child(r, child, true, new_name, "ncclCommShrink", c.deadline);
  }

  std::unique_ptr<Group> split(int color, int key, const std::string& new_name) {
    Call c(*this, "ncclCommSplit");
    ncclConfig_t config = nonblocking_config(new_name);
    auto* child = new ncclComm_t(nullptr);
    ncclResult_t r = ncclCommSplit(comm_, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, child, &config);
    return finish_child(r, child, color >= 0, new_name, "ncclCommSplit", c.deadline);
  }

 private:
  // The operations of a batch on `stream` (inside a Call). Operations with this rank as the
  // peer are copies on the stream: the k-th send to itself lands in the k-th receive from
  // itself, as NCCL matches a pair's messages.
  void enqueue_batch(const std::vector<P2POp>& ops, cudaStream_t stream,
                     bool check_pointers = true) {
    std::vector<const P2POp*> self_send, self_recv;
    bool remote = false;
    for (const P2POp& op : ops) {
      EEP_CHECK(op.peer >= 0 && op.peer < opts_.size, ErrorCode::kInvalidArgument,
                where() + ": send_recv_batch with peer " + std::to_string(op.peer) +
                    " (out of range)");
      if (op.bytes == 0) continue;
      if (check_pointers)
        check_device_pointer(op.data, op.kind == P2POp::Kind::kSend ? "send buffer" : "recv buffer");
      if (op.peer != opts_.rank)
        remote = true;
      else
        (op.kind == P2POp::Kind::kSend ? self_send : self_recv).push_back(&op);
    }
    EEP_CHECK(self_send.size() == self_recv.size(), ErrorCode::kInvalidArgument,
              where() + ": send_recv_batch sends " + std::to_string(self_send.size()) +
                  " message(s) to itself but receives " + std::to_string(self_recv.size()));
    for (size_t i = 0; i < self_send.size(); ++i)
      EEP_CHECK(self_send[i]->bytes == self_recv[i]->bytes, ErrorCode::kInvalidArgument,
                where() + ": send_recv_batch: message " + std::to_string(i) + " to itself has " +
                    std::to_string(self_send[i]->bytes) + " bytes, its receive " +
                    std::to_string(self_recv[i]->bytes));
    for (size_t i = 0; i < self_send.size(); ++i)
      cuda(cudaMemcpyAsync(self_recv[i]->data, self_send[i]->data, self_send[i]->bytes,
                           cudaMemcpyDeviceToDevice, stream), "cudaMemcpyAsync (self)");
    if (!remote) return;
    GroupCalls g(*this);
    for (const P2POp& op : ops) {
      if (op.bytes == 0 || op.peer == opts_.rank) continue;
      if (op.kind == P2POp::Kind::kSend)
        g.add(ncclSend(op.data, op.bytes, ncclUint8, op.peer, comm_, stream));
      else
        g.add(ncclRecv(op.data, op.bytes, ncclUint8, op.peer, comm_, stream));
    }
    g.end("send_recv_batch");
  }

  // One public call: serialises, makes the device current, refuses a broken group, and fixes
  // the deadline.
  struct Call {
    Call(NcclGroup& g, const char* what) : lock(g.mu_), device(g.opts_.device) {
      g.what_ = what;
      if (!g.comm_)
        throw Error(ErrorCode::kUnavailable,
                    g.where() + ": " + what + " on a broken group (an earlier call failed: " +
                        g.broken_reason_ + "); make a new group");
      deadline = Clock::now() + g.opts_.timeout;
      g.deadline_ = deadline;
    }
    std::lock_guard<std::mutex> lock;
    DeviceGuard device;
    Deadline deadline;
  };

  // Collects the results of the calls between ncclGroupStart and ncclGroupEnd, so that the
  // group is always closed before an error is raised.
  class GroupCalls {
   public:
    explicit GroupCalls(NcclGroup& g) : g_(g) { add(ncclGroupStart()); }
    void add(ncclResult_t r) {
      if (!in_progress_or_ok(r) && first_ == ncclSuccess) first_ = r;
    }
    void end(const char* what) {
      ncclResult_t r = ncclGroupEnd();
      add(r);
      if (first_ != ncclSuccess) g_.fail(what, first_);
      if (r == ncclInProgress) g_.wait_ready(g_.comm_, what, g_.deadline_);
    }

   private:
    NcclGroup& g_;
    ncclResult_t first_ = ncclSuccess;
  };

  std::string where() const {
    return "nccl group " + opts_.name + " rank " + std::to_string(opts_.rank) + "/" +
           std::to_string(opts_.size);
  }

  void validate_options() {
    EEP_CHECK(!opts_.name.empty(), ErrorCode::kInvalidArgument, "nccl group: empty name");
    EEP_CHECK(opts_.size >= 1 && opts_.rank >= 0 && opts_.rank < opts_.size,
              ErrorCode::kInvalidArgument,
              "nccl group " + opts_.name + ": rank " + std::to_string(opts_.rank) +
                  " out of range for size " + std::to_string(opts_.size));
    EEP_CHECK(opts_.timeout.count() > 0, ErrorCode::kInvalidArgument,
              where() + ": timeout must be positive");
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess)
      throw Error(ErrorCode::kUnavailable, where() + ": no usable CUDA device: " + cudaGetErrorString(e));
    EEP_CHECK(opts_.device >= 0 && opts_.device < count, ErrorCode::kInvalidArgument,
              where() + ": CUDA device " + std::to_string(opts_.device) + " out of range (" +
                  std::to_string(count) + " devices)");
  }

  std::string id_key() const { return opts_.name + "/nccl_unique_id"; }

  ncclUniqueId exchange_id(StoreClient& store, Deadline deadline) {
    ncclUniqueId id;
    if (opts_.rank == 0) {
      ncclResult_t r = ncclGetUniqueId(&id);
      if (r != ncclSuccess)
        throw Error(ErrorCode::kUnavailable, where() + ": ncclGetUniqueId: " + nccl_text(r, nullptr));
      if (opts_.size > 1) {  // a group of one needs nobody to read it
        published_ = true;
        store.set(id_key(), to_hex(&id, sizeof id));
      }
      return id;
    }
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    try {
      store.wait({id_key()}, std::max(left, std::chrono::milliseconds(1)));
    } catch (const Error& e) {
      throw Error(e.code(), where() + ": waiting " + std::to_string(ms_of(opts_.timeout)) +
                                " ms for rank 0's unique id (" + id_key() + "): " + e.what());
    }
    auto value = store.try_get(id_key());
    EEP_CHECK(value && from_hex(*value, &id, sizeof id), ErrorCode::kUnavailable,
              where() + ": bad or vanished unique id under " + id_key());
    return id;
  }

  void erase_id(StoreClient& store) {
    if (!published_) return;
    published_ = false;
    try {
      store.erase(id_key());
    } catch (const Error& e) {
      logger("comm")->warn("{}: could not delete {}: {}", where(), id_key(), e.what());
    }
  }

  void make_resources() {
    cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    ensure_staging(256);
  }

  // Grows the staging buffers (device and pinned host) to at least n int64.
  void ensure_staging(size_t n) {
    if (n <= staging_) return;
    n = std::max(n, 2 * staging_);
    if (dev_) cudaFree(dev_);
    if (host_) cudaFreeHost(host_);
    dev_ = nullptr;
    host_ = nullptr;
    staging_ = 0;
    cuda(cudaMalloc(reinterpret_cast<void**>(&dev_), n * sizeof(int64_t)), "cudaMalloc (staging)");
    cuda(cudaMallocHost(reinterpret_cast<void**>(&host_), n * sizeof(int64_t)), "cudaMallocHost (staging)");
    staging_ = n;
  }

  void allreduce(int64_t* data, size_t count, ncclRedOp_t op, const char* what) {
    if (count == 0) return;
    Call c(*this, what);
    ensure_staging(count);
    std::memcpy(host_, data, count * sizeof(int64_t));
    cuda(cudaMemcpyAsync(dev_, host_, count * sizeof(int64_t), cudaMemcpyHostToDevice, stream_),
         "cudaMemcpyAsync");
    nccl(ncclAllReduce(dev_, dev_, count, ncclInt64, op, comm_, stream_), "ncclAllReduce");
    cuda(cudaMemcpyAsync(host_, dev_, count * sizeof(int64_t), cudaMemcpyDeviceToHost, stream_),
         "cudaMemcpyAsync");
    wait_complete(c.deadline);
    std::memcpy(data, host_, count * sizeof(int64_t));
  }

  void check_counts(const std::vector<int64_t>& counts, const char* what) const {
    EEP_CHECK(counts.size() == static_cast<size_t>(opts_.size), ErrorCode::kInvalidArgument,
              where() + ": alltoallv " + what + " has " + std::to_string(counts.size()) +
                  " entries, expected " + std::to_string(opts_.size));
    for (auto c : counts)
      EEP_CHECK(c >= 0, ErrorCode::kInvalidArgument, where() + ": alltoallv " + what + " negative");
  }

  void check_peer(int peer, const char* what) const {
    EEP_CHECK(peer >= 0 && peer < opts_.size && peer != opts_.rank, ErrorCode::kInvalidArgument,
              where() + ": " + what + " with peer " + std::to_string(peer) +
                  " (must be another rank of the group)");
  }

  // NCCL reads and writes with the GPU: a pageable host pointer would fault the kernel. Pinned
  // host memory is device-accessible and allowed.
  void check_device_pointer(const void* p, const char* what) const {
    cudaPointerAttributes attr{};
    cudaError_t e = cudaPointerGetAttributes(&attr, p);
    if (e != cudaSuccess) {
      cudaGetLastError();  // not sticky; clear it
      attr.type = cudaMemoryTypeUnregistered;
    }
    EEP_CHECK(p && attr.type != cudaMemoryTypeUnregistered, ErrorCode::kInvalidArgument,
              where() + ": " + what + " is not device memory (NCCL groups take device pointers)");
  }

  void cuda(cudaError_t e, const char* what) {
    if (e == cudaSuccess) return;
    std::string msg = std::string(what) + ": " + cudaGetErrorString(e);
    broken(msg);
    throw Error(ErrorCode::kUnavailable, where() + ": " + what_ + ": " + msg);
  }

  // A non-blocking communicator may still be enqueueing when a call returns ncclInProgress;
  // stream work issued after it (the copies back) must wait until NCCL's kernels are queued.
  void nccl(ncclResult_t r, const char* what) {
    if (!in_progress_or_ok(r)) fail(what, r);
    if (r == ncclInProgress) wait_ready(comm_, what, deadline_);
  }

  [[noreturn]] void fail(const char* what, ncclResult_t r) {
    std::string msg = std::string(what) + ": " + nccl_text(r, comm_);
    broken(msg);
    throw Error(ErrorCode::kUnavailable, where() + ": " + msg + "; communicator aborted");
  }

  [[noreturn]] void timed_out(const char* what) {
    std::string msg = std::string(what) + " did not complete within " +
                      std::to_string(ms_of(opts_.timeout)) +
                      " ms (a member is gone, late, or in another call)";
    broken(msg);
    throw Error(ErrorCode::kTimeout, where() + ": " + msg + "; communicator aborted");
  }

  // Aborts the communicator: kernels waiting on peers exit, nothing hangs. The group stays
  // broken.
  void broken(const std::string& reason) {
    broken_reason_ = reason;
    if (comm_) {
      ncclCommAbort(comm_);
      comm_ = nullptr;
    }
  }

  // Polls comm's state until it is ready (init, split, shrink, finalize).
  void wait_ready(ncclComm_t comm, const char* what, Deadline deadline) {
    for (int spins = 0;; backoff(spins)) {
      ncclResult_t state = ncclInProgress;
      ncclResult_t r = ncclCommGetAsyncError(comm, &state);
      if (r != ncclSuccess) fail(what, r);
      if (state == ncclSuccess) return;
      if (state != ncclInProgress) fail(what, state);
      if (Clock::now() >= deadline) timed_out(what);
    }
  }

  // Waits until everything enqueued on the stream is done, watching for NCCL's asynchronous
  // errors (a peer failed) and the deadline.
  void wait_complete(Deadline deadline) { wait_complete(deadline, stream_); }
  void wait_complete(Deadline deadline, cudaStream_t stream) {
    for (int spins = 0;; backoff(spins)) {
      ncclResult_t state = ncclInProgress;
      ncclResult_t r = ncclCommGetAsyncError(comm_, &state);
      if (r != ncclSuccess) fail(what_, r);
      if (state != ncclSuccess && state != ncclInProgress) fail(what_, state);
      if (state == ncclSuccess) {  // enqueued; now watch the stream
        cudaError_t e = cudaStreamQuery(stream);
        if (e == cudaSuccess) return;
        if (e != cudaErrorNotReady) cuda(e, "cudaStreamQuery");
      }
      if (Clock::now() >= deadline) timed_out(what_);
    }
  }

  // Completes a split or shrink. NCCL runs it as an asynchronous job of the parent and writes
  // the new communicator into *slot only when the job is done, from its own thread: wait for
  // the parent to be ready and the slot to be filled. The slot is heap memory that a job still
  // running past the deadline may write into; it is leaked then, freed otherwise.
  std::unique_ptr<Group> finish_child(ncclResult_t r, ncclComm_t* slot, bool member,
                                      const std::string& new_name, const char* what,
                                      Deadline deadline) {
    ncclComm_t child = nullptr;
    try {
      if (!in_progress_or_ok(r)) fail(what, r);
      wait_ready(comm_, what, deadline);
      if (member) {
        for (int spins = 0;; backoff(spins)) {
          child = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
          if (child) break;
          if (Clock::now() >= deadline) timed_out(what);
        }
        for (int spins = 0;; backoff(spins)) {
          ncclResult_t state = ncclInProgress;
          ncclResult_t q = ncclCommGetAsyncError(child, &state);
          if (q != ncclSuccess || (state != ncclSuccess && state != ncclInProgress))
            throw Error(ErrorCode::kUnavailable, where() + ": " + what + " (" + new_name + "): " +
                                                     nccl_text(q != ncclSuccess ? q : state, child));
          if (state == ncclSuccess) break;
          if (Clock::now() >= deadline)
            throw Error(ErrorCode::kTimeout, where() + ": " + what + " (" + new_name +
                                                 ") not ready within " +
                                                 std::to_string(ms_of(opts_.timeout)) + " ms");
        }
      }
      delete slot;
      slot = nullptr;
      if (!child) return nullptr;  // not a member of any new group (split with no color)
      NcclGroupOptions o = opts_;
      o.name = new_name;
      int rank = 0, size = 0;
      if (ncclCommUserRank(child, &rank) != ncclSuccess || ncclCommCount(child, &size) != ncclSuccess)
        throw Error(ErrorCode::kUnavailable, where() + ": " + what + " (" + new_name +
                                                 "): cannot read the new rank and size");
      o.rank = rank;
      o.size = size;
      ncclComm_t owned = child;
      child = nullptr;  // the new group owns it from here, also if its constructor throws
      return std::make_unique<NcclGroup>(o, owned);
    } catch (...) {
      if (child) ncclCommAbort(child);
      // With the parent aborted (timeout, error) its job is over and the slot can go; a job that
      // may still be running keeps it.
      if (slot && !comm_) delete slot;
      throw;
    }
  }

  // Clean shutdown: ncclCommFinalize, wait (bounded) until quiescent, ncclCommDestroy; a
  // communicator in error, or one that does not quiesce in time, is aborted instead.
  void destroy_comm() {
    if (!comm_) return;
    ncclComm_t comm = comm_;
    ncclResult_t state = ncclInProgress;
    bool clean = ncclCommGetAsyncError(comm, &state) == ncclSuccess && state == ncclSuccess &&
                 in_progress_or_ok(ncclCommFinalize(comm));
    if (clean) {
      const Deadline deadline = Clock::now() + opts_.timeout;
      for (int spins = 0;; backoff(spins)) {
        state = ncclInProgress;
        if (ncclCommGetAsyncError(comm, &state) != ncclSuccess) state = ncclInternalError;
        if (state == ncclSuccess) break;
        if (state != ncclInProgress || Clock::now() >= deadline) {
          logger("comm")->warn("{}: finalize {}; aborting the communicator", where(),
                               state == ncclInProgress ? "timed out" : nccl_text(state, comm));
          clean = false;
          break;
        }
      }
    }
    comm_ = nullptr;
    if (clean) {
      ncclCommDestroy(comm);
    } else {
      ncclCommAbort(comm);
    }
  }

  // Frees the stream and buffers (the communicator is gone or never was).
  void release() {
    if (comm_) {
      ncclCommAbort(comm_);
      comm_ = nullptr;
    }
    if (stream_) cudaStreamDestroy(stream_);
    if (dev_) cudaFree(dev_);
    if (host_) cudaFreeHost(host_);
    stream_ = nullptr;
    dev_ = nullptr;
    host_ = nullptr;
    staging_ = 0;
  }

  NcclGroupOptions opts_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  int64_t* dev_ = nullptr;   // staging for the control calls (device)
  int64_t* host_ = nullptr;  // and its pinned host twin
  size_t staging_ = 0;       // entries in each
  bool published_ = false;   // this rank set the unique id key
  const char* what_ = "";    // the call in progress, for messages
  Deadline deadline_{};      // and its deadline
  std::string broken_reason_;
  std::mutex mu_;
};

NcclGroup& as_nccl(Group& g, const char* what) {
  auto* n = dynamic_cast<NcclGroup*>(&g);
  EEP_CHECK(n, ErrorCode::kInvalidArgument,
            std::string(what) + ": group " + g.name() + " is not an NCCL group");
  return *n;
}

}  // namespace

// The plugin's make_nccl_group: programs reach it through eep::make_nccl_group, which loads the
// plugin (engine/cuda_plugin.h).
std::unique_ptr<Group> make_nccl_group_in_plugin(StoreClient& store, const NcclGroupOptions& opts) {
  return std::make_unique<NcclGroup>(store, opts);
}

std::unique_ptr<Group> shrink_nccl_group(Group& parent, const std::vector<int>& exclude_ranks,
                                         const std::string& new_name) {
  return as_nccl(parent, "shrink_nccl_group").shrink(exclude_ranks, new_name);
}

std::unique_ptr<Group> split_nccl_group(Group& parent, int color, int key,
                                        const std::string& new_name) {
  return as_nccl(parent, "split_nccl_group").split(color, key, new_name);
}

}  // namespace eep
