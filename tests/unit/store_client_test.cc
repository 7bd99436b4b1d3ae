#include <atomic>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <zmq.hpp>

#include "eep/store.h"
#include "store_test_server.h"

namespace {

using eep::StoreClient;
using eep::testing::StoreTestServer;
using namespace std::chrono_literals;

TEST(StoreClient, SetGetBasics) {
  StoreTestServer server;
  StoreClient c(server.address(), 5s);
  EXPECT_EQ(c.address(), server.address());
  c.set("a", "1");
  EXPECT_EQ(c.get("a"), "1");
  EXPECT_EQ(c.try_get("a"), "1");
  EXPECT_EQ(c.try_get("nope"), std::nullopt);
  EXPECT_TRUE(c.check({"a"}));
  EXPECT_FALSE(c.check({"a", "b"}));
  EXPECT_TRUE(c.erase("a"));
  EXPECT_FALSE(c.erase("a"));
  c.set("p/1", "x");
  c.set("p/2", "y");
  c.set("q", "z");
  EXPECT_EQ(c.erase_prefix("p/"), 2u);
  EXPECT_TRUE(c.check({"q"}));
}

TEST(StoreClient, BinaryValuesRoundTrip) {
  StoreTestServer server;
  StoreClient c(server.address(), 5s);
  std::string v;
  for (int i = 0; i < 256; ++i) v += static_cast<char>(i);
  v += std::string(3, '\0');
  c.set("bin", v);
  EXPECT_EQ(c.get("bin"), v);
  c.set("empty", "");
  EXPECT_EQ(c.get("empty"), "");
  std::string big(1 << 20, '\0');
  big[12345] = 'x';
  c.set("big", big);
  EXPECT_EQ(c.get("big"), big);
}

TEST(StoreClient, ConcurrentAddsGiveExactTotal) {
  StoreTestServer server;
  constexpr int kClients = 4, kThreadsPerClient = 3, kAdds = 200;
  std::vector<std::unique_ptr<StoreClient>> clients;
  for (int i = 0; i < kClients; ++i) clients.push_back(std::make_unique<StoreClient>(server.address(), 10s));
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i)
    for (int t = 0; t < kThreadsPerClient; ++t)
      threads.emplace_back([&, i] {
        for (int k = 0; k < kAdds; ++k) clients[i]->add("counter", 1);
      });
  for (auto& t : threads) t.join();
  EXPECT_EQ(clients[0]->add("counter", 0), kClients * kThreadsPerClient * kAdds);
  EXPECT_EQ(clients[1]->get("counter"), std::to_string(kClients * kThreadsPerClient * kAdds));
}

TEST(StoreClient, WaitSatisfiedByLaterSet) {
  StoreTestServer server;
  StoreClient waiter(server.address(), 5s), setter(server.address(), 5s);
  std::thread t([&] {
    std::this_thread::sleep_for(100ms);
    setter.set("k1", "a");
    std::this_thread::sleep_for(50ms);
    setter.set("k2", "b");
  });
  auto t0 = std::chrono::steady_clock::now();
  waiter.wait({"k1", "k2"}, 5s);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  t.join();
  // get also waits for a missing key.
  std::thread t2([&] {
    std::this_thread::sleep_for(100ms);
    setter.set("late", "v");
  });
  EXPECT_EQ(waiter.get("late"), "v");
  t2.join();
}

TEST(StoreClient, WaitTimesOut) {
  StoreTestServer server;
  StoreClient c(server.address(), 300ms);
  auto t0 = std::chrono::steady_clock::now();
  try {
    c.wait({"never"}, 200ms);
    FAIL() << "wait returned";
  } catch (const eep::Error& e) {
    EXPECT_EQ(e.code(), eep::ErrorCode::kTimeout);
    EXPECT_NE(std::string(e.what()).find("never"), std::string::npos) << e.what();
  }
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, 190ms);
  EXPECT_LT(took, 2s);
  try {
    c.get("never");
    FAIL();
  } catch (const eep::Error& e) {
    EXPECT_EQ(e.code(), eep::ErrorCode::kTimeout);
  }
  // The client is still usable afterwards.
  c.set("x", "1");
  EXPECT_EQ(c.get("x"), "1");
}

TEST(StoreClient, CompareSetRaceHasOneWinner) {
  StoreTestServer server;
  constexpr int kRacers = 8;
  std::vector<std::unique_ptr<StoreClient>> clients;
  for (int i = 0; i < kRacers; ++i) clients.push_back(std::make_unique<StoreClient>(server.address(), 10s));
  for (int round = 0; round < 5; ++round) {
    std::string key = "leader" + std::to_string(round);
    std::atomic<int> winners{0};
    std::vector<std::thread> threads;
    std::vector<std::string> seen(kRacers);
    for (int i = 0; i < kRacers; ++i)
      threads.emplace_back([&, i] {
        std::string me = "rank" + std::to_string(i);
        auto now = clients[i]->compare_set(key, std::nullopt, me);
        ASSERT_TRUE(now.has_value());
        seen[i] = *now;
        if (*now == me) ++winners;
      });
    for (auto& t : threads) t.join();
    EXPECT_EQ(winners.load(), 1);
    for (const auto& s : seen) EXPECT_EQ(s, seen[0]);  // everyone sees the winner
  }
  // Swap with the right expectation works; with a wrong one does not.
  auto cur = clients[0]->get("leader0");
  EXPECT_EQ(clients[0]->compare_set("leader0", std::string("bogus"), "z"), cur);
  EXPECT_EQ(clients[0]->compare_set("leader0", cur, "z"), "z");
  EXPECT_EQ(clients[0]->compare_set("absent", std::string("x"), "y"), std::nullopt);
}

TEST(StoreClient, ServerErrorsBecomeExceptions) {
  StoreTestServer server;
  StoreClient c(server.address(), 5s);
  c.set("t", "text");
  try {
    c.add("t", 1);
    FAIL();
  } catch (const eep::Error& e) {
    EXPECT_EQ(e.code(), eep::ErrorCode::kInvalidArgument);
  }
}

TEST(StoreClient, ServerGoneTimesOutCleanly) {
  auto server = std::make_unique<StoreTestServer>();
  StoreClient c(server->address(), 300ms);
  c.set("a", "1");
  server.reset();
  auto t0 = std::chrono::steady_clock::now();
  try {
    c.set("a", "2");
    FAIL();
  } catch (const eep::Error& e) {
    EXPECT_EQ(e.code(), eep::ErrorCode::kTimeout);
    EXPECT_NE(std::string(e.what()).find("no answer"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_THROW(c.try_get("a"), eep::Error);
}

TEST(StoreClient, TimesOutNoEarlierThanItsTimeout) {
  zmq::context_t ctx(1);
  zmq::socket_t silent(ctx, zmq::socket_type::router);  // takes requests, never answers
  silent.set(zmq::sockopt::linger, 0);
  silent.bind("tcp://127.0.0.1:*");
  for (int ms = 1; ms <= 8; ++ms) {
    StoreClient c(silent.get(zmq::sockopt::last_endpoint), std::chrono::milliseconds(ms));
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_THROW(c.set("a", "1"), eep::Error);
    EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(ms)) << ms << " ms";
  }
}

TEST(StoreClient, NoServerAtAll) {
  StoreClient c("tcp://127.0.0.1:1", 200ms);  // nothing listens on port 1
  EXPECT_THROW(c.add("x", 1), eep::Error);
  EXPECT_THROW(StoreClient("not-an-endpoint"), eep::Error);
}

}  // namespace
