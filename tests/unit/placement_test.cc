#include <gtest/gtest.h>

#include <random>
#include <set>

#include "eep/elastic.h"
#include "eep/placement.h"
#include "placement_checks.h"

namespace {

using eep::testing::expect_valid;

// Experts that must be fetched over the network by a transition.
size_t num_moves(const eep::Placement& from, const eep::Placement& to, std::vector<int> keep) {
  eep::Transition t;
  t.old_placement = from;
  t.new_placement = to;
  for (int r = 0; r < from.num_ranks; ++r) t.old_members.push_back(r);
  int next_id = from.num_ranks;
  for (int k : keep) t.new_members.push_back(k >= 0 ? k : next_id++);
  return eep::plan_transfers(t, {}).size();
}

TEST(Placement, RoundRobinIsValid) {
  for (int ranks : {1, 2, 3, 4, 8})
    expect_valid(eep::Placement::round_robin(3, 16, ranks * ((16 + ranks - 1) / ranks + 1), ranks));
}

TEST(Placement, ResizeIsValidForGrowShrinkAndUneven) {
  auto p2 = eep::Placement::round_robin(4, 16, 20, 2);
  expect_valid(eep::Placement::resize(p2, {0, 1, -1, -1}, 20));    // 2 -> 4
  expect_valid(eep::Placement::resize(p2, {0, 1, -1}, 21));        // 2 -> 3
  expect_valid(eep::Placement::resize(p2, {1}, 20));               // 2 -> 1, rank 0 leaves
  auto p4 = eep::Placement::round_robin(4, 16, 24, 4);
  expect_valid(eep::Placement::resize(p4, {0, 2}, 24));            // 4 -> 2, ranks 1 and 3 leave
}

TEST(Placement, ResizeMovesFewerExpertsThanRoundRobin) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 20; ++trial) {
    const int experts = 8 << (trial % 3), ranks = 2 + trial % 3, extra = trial % 4;
    const int slots = (experts + extra + ranks - 1) / ranks * ranks;
    auto cur = eep::Placement::round_robin(6, experts, slots, ranks);
    // Up by one or two, and down by one.
    for (int delta : {1, 2, -1}) {
      const int n = ranks + delta;
      if (n < 1) continue;
      std::vector<int> keep;
      for (int r = 0; r < std::min(ranks, n); ++r) keep.push_back(r);
      while (static_cast<int>(keep.size()) < n) keep.push_back(-1);
      const int new_slots = (experts + extra + n - 1) / n * n;
      auto sticky = eep::Placement::resize(cur, keep, new_slots);
      auto rr = eep::Placement::round_robin(6, experts, new_slots, n);
      expect_valid(sticky);
      EXPECT_LE(num_moves(cur, sticky, keep), num_moves(cur, rr, keep))
          << experts << " experts, " << ranks << " -> " << n;
    }
  }
}

TEST(Placement, ResizeKeepsEverythingWhenShrinkingIsNotNeeded) {
  auto p = eep::Placement::round_robin(2, 8, 8, 2);
  auto same = eep::Placement::resize(p, {0, 1}, 8);
  EXPECT_EQ(same.phy2log, p.phy2log);
  EXPECT_EQ(num_moves(p, same, {0, 1}), 0u);
}

}  // namespace
