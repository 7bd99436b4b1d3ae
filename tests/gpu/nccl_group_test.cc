// NcclGroup (make_nccl_group, split_nccl_group, shrink_nccl_group) on real GPUs, rendezvous
// through an in-process store server (tests/unit/store_test_server.h), as engines do through
// eep-coord's store.
//
//   no GPU     exit 77 (ctest SKIP_RETURN_CODE)
//   >= 1 GPU   a one-member group in this process: every call (alltoallv with itself, control
//              calls, broadcast), bad arguments, split/shrink, and the error paths: a member
//              that never arrives (store wait, then NCCL init) fails with kTimeout within the
//              timeout, two ranks on one GPU fail without hanging
//   >= 2 GPUs  one process per GPU (fork + exec of this binary with --worker): every call with
//              random int32/bf16 data checked element by element, point-to-point bandwidth,
//              split, shrink, and a recv from a live peer that never sends (kTimeout)
//
// NCCL refuses two ranks of one communicator on one GPU, so multi-rank groups need >= 2 GPUs.
// NCCL_NVLS_ENABLE is set to 0 when unset (shared hosts must not use NVLink multicast).
// Exit 0: all passed; 1: a check failed (FAIL lines say which).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <type_traits>
#include <string>
#include <thread>
#include <vector>

#include <cuda_runtime.h>

#include "../unit/store_test_server.h"
#include "cuda/nccl_group.h"
#include "eep/comm.h"
#include "eep/common.h"
#include "eep/store.h"

namespace {

using eep::ErrorCode;
using eep::Group;
using eep::StoreClient;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

int g_failures = 0;
std::string g_who = "[main]";

// The test's own CUDA calls: a failure ends the process (exit 1).
void cuda_ok(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  std::printf("%s FAIL %s: %s\n", g_who.c_str(), what, cudaGetErrorString(e));
  std::exit(1);
}

// bf16 as its 16-bit pattern: the groups only move bytes, the test compares bits.
struct bf16 {
  uint16_t bits;
};

// Round to nearest even, as __float2bfloat16 does (no NaNs come from a normal distribution).
bf16 to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return bf16{static_cast<uint16_t>((u + 0x7fff + ((u >> 16) & 1)) >> 16)};
}

// n elements of T on the current device, freed on scope exit.
template <typename T>
struct DeviceBuffer {
  explicit DeviceBuffer(size_t count) : n(count) {
    if (n) cuda_ok(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(T)), "cudaMalloc");
  }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  void operator=(const DeviceBuffer&) = delete;
  T* get() const { return p; }
  void upload(const std::vector<T>& h) { copy(p, h.data(), cudaMemcpyHostToDevice); }
  std::vector<T> download() const {
    std::vector<T> h(n);
    copy(h.data(), p, cudaMemcpyDeviceToHost);
    return h;
  }
  // 0xff bytes everywhere: an element that was never written shows up.
  void poison() { cuda_ok(cudaMemset(p, 0xff, n * sizeof(T)), "cudaMemset"); }
  void copy(void* dst, const void* src, cudaMemcpyKind kind) const {
    if (n) cuda_ok(cudaMemcpy(dst, src, n * sizeof(T), kind), "cudaMemcpy");
  }
  T* p = nullptr;
  size_t n = 0;
};

void check(bool ok, const char* expr, const char* file, int line, const std::string& note = "") {
  if (ok) return;
  ++g_failures;
  std::printf("%s FAIL %s:%d: %s %s\n", g_who.c_str(), file, line, expr, note.c_str());
}
#define CHECK(cond) check((cond), #cond, __FILE__, __LINE__)
#define CHECK_MSG(cond, note) check((cond), #cond, __FILE__, __LINE__, (note))

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Runs one named part; an exception fails it and the next part still runs.
void section(const std::string& name, const std::function<void()>& fn) {
  const int before = g_failures;
  auto t0 = Clock::now();
  try {
    fn();
  } catch (const std::exception& e) {
    ++g_failures;
    std::printf("%s FAIL %s: exception: %s\n", g_who.c_str(), name.c_str(), e.what());
  }
  std::printf("%s %s %s (%.0f ms)\n", g_who.c_str(), g_failures == before ? "ok  " : "FAIL",
              name.c_str(), ms_since(t0));
  std::fflush(stdout);
}

// Runs fn, which must throw eep::Error with one of `codes`; returns its message.
std::string expect_error(const std::vector<ErrorCode>& codes, const std::function<void()>& fn,
                         const char* what) {
  try {
    fn();
  } catch (const eep::Error& e) {
    bool match = std::find(codes.begin(), codes.end(), e.code()) != codes.end();
    CHECK_MSG(match, std::string(what) + ": got " + eep::error_code_name(e.code()) + ": " + e.what());
    return e.what();
  }
  check(false, "an eep::Error was thrown", __FILE__, __LINE__, what);
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::unique_ptr<Group> join(StoreClient& store, const std::string& name, int rank, int size,
                            int device, std::chrono::milliseconds timeout = 30s) {
  eep::NcclGroupOptions o;
  o.name = name;
  o.rank = rank;
  o.size = size;
  o.device = device;
  o.timeout = timeout;
  return eep::make_nccl_group(store, o);
}

uint64_t mix(uint64_t x) {  // splitmix64
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
uint64_t key(uint64_t a, uint64_t b, uint64_t c) { return mix(mix(mix(a) ^ b) ^ c); }

// What rank src sends rank dst in one round: sender and receiver compute the same values.
template <typename T>
std::vector<T> payload(int src, int dst, int round, size_t n) {
  std::mt19937 rng(static_cast<uint32_t>(key(src, dst, round)));
  if constexpr (std::is_same_v<T, bf16>) {
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<bf16> v(n);
    for (auto& x : v) x = to_bf16(dist(rng));
    return v;
  } else {
    std::vector<T> v(n);
    for (auto& x : v) x = static_cast<T>(rng());
    return v;
  }
}

// Elements src sends dst in a round: a quarter of the pairs send nothing.
size_t pair_count(int src, int dst, int round, size_t max_elems) {
  uint64_t h = key(src + 1000, dst, round);
  return h % 4 == 0 ? 0 : h % (max_elems + 1);
}

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

// One alltoallv round with random per-pair counts and contents, checked on arrival. Returns
// the milliseconds of the call.
template <typename T>
double alltoallv_round(Group& g, int round, size_t max_elems) {
  const int n = g.size(), me = g.rank();
  std::vector<int64_t> send_bytes(n), recv_bytes(n);
  std::vector<T> send, expect;
  for (int p = 0; p < n; ++p) {
    size_t s = pair_count(me, p, round, max_elems), r = pair_count(p, me, round, max_elems);
    send_bytes[p] = static_cast<int64_t>(s * sizeof(T));
    recv_bytes[p] = static_cast<int64_t>(r * sizeof(T));
    auto out = payload<T>(me, p, round, s);
    send.insert(send.end(), out.begin(), out.end());
    auto in = payload<T>(p, me, round, r);
    expect.insert(expect.end(), in.begin(), in.end());
  }
  DeviceBuffer<T> in(send.size()), out(expect.size());
  if (!send.empty()) in.upload(send);
  if (!expect.empty()) out.poison();
  auto t0 = Clock::now();
  g.alltoallv(in.get(), send_bytes, out.get(), recv_bytes);
  double ms = ms_since(t0);
  if (!expect.empty()) CHECK_MSG(same_bits(out.download(), expect), "alltoallv round " + std::to_string(round));
  return ms;
}

void check_control_calls(Group& g) {
  const int n = g.size(), r = g.rank();
  std::vector<int64_t> v = {r + 1, -r, 1000 * r, 7}, mx = v, mn = v;
  g.allreduce_sum(v.data(), v.size());
  CHECK((v == std::vector<int64_t>{n * (n + 1) / 2, -(n * (n - 1) / 2), 1000 * (n * (n - 1) / 2), 7 * n}));
  g.allreduce_max(mx.data(), mx.size());
  CHECK((mx == std::vector<int64_t>{n, 0, 1000 * (n - 1), 7}));
  g.allreduce_min(mn.data(), mn.size());
  CHECK((mn == std::vector<int64_t>{1, -(n - 1), 0, 7}));
  // Larger than the initial staging buffers: they grow.
  std::vector<int64_t> big(300000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<int64_t>(i) * (r + 1) - (int64_t{1} << 40);
  g.allreduce_sum(big.data(), big.size());
  bool big_ok = true;
  for (size_t i = 0; i < big.size(); ++i)
    big_ok &= big[i] == static_cast<int64_t>(i) * (n * (n + 1) / 2) - n * (int64_t{1} << 40);
  CHECK(big_ok);
  g.allreduce_sum(nullptr, 0);  // empty: a no-op

  std::vector<int64_t> in = {10 * r, 10 * r + 1, 10 * r + 2}, all(3 * n, -1);
  g.allgather(in.data(), all.data(), in.size());
  bool gather_ok = true;
  for (int p = 0; p < n; ++p)
    for (int i = 0; i < 3; ++i) gather_ok &= all[3 * p + i] == 10 * p + i;
  CHECK(gather_ok);

  std::vector<int64_t> counts(n), got(n, -1);
  for (int p = 0; p < n; ++p) counts[p] = 100 * r + p;
  g.alltoall_counts(counts.data(), got.data());
  bool counts_ok = true;
  for (int p = 0; p < n; ++p) counts_ok &= got[p] == 100 * p + r;
  CHECK(counts_ok);
  g.barrier();
}

void check_broadcast(Group& g, int root, size_t elems) {
  auto data = payload<bf16>(root, -1, 77, elems);
  DeviceBuffer<bf16> buf(elems);
  if (g.rank() == root) {
    buf.upload(data);
  } else {
    buf.poison();
  }
  g.broadcast(buf.get(), elems * sizeof(bf16), root);
  CHECK(same_bits(buf.download(), data));
  g.broadcast(nullptr, 0, root);  // empty: a no-op
}

// ---------------------------------------------------------------------------------------------
// One GPU, one process.

// One send_recv_batch in which every rank sends every rank (itself included) three messages of
// different sizes (one empty) and receives theirs, the operations of different peers
// interleaved; every arrival is checked against what its sender computed.
void check_batch(Group& g, int round) {
  const int n = g.size(), me = g.rank();
  const size_t sizes[3] = {(1 << 20) + 7, 0, 4099};
  std::vector<std::unique_ptr<DeviceBuffer<int32_t>>> bufs;
  std::vector<std::vector<int32_t>> expect;
  std::vector<eep::P2POp> ops;
  for (int m = 0; m < 3; ++m)
    for (int p = 0; p < n; ++p) {
      const size_t elems = sizes[(m + p) % 3];
      auto out = payload<int32_t>(me, p, round * 10 + m, elems);
      bufs.push_back(std::make_unique<DeviceBuffer<int32_t>>(std::max<size_t>(elems, 1)));
      if (elems) bufs.back()->upload(out);
      ops.push_back({eep::P2POp::Kind::kSend, bufs.back()->get(), elems * sizeof(int32_t), p});
      const size_t in_elems = sizes[(m + me) % 3];
      bufs.push_back(std::make_unique<DeviceBuffer<int32_t>>(std::max<size_t>(in_elems, 1)));
      ops.push_back({eep::P2POp::Kind::kRecv, bufs.back()->get(), in_elems * sizeof(int32_t), p});
      expect.push_back(payload<int32_t>(p, me, round * 10 + m, in_elems));
    }
  g.send_recv_batch(ops);
  for (size_t i = 0; i < expect.size(); ++i) {
    auto got = bufs[2 * i + 1]->download();
    got.resize(expect[i].size());  // empty messages have a one-element buffer
    CHECK_MSG(same_bits(got, expect[i]), "batch message " + std::to_string(i));
  }
}

void single_gpu_tests(eep::testing::StoreTestServer& server) {
  StoreClient store(server.address(), 10s);

  section("one-member group: identity and control calls", [&] {
    auto g = join(store, "solo", 0, 1, 0);
    CHECK(g->rank() == 0);
    CHECK(g->size() == 1);
    CHECK(g->name() == "solo");
    CHECK(g->device_buffers());
    check_control_calls(*g);
  });

  section("one-member group: alltoallv with itself (int32, bf16), broadcast", [&] {
    auto g = join(store, "solo", 0, 1, 0);
    for (int round = 0; round < 4; ++round) alltoallv_round<int32_t>(*g, round, 100000);
    for (int round = 4; round < 8; ++round) alltoallv_round<bf16>(*g, round, 1 << 22);
    // Nothing at all to move.
    g->alltoallv(nullptr, {0}, nullptr, {0});
    check_broadcast(*g, 0, 1 << 20);
  });

  section("one-member group: send_recv_batch with itself, bad batches refused", [&] {
    auto g = join(store, "solo", 0, 1, 0);
    for (int round = 0; round < 2; ++round) check_batch(*g, round);
    DeviceBuffer<int32_t> a(16), b(16);
    std::vector<int32_t> host(16);
    using K = eep::P2POp::Kind;
    expect_error({ErrorCode::kInvalidArgument},
                 [&] { g->send_recv_batch({{K::kSend, a.get(), 64, 0}}); }, "a send to itself without its receive");
    expect_error({ErrorCode::kInvalidArgument},
                 [&] { g->send_recv_batch({{K::kSend, a.get(), 64, 0}, {K::kRecv, b.get(), 32, 0}}); },
                 "sizes that differ");
    expect_error({ErrorCode::kInvalidArgument},
                 [&] { g->send_recv_batch({{K::kSend, a.get(), 64, 1}, {K::kRecv, b.get(), 64, 1}}); },
                 "peer out of range");
    expect_error({ErrorCode::kInvalidArgument},
                 [&] { g->send_recv_batch({{K::kSend, host.data(), 64, 0}, {K::kRecv, b.get(), 64, 0}}); },
                 "host memory");
    g->barrier();
  });

  section("one-member group: send/recv need a peer", [&] {
    std::printf("%s SKIP send/recv data: a one-member group has no peer (needs 2 GPUs)\n", g_who.c_str());
    auto g = join(store, "solo", 0, 1, 0);
    DeviceBuffer<int32_t> buf(16);
    expect_error({ErrorCode::kInvalidArgument}, [&] { g->send(buf.get(), 64, 0, 0); }, "send to self");
    expect_error({ErrorCode::kInvalidArgument}, [&] { g->recv(buf.get(), 64, 1, 0); }, "recv from rank 1 of 1");
    g->barrier();  // refused arguments leave the group usable
  });

  section("bad arguments are refused, the group stays usable", [&] {
    auto g = join(store, "solo", 0, 1, 0);
    DeviceBuffer<int32_t> buf(16);
    std::vector<int32_t> host(16);
    expect_error({ErrorCode::kInvalidArgument},
                 [&] { g->alltoallv(buf.get(), {64, 0}, buf.get(), {64, 0}); }, "counts of the wrong size");
    expect_error({ErrorCode::kInvalidArgument},
                 [&] { g->alltoallv(buf.get(), {64}, buf.get(), {32}); }, "self counts disagree");
    expect_error({ErrorCode::kInvalidArgument},
                 [&] { g->alltoallv(host.data(), {64}, buf.get(), {64}); }, "host pointer");
    expect_error({ErrorCode::kInvalidArgument},
                 [&] { g->broadcast(buf.get(), 64, 1); }, "broadcast root out of range");
    int64_t x = 5;
    g->allreduce_sum(&x, 1);
    CHECK(x == 5);
  });

  section("control-call and self alltoallv latency (one member)", [&] {
    auto g = join(store, "solo", 0, 1, 0);
    int64_t x = 1;
    const int iters = 200;
    auto t0 = Clock::now();
    for (int i = 0; i < iters; ++i) g->allreduce_sum(&x, 1);
    double ar = ms_since(t0) * 1000.0 / iters;
    DeviceBuffer<bf16> a(1 << 16), b(1 << 16);
    std::vector<int64_t> bytes = {int64_t{1} << 17};
    t0 = Clock::now();
    for (int i = 0; i < iters; ++i) g->alltoallv(a.get(), bytes, b.get(), bytes);
    double a2a = ms_since(t0) * 1000.0 / iters;
    std::printf("%s allreduce_sum(1 int64): %.1f us/call; alltoallv(128 KiB to self): %.1f us/call\n",
                g_who.c_str(), ar, a2a);
  });

  section("split and shrink a one-member group", [&] {
    auto g = join(store, "solo", 0, 1, 0);
    auto s = eep::split_nccl_group(*g, 0, 0, "solo-split");
    CHECK(s != nullptr);
    if (s) CHECK_MSG(s->size() == 1 && s->rank() == 0 && s->name() == "solo-split",
                     "size " + std::to_string(s->size()) + " rank " + std::to_string(s->rank()));
    if (s) check_control_calls(*s);
    auto none = eep::split_nccl_group(*g, -1, 0, "solo-none");
    CHECK(!none);
    auto k = eep::shrink_nccl_group(*g, {}, "solo-shrunk");
    CHECK(k && k->size() == 1 && k->rank() == 0 && k->name() == "solo-shrunk");
    if (k) {
      check_control_calls(*k);
      alltoallv_round<bf16>(*k, 9, 1 << 16);
    }
    expect_error({ErrorCode::kInvalidArgument}, [&] { eep::shrink_nccl_group(*g, {0}, "x"); },
                 "shrink excluding the caller");
    g->barrier();  // the parent is still usable
  });

  section("bad options are refused", [&] {
    expect_error({ErrorCode::kInvalidArgument}, [&] { join(store, "bad", 2, 2, 0); }, "rank >= size");
    expect_error({ErrorCode::kInvalidArgument}, [&] { join(store, "bad", 0, 0, 0); }, "size 0");
    expect_error({ErrorCode::kInvalidArgument}, [&] { join(store, "bad", 0, 1, 999); }, "device 999");
    expect_error({ErrorCode::kInvalidArgument}, [&] { join(store, "", 0, 1, 0); }, "empty name");
  });

  section("rank 0 never arrives: the store wait times out", [&] {
    auto t0 = Clock::now();
    auto msg = expect_error({ErrorCode::kTimeout}, [&] { join(store, "lonely1", 1, 2, 0, 1500ms); },
                            "rank 1 without rank 0");
    double ms = ms_since(t0);
    std::printf("%s   after %.0f ms: %s\n", g_who.c_str(), ms, msg.c_str());
    CHECK(ms < 1500 + 3000);
    CHECK(contains(msg, "lonely1") && contains(msg, "rank 1"));
  });

  section("rank 1 never arrives: NCCL init times out and is aborted", [&] {
    auto t0 = Clock::now();
    auto msg = expect_error({ErrorCode::kTimeout}, [&] { join(store, "lonely0", 0, 2, 0, 3000ms); },
                            "rank 0 without rank 1");
    double ms = ms_since(t0);
    std::printf("%s   after %.0f ms: %s\n", g_who.c_str(), ms, msg.c_str());
    CHECK(ms < 3000 + 5000);
    CHECK(contains(msg, "lonely0") && contains(msg, "rank 0"));
    CHECK(!store.try_get("lonely0/nccl_unique_id"));  // no stale id for a retry to read
  });

  section("two ranks on one GPU fail without hanging", [&] {
    std::string errors[2];
    std::thread t[2];
    auto t0 = Clock::now();
    for (int r = 0; r < 2; ++r)
      t[r] = std::thread([&, r] {
        try {
          StoreClient s(server.address(), 10s);
          auto g = join(s, "samegpu", r, 2, 0, 5000ms);
          g->barrier();
          errors[r] = "(no error)";
        } catch (const std::exception& e) {
          errors[r] = e.what();
        }
      });
    for (auto& th : t) th.join();
    double ms = ms_since(t0);
    for (int r = 0; r < 2; ++r) std::printf("%s   rank %d after %.0f ms: %s\n", g_who.c_str(), r, ms, errors[r].c_str());
    if (errors[0] == "(no error)" && errors[1] == "(no error)") {
      std::printf("%s   NOTE: this NCCL accepted two ranks on one GPU\n", g_who.c_str());
    }
    CHECK(ms < 5000 + 8000);
  });

  section("a new group works after the failures", [&] {
    auto g = join(store, "solo-again", 0, 1, 0);
    check_control_calls(*g);
  });
}

// ---------------------------------------------------------------------------------------------
// Several GPUs: one worker process per GPU.

int worker_main(int rank, int size, const std::string& address) {
  g_who = "[rank " + std::to_string(rank) + "]";
  cuda_ok(cudaSetDevice(rank), "cudaSetDevice");
  StoreClient store(address, 30s);
  std::unique_ptr<Group> g;
  section("join " + std::to_string(size) + " ranks", [&] {
    g = join(store, "multi", rank, size, rank);
    CHECK(g->rank() == rank && g->size() == size);
  });
  if (!g) return 1;

  // First, before any other call: NCCL connects peers lazily at the first call of each kind
  // (~0.35 s on two H200s); after warm_up the first step-like calls must not pay that.
  section("warm_up: the first calls afterwards are fast", [&] {
    auto t0 = Clock::now();
    g->warm_up();
    std::printf("%s warm_up: %.1f ms\n", g_who.c_str(), ms_since(t0));
    const size_t per = 64 << 10;
    DeviceBuffer<char> a(per * size), b(per * size);
    std::vector<int64_t> bytes(size, static_cast<int64_t>(per));
    std::vector<int64_t> counts(size, 1), got(size, 0);
    t0 = Clock::now();
    int64_t flags[2] = {1, 0};
    g->allreduce_sum(flags, 2);
    g->alltoall_counts(counts.data(), got.data());
    g->alltoallv(a.get(), bytes, b.get(), bytes);
    const double first_ms = ms_since(t0);
    std::printf("%s first all-reduce + counts + alltoallv after warm_up: %.2f ms\n", g_who.c_str(),
                first_ms);
    CHECK(flags[0] == size);
    CHECK(first_ms < 50.0);
  });

  section("control calls", [&] { check_control_calls(*g); });

  section("alltoallv, random counts and contents (int32, bf16)", [&] {
    for (int round = 0; round < 3; ++round) alltoallv_round<int32_t>(*g, round, 50000);
    for (int round = 3; round < 6; ++round) alltoallv_round<bf16>(*g, round, 1 << 20);
    std::vector<int64_t> zeros(size, 0);
    g->alltoallv(nullptr, zeros, nullptr, zeros);
  });

  section("alltoallv bandwidth (4 MiB to every peer)", [&] {
    const size_t per = 4 << 20;
    DeviceBuffer<char> a(per * size), b(per * size);
    std::vector<int64_t> bytes(size, static_cast<int64_t>(per));
    for (int i = 0; i < 3; ++i) g->alltoallv(a.get(), bytes, b.get(), bytes);
    g->barrier();
    const int iters = 20;
    auto t0 = Clock::now();
    for (int i = 0; i < iters; ++i) g->alltoallv(a.get(), bytes, b.get(), bytes);
    double us = ms_since(t0) * 1000.0 / iters;
    std::printf("%s alltoallv 4 MiB/peer: %.1f us/call, %.1f GB/s sent per GPU\n", g_who.c_str(),
                us, double(per) * (size - 1) / us / 1e3);
  });

  section("send_recv_batch between every pair, contents checked", [&] {
    for (int round = 0; round < 3; ++round) check_batch(*g, round);
  });

  // Weights move as many messages of a few MB (an expert of Qwen3-30B-A3B: 6.3 + 3.1 MB); in
  // one batch NCCL pipelines them (eep-bench transfer measures the engine's whole path).
  section("send_recv_batch bandwidth: 64 messages of 6 MiB, rank 0 to each peer", [&] {
    const size_t per = 6 << 20;
    const int count = 64;
    DeviceBuffer<char> buf(per * count);
    std::vector<eep::P2POp> ops;
    for (int p = 1; p < size; ++p)
      for (int m = 0; m < count; ++m) {
        if (rank == 0) ops.push_back({eep::P2POp::Kind::kSend, buf.get() + m * per, per, p});
        if (rank == p) ops.push_back({eep::P2POp::Kind::kRecv, buf.get() + m * per, per, 0});
      }
    g->send_recv_batch(ops);  // connects
    g->barrier();
    const auto t0 = Clock::now();
    g->send_recv_batch(ops);
    g->barrier();
    const double ms = ms_since(t0);
    if (rank == 0)
      std::printf("%s send_recv_batch: %d x 6 MiB to each of %d peer(s) in %.2f ms: %.1f GB/s\n",
                  g_who.c_str(), count, size - 1, ms, double(per) * count * (size - 1) / ms / 1e6);
  });

  section("send/recv between every pair, in order", [&] {
    for (int a = 0; a < size; ++a)
      for (int b = a + 1; b < size; ++b) {
        if (rank != a && rank != b) continue;
        const int peer = rank == a ? b : a;
        const size_t sizes[2] = {(1 << 20) + 3, 5};  // two messages each way, matched by order
        auto exchange = [&](bool sending) {
          for (int m = 0; m < 2; ++m) {
            if (sending) {
              auto data = payload<int32_t>(rank, peer, 100 + m, sizes[m]);
              DeviceBuffer<int32_t> buf(sizes[m]);
              buf.upload(data);
              g->send(buf.get(), sizes[m] * sizeof(int32_t), peer, m);
            } else {
              DeviceBuffer<int32_t> buf(sizes[m]);
              buf.poison();
              g->recv(buf.get(), sizes[m] * sizeof(int32_t), peer, m);
              CHECK_MSG(same_bits(buf.download(), payload<int32_t>(peer, rank, 100 + m, sizes[m])),
                        "message " + std::to_string(m) + " from " + std::to_string(peer));
            }
          }
        };
        exchange(rank == a);  // a sends first, b receives first
        exchange(rank != a);
      }
    g->barrier();
  });

  section("broadcast (bf16, every root)", [&] {
    for (int root = 0; root < size; ++root) check_broadcast(*g, root, (8 << 20) + root);
  });

  section("point-to-point bandwidth rank 0 -> rank 1 (weight transfer)", [&] {
    const size_t bytes = size_t{256} << 20;
    if (rank <= 1) {
      DeviceBuffer<char> buf(bytes);
      for (int i = 0; i < 3; ++i) rank == 0 ? g->send(buf.get(), bytes, 1, 0) : g->recv(buf.get(), bytes, 0, 0);
      const int iters = 10;
      auto t0 = Clock::now();
      for (int i = 0; i < iters; ++i) rank == 0 ? g->send(buf.get(), bytes, 1, 0) : g->recv(buf.get(), bytes, 0, 0);
      double s = ms_since(t0) / 1000.0 / iters;
      if (rank == 1)
        std::printf("%s p2p 0->1 %zu MiB: %.2f ms, %.1f GB/s\n", g_who.c_str(), bytes >> 20, s * 1e3,
                    double(bytes) / s / 1e9);
    }
    g->barrier();
  });

  section("split by parity, reverse order", [&] {
    auto s = eep::split_nccl_group(*g, rank % 2, size - rank, "multi-parity");
    const int members = (size - rank % 2 + 1) / 2;  // ranks of my parity
    std::vector<int> mine;
    for (int r = rank % 2; r < size; r += 2) mine.push_back(r);
    std::reverse(mine.begin(), mine.end());
    const int expect_rank = static_cast<int>(std::find(mine.begin(), mine.end(), rank) - mine.begin());
    CHECK(s != nullptr);
    if (s) CHECK_MSG(s->size() == members && s->rank() == expect_rank,
                     "size " + std::to_string(s->size()) + " rank " + std::to_string(s->rank()));
    if (!s) return;
    check_control_calls(*s);
    int64_t sum = rank;
    s->allreduce_sum(&sum, 1);
    int64_t expect = 0;
    for (int r : mine) expect += r;
    CHECK(sum == expect);
    alltoallv_round<bf16>(*s, 20, 1 << 16);
  });

  section("a recv from a live peer that never sends times out", [&] {
    auto t = join(store, "multi-timeout", rank, size, rank, 2000ms);
    if (rank == 0) {
      DeviceBuffer<char> buf(1 << 20);
      auto t0 = Clock::now();
      auto msg = expect_error({ErrorCode::kTimeout}, [&] { t->recv(buf.get(), 1 << 20, 1, 0); }, "recv");
      double ms = ms_since(t0);
      std::printf("%s   after %.0f ms: %s\n", g_who.c_str(), ms, msg.c_str());
      CHECK(ms < 2000 + 3000);
      expect_error({ErrorCode::kUnavailable}, [&] { t->barrier(); }, "a call on the aborted group");
      store.set("multi-timeout/done", "1");
    } else {
      store.wait({"multi-timeout/done"}, 30s);
    }
    auto t0 = Clock::now();
    t.reset();  // rank 0's is aborted; the others finalize (bounded) or abort
    std::printf("%s   group destroyed in %.0f ms\n", g_who.c_str(), ms_since(t0));
  });

  // Last: the excluded rank leaves right away; the others go on in the smaller group.
  section("shrink: exclude the last rank", [&] {
    if (rank == size - 1) {
      g.reset();
      return;
    }
    auto s = eep::shrink_nccl_group(*g, {size - 1}, "multi-shrunk");
    CHECK_MSG(s->size() == size - 1 && s->rank() == rank,
              "size " + std::to_string(s->size()) + " rank " + std::to_string(s->rank()));
    check_control_calls(*s);
    if (s->size() > 1) {
      alltoallv_round<bf16>(*s, 30, 1 << 18);
      check_broadcast(*s, s->size() - 1, 1 << 20);
    }
    s.reset();
    g.reset();
  });
  return g_failures == 0 ? 0 : 1;
}

// Starts one worker per GPU (fork + exec: a fresh process, no CUDA state inherited) and waits
// for all, killing them past the deadline.
void multi_gpu_tests(eep::testing::StoreTestServer& server, int gpus) {
  section("multi-process group over " + std::to_string(gpus) + " GPUs", [&] {
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    CHECK(len > 0);
    if (len <= 0) return;
    self[len] = 0;
    std::fflush(stdout);
    std::vector<pid_t> pids;
    for (int r = 0; r < gpus; ++r) {
      pid_t pid = fork();
      if (pid == 0) {
        std::string rank = std::to_string(r), size = std::to_string(gpus);
        execl(self, self, "--worker", rank.c_str(), size.c_str(), server.address().c_str(), (char*)nullptr);
        _exit(127);
      }
      CHECK(pid > 0);
      if (pid > 0) pids.push_back(pid);
    }
    auto deadline = Clock::now() + 300s;
    std::vector<int> status(pids.size(), -1);
    size_t left = pids.size();
    while (left > 0) {
      for (size_t i = 0; i < pids.size(); ++i) {
        if (status[i] != -1) continue;
        int st = 0;
        if (waitpid(pids[i], &st, WNOHANG) == pids[i]) {
          status[i] = st;
          --left;
        }
      }
      if (left > 0 && Clock::now() > deadline) {
        std::printf("%s FAIL workers still running after 300 s: killing them\n", g_who.c_str());
        for (size_t i = 0; i < pids.size(); ++i)
          if (status[i] == -1) kill(pids[i], SIGKILL);
      }
      std::this_thread::sleep_for(20ms);
    }
    for (size_t i = 0; i < pids.size(); ++i)
      CHECK_MSG(WIFEXITED(status[i]) && WEXITSTATUS(status[i]) == 0,
                "worker " + std::to_string(i) + " status " + std::to_string(status[i]));
  });
}

}  // namespace

int main(int argc, char** argv) {
  setvbuf(stdout, nullptr, _IOLBF, 0);
  setenv("NCCL_NVLS_ENABLE", "0", 0);  // never NVLink multicast on a shared host (keeps a caller's value)
  if (argc == 5 && std::string(argv[1]) == "--worker")
    return worker_main(std::atoi(argv[2]), std::atoi(argv[3]), argv[4]);

  int gpus = 0;
  cudaError_t e = cudaGetDeviceCount(&gpus);
  if (e != cudaSuccess || gpus == 0) {
    std::printf("SKIP: no CUDA device (%s)\n", e != cudaSuccess ? cudaGetErrorString(e) : "device count 0");
    return 77;
  }
  int version = 0;
  cudaDeviceProp prop{};
  cuda_ok(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  cudaDriverGetVersion(&version);
  std::printf("%d GPU(s), device 0: %s, driver API %d, NCCL_NVLS_ENABLE=%s\n", gpus, prop.name,
              version, std::getenv("NCCL_NVLS_ENABLE"));

  eep::testing::StoreTestServer server;
  single_gpu_tests(server);
  if (gpus >= 2) {
    multi_gpu_tests(server, gpus);
  } else {
    std::printf("SKIP multi-rank tests (every call with real data between ranks, p2p bandwidth, "
                "split/shrink across ranks, timeout with a live peer): need >= 2 GPUs, have %d\n", gpus);
  }
  std::printf("nccl_group_test: %s (%d failed checks)\n", g_failures ? "FAILED" : "passed", g_failures);
  return g_failures ? 1 : 0;
}
