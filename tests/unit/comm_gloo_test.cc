// GlooGroup over real TCP on 127.0.0.1: ranks are threads, each with its own StoreClient,
// rendezvousing through an in-test store server.
#include <atomic>
#include <cstring>
#include <functional>
#include <numeric>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "eep/comm.h"
#include "eep/store.h"
#include "store_test_server.h"

namespace {

using eep::Group;
using eep::GlooGroupOptions;
using eep::StoreClient;
using eep::testing::StoreTestServer;
using namespace std::chrono_literals;

using RankFn = std::function<void(Group&)>;

// Runs fn on every rank of a fresh group; failures on any rank fail the test.
void run_group(StoreTestServer& server, const std::string& name, int size, const RankFn& fn,
               std::chrono::milliseconds timeout = 10s) {
  std::vector<std::thread> threads;
  std::vector<std::string> errors(size);
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      try {
        StoreClient store(server.address(), 10s);
        GlooGroupOptions o;
        o.name = name;
        o.rank = r;
        o.size = size;
        o.timeout = timeout;
        auto g = eep::make_gloo_group(store, o);
        EXPECT_EQ(g->rank(), r);
        EXPECT_EQ(g->size(), size);
        EXPECT_EQ(g->name(), name);
        fn(*g);
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < size; ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

class GlooGroupSizes : public ::testing::TestWithParam<int> {};

TEST_P(GlooGroupSizes, Allreduce) {
  StoreTestServer server;
  const int n = GetParam();
  run_group(server, "ar", n, [n](Group& g) {
    const int r = g.rank();
    std::vector<int64_t> v = {r + 1, -r, 1000 * r, 7};
    std::vector<int64_t> mx = v, mn = v;
    g.allreduce_sum(v.data(), v.size());
    EXPECT_EQ(v[0], n * (n + 1) / 2);
    EXPECT_EQ(v[1], -(n * (n - 1) / 2));
    EXPECT_EQ(v[2], 1000 * (n * (n - 1) / 2));
    EXPECT_EQ(v[3], 7 * n);
    g.allreduce_max(mx.data(), mx.size());
    EXPECT_EQ(mx, (std::vector<int64_t>{n, 0, 1000 * (n - 1), 7}));
    g.allreduce_min(mn.data(), mn.size());
    EXPECT_EQ(mn, (std::vector<int64_t>{1, -(n - 1), 0, 7}));
    // A large vector spans several Gloo segments.
    std::vector<int64_t> big(300000, r);
    g.allreduce_sum(big.data(), big.size());
    for (auto x : big) ASSERT_EQ(x, n * (n - 1) / 2);
    g.allreduce_sum(nullptr, 0);  // empty is a no-op
  });
}

TEST_P(GlooGroupSizes, AllgatherAndCounts) {
  StoreTestServer server;
  const int n = GetParam();
  run_group(server, "ag", n, [n](Group& g) {
    const int r = g.rank();
    int64_t in[3] = {r, r * 10, -r};
    std::vector<int64_t> out(3 * n, -99);
    g.allgather(in, out.data(), 3);
    for (int p = 0; p < n; ++p) {
      EXPECT_EQ(out[3 * p], p);
      EXPECT_EQ(out[3 * p + 1], p * 10);
      EXPECT_EQ(out[3 * p + 2], -p);
    }
    // counts[p] = what I send to p = 100*r + p; I receive 100*p + r from p.
    std::vector<int64_t> send(n), recv(n, -1);
    for (int p = 0; p < n; ++p) send[p] = 100 * r + p;
    g.alltoall_counts(send.data(), recv.data());
    for (int p = 0; p < n; ++p) EXPECT_EQ(recv[p], 100 * p + r);
  });
}

// Byte value that rank `from` sends to rank `to` at offset i.
uint8_t pattern(int from, int to, int64_t i) { return static_cast<uint8_t>(from * 31 + to * 7 + i * 13); }
// Uneven, sometimes zero byte counts from `from` to `to`.
int64_t amount(int from, int to, int round) { return ((from + 2 * to + round) % 3 == 0) ? 0 : (from + 1) * 1000 + to * 17 + round; }

TEST_P(GlooGroupSizes, AlltoallvUnevenAndZero) {
  StoreTestServer server;
  const int n = GetParam();
  run_group(server, "a2a", n, [n](Group& g) {
    const int r = g.rank();
    for (int round = 0; round < 4; ++round) {
      std::vector<int64_t> send_bytes(n), recv_bytes(n);
      for (int p = 0; p < n; ++p) {
        send_bytes[p] = amount(r, p, round);
        recv_bytes[p] = amount(p, r, round);
      }
      // Exchange counts the way callers do, and check they agree with the formula.
      std::vector<int64_t> exchanged(n);
      g.alltoall_counts(send_bytes.data(), exchanged.data());
      EXPECT_EQ(exchanged, recv_bytes);
      std::vector<uint8_t> in(std::accumulate(send_bytes.begin(), send_bytes.end(), int64_t{0}));
      std::vector<uint8_t> out(std::accumulate(recv_bytes.begin(), recv_bytes.end(), int64_t{0}), 0xEE);
      size_t off = 0;
      for (int p = 0; p < n; ++p)
        for (int64_t i = 0; i < send_bytes[p]; ++i) in[off++] = pattern(r, p, i);
      g.alltoallv(in.data(), send_bytes, out.data(), recv_bytes);
      off = 0;
      for (int p = 0; p < n; ++p)
        for (int64_t i = 0; i < recv_bytes[p]; ++i, ++off)
          ASSERT_EQ(out[off], pattern(p, r, i)) << "round " << round << " from " << p << " at " << i;
    }
    // Everything zero.
    std::vector<int64_t> zeros(n, 0);
    g.alltoallv(nullptr, zeros, nullptr, zeros);
  });
}

TEST_P(GlooGroupSizes, BroadcastAndBarrier) {
  StoreTestServer server;
  const int n = GetParam();
  run_group(server, "bc", n, [n](Group& g) {
    for (int root = 0; root < n; ++root) {
      std::vector<uint8_t> buf(5000, static_cast<uint8_t>(g.rank()));
      if (g.rank() == root)
        for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<uint8_t>(i * 3 + root);
      g.broadcast(buf.data(), buf.size(), root);
      for (size_t i = 0; i < buf.size(); ++i) ASSERT_EQ(buf[i], static_cast<uint8_t>(i * 3 + root));
    }
    for (int i = 0; i < 5; ++i) g.barrier();
  });
}

INSTANTIATE_TEST_SUITE_P(Sizes, GlooGroupSizes, ::testing::Values(1, 2, 3, 4));

TEST(GlooGroup, BarrierReallyWaits) {
  StoreTestServer server;
  std::atomic<int> arrived{0};
  run_group(server, "bw", 3, [&](Group& g) {
    if (g.rank() == 2) std::this_thread::sleep_for(200ms);
    ++arrived;
    g.barrier();
    EXPECT_EQ(arrived.load(), 3);
  });
}

TEST(GlooGroup, SendRecv) {
  StoreTestServer server;
  run_group(server, "p2p", 3, [](Group& g) {
    const int r = g.rank();
    // Ring: each rank sends to r+1 and receives from r-1, with two tags in flight.
    const int n = g.size();
    int next = (r + 1) % n, prev = (r + n - 1) % n;
    std::vector<uint8_t> a(100000), b(10);
    for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<uint8_t>(i + r);
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(200 + r);
    std::vector<uint8_t> ga(a.size()), gb(b.size());
    // send blocks until the peer posts the matching recv, so each tag gets its own thread;
    // the receiver takes tag 1 first while tag 2 was sent first: matching is by tag.
    std::string send_error;
    auto send_one = [&](const std::vector<uint8_t>& v, uint32_t tag) {
      try {
        g.send(v.data(), v.size(), next, tag);
      } catch (const std::exception& e) {
        send_error = e.what();
      }
    };
    std::thread s2(send_one, std::cref(b), 2);
    std::this_thread::sleep_for(20ms);
    std::thread s1(send_one, std::cref(a), 1);
    g.recv(ga.data(), ga.size(), prev, 1);
    g.recv(gb.data(), gb.size(), prev, 2);
    s1.join();
    s2.join();
    EXPECT_EQ(send_error, "");
    for (size_t i = 0; i < ga.size(); ++i) ASSERT_EQ(ga[i], static_cast<uint8_t>(i + prev));
    for (auto x : gb) ASSERT_EQ(x, 200 + prev);
    EXPECT_THROW(g.send(a.data(), 1, r, 0), eep::Error);  // to self
    EXPECT_THROW(g.recv(a.data(), 1, n, 0), eep::Error);  // out of range
  });
}

TEST(GlooGroup, SecondGroupAfterFirstDestroyed) {
  StoreTestServer server;
  for (int i = 0; i < 3; ++i) {
    run_group(server, "gen" + std::to_string(i), 3, [](Group& g) {
      int64_t v = 1;
      g.allreduce_sum(&v, 1);
      EXPECT_EQ(v, 3);
    });
  }
  // Nested names ("x" and "x/xfer") forming at the same time must not disturb each other.
  std::thread nested([&] { run_group(server, "gen/xfer", 3, [](Group& g) { g.barrier(); }); });
  run_group(server, "gen", 3, [](Group& g) { g.barrier(); });
  nested.join();
  // Membership changes: a 2-group and a 4-group with new names.
  run_group(server, "gen-small", 2, [](Group& g) { g.barrier(); });
  run_group(server, "gen-big", 4, [](Group& g) {
    int64_t v = g.rank();
    g.allreduce_max(&v, 1);
    EXPECT_EQ(v, 3);
  });
  server.stop();
  EXPECT_EQ(server.keys_after_stop(), 0u) << "rendezvous keys were not cleaned up";
}

TEST(GlooGroup, MemberThatNeverJoinsTimesOut) {
  StoreTestServer server;
  std::vector<std::thread> threads;
  std::vector<eep::ErrorCode> codes(2, eep::ErrorCode::kInternal);
  std::vector<bool> threw(2, false);
  auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < 2; ++r) {  // ranks 0 and 1 of 3; rank 2 never comes
    threads.emplace_back([&, r] {
      StoreClient store(server.address(), 10s);
      GlooGroupOptions o{.name = "lonely", .rank = r, .size = 3, .timeout = 500ms};
      try {
        eep::make_gloo_group(store, o);
      } catch (const eep::Error& e) {
        threw[r] = true;
        codes[r] = e.code();
      }
    });
  }
  for (auto& t : threads) t.join();
  auto took = std::chrono::steady_clock::now() - t0;
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(threw[r]);
    EXPECT_EQ(codes[r], eep::ErrorCode::kTimeout) << "rank " << r;
  }
  EXPECT_LT(took, 5s);
  server.stop();
  EXPECT_EQ(server.keys_after_stop(), 0u) << "a failed join left its rendezvous keys behind";
}

TEST(GlooGroup, PeerDiesMidCollective) {
  StoreTestServer server;
  const int n = 3;
  std::vector<std::thread> threads;
  std::vector<int> failed(n, 0);
  std::atomic<int> formed{0};
  auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      StoreClient store(server.address(), 10s);
      GlooGroupOptions o{.name = "dying", .rank = r, .size = n, .timeout = 2s};
      auto g = eep::make_gloo_group(store, o);
      ++formed;
      if (r == 1) {
        // Dies: leaves the group without taking part in the collective.
        std::this_thread::sleep_for(100ms);
        g.reset();
        return;
      }
      try {
        std::vector<int64_t> v(1000, 1);
        g->allreduce_sum(v.data(), v.size());
      } catch (const eep::Error& e) {
        failed[r] = 1;
        EXPECT_TRUE(e.code() == eep::ErrorCode::kUnavailable || e.code() == eep::ErrorCode::kTimeout);
        EXPECT_NE(std::string(e.what()).find("dying"), std::string::npos) << e.what();
        // A broken group refuses further work at once instead of hanging again.
        auto t1 = std::chrono::steady_clock::now();
        EXPECT_THROW(g->barrier(), eep::Error);
        EXPECT_LT(std::chrono::steady_clock::now() - t1, 500ms);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(formed.load(), n);
  EXPECT_EQ(failed[0], 1);
  EXPECT_EQ(failed[2], 1);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 8s);
}

TEST(GlooGroup, HungPeerGivesTimeout) {
  StoreTestServer server;
  const int n = 2;
  std::vector<std::thread> threads;
  std::atomic<bool> done{false};
  eep::ErrorCode code = eep::ErrorCode::kInternal;
  bool threw = false;
  auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      StoreClient store(server.address(), 10s);
      GlooGroupOptions o{.name = "hung", .rank = r, .size = n, .timeout = 500ms};
      auto g = eep::make_gloo_group(store, o);
      if (r == 1) {
        // Alive (connections open) but never joins the collective.
        while (!done) std::this_thread::sleep_for(10ms);
        return;
      }
      try {
        g->barrier();
      } catch (const eep::Error& e) {
        threw = true;
        code = e.code();
      }
      done = true;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_TRUE(threw);
  EXPECT_EQ(code, eep::ErrorCode::kTimeout);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
}

// The abort handle ends a collective blocked on a peer long before the group's timeout (30 s
// here), for each collective a step uses; and every later call fails at once.
TEST(GlooGroup, AbortHandleEndsABlockedCollective) {
  for (const char* op : {"allreduce_sum", "alltoallv", "alltoall_counts", "allgather"}) {
    SCOPED_TRACE(op);
    StoreTestServer server;
    const int n = 3;
    std::vector<std::thread> threads;
    std::atomic<bool> done{false};
    std::shared_ptr<eep::GroupAbort> handle;
    std::atomic<bool> armed{false};
    std::string what, later;
    eep::ErrorCode code = eep::ErrorCode::kInternal;
    std::chrono::steady_clock::duration blocked{};
    for (int r = 0; r < n; ++r) {
      threads.emplace_back([&, r] {
        StoreClient store(server.address(), 10s);
        GlooGroupOptions o{.name = std::string("abort-") + op, .rank = r, .size = n,
                           .timeout = 30s};
        auto g = eep::make_gloo_group(store, o);
        if (r == 2) {  // alive (connections open) but never joins the collective
          while (!done) std::this_thread::sleep_for(10ms);
          return;
        }
        if (r == 0) {
          handle = g->abort_handle();
          armed = true;
        }
        int64_t v[3] = {1, 2, 3}, out[3] = {};
        std::vector<int64_t> bytes(n, 8);
        const auto t0 = std::chrono::steady_clock::now();
        try {
          const std::string o2 = op;
          if (o2 == "allreduce_sum") g->allreduce_sum(v, 3);
          else if (o2 == "alltoallv") g->alltoallv(v, bytes, out, bytes);
          else if (o2 == "alltoall_counts") g->alltoall_counts(v, out);
          else g->allgather(v, out, 1);
        } catch (const eep::Error& e) {
          if (r == 0) {
            code = e.code();
            what = e.what();
            blocked = std::chrono::steady_clock::now() - t0;
            try {
              g->allreduce_sum(v, 3);
            } catch (const eep::Error& e2) {
              later = e2.what();
            }
          }
        }
        if (r == 0) done = true;
      });
    }
    while (!armed) std::this_thread::sleep_for(1ms);
    std::this_thread::sleep_for(300ms);  // rank 0 is blocked by now
    ASSERT_NE(handle, nullptr);
    handle->abort("test: group declared dead");
    for (auto& t : threads) t.join();
    EXPECT_EQ(code, eep::ErrorCode::kAborted) << what;
    EXPECT_NE(what.find("test: group declared dead"), std::string::npos) << what;
    EXPECT_GE(blocked, 250ms);  // it really waited for the peer, then the abort ended it
    EXPECT_LT(blocked, 5s);
    EXPECT_NE(later.find("after an earlier failure"), std::string::npos) << later;
  }
}

TEST(GlooGroup, InvalidOptions) {
  StoreTestServer server;
  StoreClient store(server.address(), 1s);
  EXPECT_THROW(eep::make_gloo_group(store, {.name = "", .rank = 0, .size = 1}), eep::Error);
  EXPECT_THROW(eep::make_gloo_group(store, {.name = "x", .rank = 2, .size = 2}), eep::Error);
  EXPECT_THROW(eep::make_gloo_group(store, {.name = "x", .rank = 0, .size = 0}), eep::Error);
  auto g = eep::make_gloo_group(store, {.name = "solo", .rank = 0, .size = 1});
  std::vector<int64_t> bytes = {5}, wrong = {1, 2};
  char in[5] = "abcd", out[5] = {};
  EXPECT_THROW(g->alltoallv(in, wrong, out, wrong), eep::Error);
  g->alltoallv(in, bytes, out, bytes);
  EXPECT_STREQ(out, "abcd");
  EXPECT_THROW(g->send(in, 1, 0, 0), eep::Error);
  EXPECT_THROW(g->broadcast(in, 1, 1), eep::Error);
}

}  // namespace
