// Checks shared by the placement tests (placement_test, coord_scale_placement_test).
#pragma once

#include <gtest/gtest.h>

#include <set>

#include "eep/placement.h"

namespace eep::testing {

// Every expert has a replica, every rank the same number of slots, no rank two replicas of one
// expert when slots per rank <= experts.
inline void expect_valid(const Placement& p) {
  const int spr = p.slots_per_rank();
  for (int l = 0; l < p.num_layers; ++l) {
    std::set<int> seen(p.phy2log[l].begin(), p.phy2log[l].end());
    EXPECT_EQ(static_cast<int>(seen.size()), p.num_experts) << "layer " << l;
    if (spr > p.num_experts) continue;
    for (int r = 0; r < p.num_ranks; ++r) {
      std::set<int> on_rank(p.phy2log[l].begin() + r * spr, p.phy2log[l].begin() + (r + 1) * spr);
      EXPECT_EQ(static_cast<int>(on_rank.size()), spr) << "layer " << l << " rank " << r;
    }
  }
}

}  // namespace eep::testing
