#include <gtest/gtest.h>

#include "eep/proto.h"
#include "eep/store.h"

namespace {

using eep::StoreState;
using eep::StoreWaiters;
using nlohmann::json;
using namespace std::chrono_literals;

json bin(const std::string& s) { return json::binary(std::vector<uint8_t>(s.begin(), s.end())); }
std::string bytes(const json& j) { return std::string(j.get_binary().begin(), j.get_binary().end()); }

TEST(StoreState, SetGetErase) {
  StoreState s;
  EXPECT_EQ(s.get("a"), std::nullopt);
  s.set("a", std::string("x\0y", 3));
  EXPECT_EQ(s.get("a"), std::string("x\0y", 3));
  EXPECT_EQ(s.size(), 1u);
  EXPECT_TRUE(s.erase("a"));
  EXPECT_FALSE(s.erase("a"));
  EXPECT_EQ(s.size(), 0u);
}

TEST(StoreState, Add) {
  StoreState s;
  EXPECT_EQ(s.add("n", 5), 5);
  EXPECT_EQ(s.add("n", -7), -2);
  EXPECT_EQ(s.get("n"), "-2");
  s.set("t", "not a number");
  EXPECT_THROW(s.add("t", 1), eep::Error);
  s.set("m", std::to_string(INT64_MAX));
  EXPECT_THROW(s.add("m", 1), eep::Error);
}

TEST(StoreState, CheckAndPrefix) {
  StoreState s;
  s.set("g1/0", "a");
  s.set("g1/1", "b");
  s.set("g10/0", "c");
  s.set("h", "d");
  EXPECT_TRUE(s.check({"g1/0", "g1/1"}));
  EXPECT_FALSE(s.check({"g1/0", "g1/2"}));
  EXPECT_TRUE(s.check({}));
  EXPECT_EQ(s.erase_prefix("g1/"), 2u);
  EXPECT_EQ(s.size(), 2u);
  EXPECT_EQ(s.erase_prefix("zzz"), 0u);
}

TEST(StoreState, CompareSet) {
  StoreState s;
  // Absent key, expect absent: sets.
  EXPECT_EQ(s.compare_set("k", std::nullopt, "v1"), "v1");
  // Expect absent but present: unchanged, returns current.
  EXPECT_EQ(s.compare_set("k", std::nullopt, "v2"), "v1");
  // Wrong expectation: unchanged.
  EXPECT_EQ(s.compare_set("k", std::string("nope"), "v2"), "v1");
  EXPECT_EQ(s.compare_set("k", std::string("v1"), "v2"), "v2");
  // Absent key does not match an empty expected value.
  EXPECT_EQ(s.compare_set("other", std::string(""), "x"), std::nullopt);
  EXPECT_EQ(s.get("other"), std::nullopt);
}

TEST(StoreState, VersionMovesOnMutation) {
  StoreState s;
  auto v0 = s.version();
  s.set("a", "1");
  EXPECT_GT(s.version(), v0);
  auto v1 = s.version();
  s.get("a");
  s.check({"a"});
  EXPECT_EQ(s.version(), v1);
}

json req(json fields) {
  fields["v"] = 1;
  fields["type"] = "store";
  fields["seq"] = 7;
  return fields;
}

TEST(StoreHandler, Ops) {
  StoreState s;
  auto r = eep::handle_store_request(s, req({{"op", "set"}, {"key", "k"}, {"value", bin(std::string("\0\1", 2))}}));
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["status"], "ok");
  EXPECT_EQ((*r)["type"], "store_reply");
  EXPECT_EQ((*r)["seq"], 7);
  r = eep::handle_store_request(s, req({{"op", "get"}, {"key", "k"}}));
  ASSERT_TRUE(r);
  EXPECT_EQ(bytes((*r)["value"]), std::string("\0\1", 2));
  // str values are accepted too.
  r = eep::handle_store_request(s, req({{"op", "set"}, {"key", "s"}, {"value", "text"}}));
  EXPECT_EQ(s.get("s"), "text");
  // Missing key: not answerable yet; nowait answers found=false.
  EXPECT_FALSE(eep::handle_store_request(s, req({{"op", "get"}, {"key", "nope"}})));
  r = eep::handle_store_request(s, req({{"op", "get"}, {"key", "nope"}, {"nowait", true}}));
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["found"], false);
  r = eep::handle_store_request(s, req({{"op", "add"}, {"key", "n"}, {"delta", 3}}));
  EXPECT_EQ((*r)["value"], 3);
  r = eep::handle_store_request(s, req({{"op", "check"}, {"keys", {"k", "n"}}}));
  EXPECT_EQ((*r)["present"], true);
  EXPECT_FALSE(eep::handle_store_request(s, req({{"op", "wait"}, {"keys", {"k", "zz"}}})));
  r = eep::handle_store_request(s, req({{"op", "wait"}, {"keys", {"k", "n"}}}));
  EXPECT_EQ((*r)["status"], "ok");
  r = eep::handle_store_request(s, req({{"op", "compare_set"}, {"key", "c"}, {"expected", nullptr}, {"desired", bin("d")}}));
  EXPECT_EQ((*r)["found"], true);
  EXPECT_EQ(bytes((*r)["value"]), "d");
  r = eep::handle_store_request(s, req({{"op", "delete"}, {"key", "c"}}));
  EXPECT_EQ((*r)["existed"], true);
  r = eep::handle_store_request(s, req({{"op", "erase_prefix"}, {"prefix", ""}}));
  EXPECT_EQ((*r)["count"], 3);  // k, s, n
}

TEST(StoreHandler, BadRequestsGetErrorReplies) {
  StoreState s;
  auto code = [&](json r) {
    auto reply = eep::handle_store_request(s, r);
    EXPECT_TRUE(reply);
    EXPECT_EQ((*reply)["status"], "error");
    return (*reply)["code"].get<std::string>();
  };
  EXPECT_EQ(code(req({{"op", "frobnicate"}})), "invalid_argument");
  EXPECT_EQ(code(req({{"key", "k"}})), "protocol");
  EXPECT_EQ(code(req({{"op", "set"}, {"key", "k"}})), "protocol");
  EXPECT_EQ(code(req({{"op", "set"}, {"key", 5}, {"value", "x"}})), "protocol");
  EXPECT_EQ(code(req({{"op", "add"}, {"key", "k"}, {"delta", "x"}})), "protocol");
  EXPECT_EQ(code(req({{"op", "wait"}, {"keys", {"a"}}, {"timeout_ms", -1}})), "invalid_argument");
  s.set("t", "text");
  EXPECT_EQ(code(req({{"op", "add"}, {"key", "t"}, {"delta", 1}})), "invalid_argument");
  EXPECT_EQ(code(json::array()), "protocol");
}

TEST(StoreWaiters, AnsweredAfterSetOrTimedOut) {
  StoreState s;
  StoreWaiters w;
  auto t0 = eep::Clock::now();
  EXPECT_FALSE(w.handle(s, "A", req({{"op", "wait"}, {"keys", {"x"}}, {"timeout_ms", 1000}}), t0));
  EXPECT_FALSE(w.handle(s, "B", req({{"op", "get"}, {"key", "x"}, {"timeout_ms", 1000}}), t0));
  EXPECT_FALSE(w.handle(s, "C", req({{"op", "get"}, {"key", "y"}, {"timeout_ms", 100}}), t0));
  EXPECT_EQ(w.size(), 3u);
  EXPECT_EQ(w.next_deadline(), t0 + 100ms);
  EXPECT_TRUE(w.poll(s, t0 + 10ms).empty());
  // A mutation answers both waiters on x.
  auto r = w.handle(s, "D", req({{"op", "set"}, {"key", "x"}, {"value", bin("1")}}), t0 + 20ms);
  ASSERT_TRUE(r);
  auto due = w.poll(s, t0 + 20ms);
  ASSERT_EQ(due.size(), 2u);
  EXPECT_EQ(due[0].identity, "A");
  EXPECT_EQ(due[0].body["status"], "ok");
  EXPECT_EQ(due[1].identity, "B");
  EXPECT_EQ(bytes(due[1].body["value"]), "1");
  // C times out at its deadline.
  EXPECT_TRUE(w.poll(s, t0 + 99ms).empty());
  due = w.poll(s, t0 + 100ms);
  ASSERT_EQ(due.size(), 1u);
  EXPECT_EQ(due[0].identity, "C");
  EXPECT_EQ(due[0].body["code"], "timeout");
  EXPECT_EQ(w.size(), 0u);
  EXPECT_EQ(w.next_deadline(), std::nullopt);
}

TEST(StoreWaiters, DropForgetsAPeer) {
  StoreState s;
  StoreWaiters w;
  w.handle(s, "A", req({{"op", "wait"}, {"keys", {"x"}}}));
  w.handle(s, "B", req({{"op", "wait"}, {"keys", {"x"}}}));
  w.drop("A");
  EXPECT_EQ(w.size(), 1u);
}

}  // namespace
