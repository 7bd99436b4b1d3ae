// The coordinator's target placement for a change of size (libeep/src/coord/scale_placement.cc):
// eplb's movement-aware mode under recorded load, Placement::resize without; both keep what the
// transition relies on.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <random>

#include "coord/scale_placement.h"
#include "eep/elastic.h"
#include "placement_checks.h"

namespace {

using eep::Placement;

// The shape the transition needs (finalize checks equal slots per rank and a replica for every
// expert), plus the shared placement checks.
void expect_valid(const Placement& p, int ranks, int slots) {
  ASSERT_EQ(p.num_ranks, ranks);
  ASSERT_EQ(p.num_slots, slots);
  Placement copy = p;
  EXPECT_NO_THROW(copy.finalize());
  eep::testing::expect_valid(p);
}

// Per layer, the hottest expert takes most tokens (Zipf-like).
std::vector<std::vector<int64_t>> skewed(int layers, int experts, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<int64_t>> load(layers, std::vector<int64_t>(experts));
  for (auto& row : load) {
    std::vector<int> order(experts);
    for (int e = 0; e < experts; ++e) order[e] = e;
    std::shuffle(order.begin(), order.end(), rng);
    for (int i = 0; i < experts; ++i) row[order[i]] = 100000 / (i + 1) + static_cast<int>(rng() % 50);
  }
  return load;
}

TEST(ScalePlacement, WithoutLoadIsResize) {
  Placement old = Placement::round_robin(4, 8, 8, 2);
  auto sp = eep::plan_scale(old, {0, 1, -1, -1}, 16, {});
  EXPECT_EQ(sp.policy, "resize");
  EXPECT_EQ(sp.why, "no expert load recorded yet");
  EXPECT_EQ(sp.placement.phy2log, Placement::resize(old, {0, 1, -1, -1}, 16).phy2log);
  // All-zero load counts as none.
  auto zero = eep::plan_scale(old, {0, 1, -1, -1}, 16, std::vector<std::vector<int64_t>>(4, std::vector<int64_t>(8)));
  EXPECT_EQ(zero.policy, "resize");
}

TEST(ScalePlacement, SkewedScaleUpIsBetterBalancedThanResize) {
  Placement old = Placement::round_robin(4, 8, 8, 2);
  auto load = skewed(4, 8, 1);
  auto sp = eep::plan_scale(old, {0, 1, -1, -1}, 16, load);
  ASSERT_EQ(sp.policy, "eplb") << sp.why;
  expect_valid(sp.placement, 4, 16);
  EXPECT_GT(sp.balancedness, sp.resize_balancedness + 0.05);
  EXPECT_GT(sp.resize_balancedness, 0.0);
  // The transition plans transfers from it (every new slot has a holder).
  eep::Transition t;
  t.old_placement = old;
  t.new_placement = sp.placement;
  t.old_members = {10, 11};
  t.new_members = {10, 11, 12, 13};
  EXPECT_NO_THROW(eep::plan_transfers(t, {}));
}

TEST(ScalePlacement, ScaleDownKeepsTheRemainingRanksMapping) {
  // 4 -> 3 without rank 1: new ranks 0, 1, 2 inherit old ranks 0, 2, 3.
  Placement old = Placement::round_robin(3, 16, 24, 4);
  auto load = skewed(3, 16, 2);
  const std::vector<int> keep = {0, 2, 3};
  auto sp = eep::plan_scale(old, keep, 24, load);
  ASSERT_EQ(sp.policy, "eplb") << sp.why;
  expect_valid(sp.placement, 3, 24);
  EXPECT_GE(sp.balancedness, sp.resize_balancedness - 1e-9);
  // Movement-aware: most slots of the kept ranks keep their expert.
  EXPECT_LT(sp.moved_slots, 3 * 24);
  // Same (any) shape error falls back to resize and says why.
  auto bad = eep::plan_scale(old, keep, 24, skewed(2, 16, 3));
  EXPECT_EQ(bad.policy, "resize");
  EXPECT_NE(bad.why.find("eplb failed"), std::string::npos) << bad.why;
  expect_valid(bad.placement, 3, 24);
}

TEST(ScalePlacement, RandomSizesStayValid) {
  std::mt19937 rng(7);
  int by_eplb = 0;
  for (int iter = 0; iter < 30; ++iter) {
    const int experts = 4 + static_cast<int>(rng() % 29);
    const int from = 1 + static_cast<int>(rng() % 6), to = 1 + static_cast<int>(rng() % 6);
    const int redundant = static_cast<int>(rng() % 5);
    const int old_slots = (experts + redundant + from - 1) / from * from;
    const int new_slots = (experts + redundant + to - 1) / to * to;
    Placement old = Placement::round_robin(2, experts, old_slots, from);
    std::vector<int> keep;
    for (int r = 0; r < from && static_cast<int>(keep.size()) < to; ++r) keep.push_back(r);
    while (static_cast<int>(keep.size()) < to) keep.push_back(-1);
    auto sp = eep::plan_scale(old, keep, new_slots, skewed(2, experts, iter));
    SCOPED_TRACE(std::to_string(experts) + " experts, " + std::to_string(from) + " -> " +
                 std::to_string(to) + " ranks, " + sp.policy + " " + sp.why);
    expect_valid(sp.placement, to, new_slots);
    by_eplb += sp.policy == "eplb";
  }
  EXPECT_GE(by_eplb, 20) << "eplb planned too few of the random cases";
}

// Cost of planning at a large size (printed; the coordinator plans off its event loop).
TEST(ScalePlacement, CostAtLargeSize) {
  Placement old = Placement::round_robin(58, 256, 288, 32);
  std::vector<int> keep(64, -1);
  for (int r = 0; r < 32; ++r) keep[r] = r;
  auto sp = eep::plan_scale(old, keep, 320, skewed(58, 256, 4));
  EXPECT_EQ(sp.policy, "eplb") << sp.why;
  std::printf("58 layers x 256 experts, 32 -> 64 ranks (288 -> 320 slots): %s in %.0f ms, "
              "balancedness %.4f (resize %.4f), %lld slots rewritten\n",
              sp.policy.c_str(), sp.plan_ms, sp.balancedness, sp.resize_balancedness,
              static_cast<long long>(sp.moved_slots));
}

}  // namespace
