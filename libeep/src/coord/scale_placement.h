// The target placement of a change of size (design.md §4): load-aware through eep::eplb's
// movement-aware mode when expert load has been recorded, else Placement::resize.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "eep/placement.h"

namespace eep {

struct ScalePlacement {
  Placement placement;
  std::string policy;             // "eplb" or "resize"
  std::string why;                // why resize was used ("no expert load recorded yet", ...)
  double balancedness = 0;        // of `placement` under the recorded load (1 = perfect)
  double resize_balancedness = 0; // of Placement::resize's placement under the same load
  int64_t moved_slots = 0;        // slots whose expert differs from what the rank held there
  double plan_ms = 0;             // time spent planning
};

// Placement for `keep.size()` ranks of `num_slots` slots, new rank r inheriting old rank keep[r]
// (-1: a new engine), as Placement::resize. `load` is [layers][experts] tokens routed to each
// logical expert on the current group (empty or all zero: no load recorded). With load, the plan
// comes from eplb::rebalance with the current placement and keep (movement-aware); it is checked
// against the invariants the transition needs (every expert has a replica, equal slots per rank,
// the same layers and experts), and resize is used instead when planning fails. Never throws for
// a usable `old`/`keep`/`num_slots` beyond what Placement::resize throws.
ScalePlacement plan_scale(const Placement& old, const std::vector<int>& keep, int num_slots,
                          const std::vector<std::vector<int64_t>>& load);

}  // namespace eep
