// Elastic transitions (design.md §4): what moves where when the group changes size or placement.
// The plan is a pure function of the old and new membership and placement, so every engine
// computes the same one and executes its part without further coordination.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "eep/placement.h"

namespace eep {

// Membership of one transition. Engines are named by their registry id; ranks are positions.
struct Transition {
  int64_t generation = 0;               // of the new group
  std::vector<int64_t> old_members;     // engine ids by old rank
  std::vector<int64_t> new_members;     // engine ids by new rank
  Placement old_placement;
  Placement new_placement;
  // Old members first (old rank order), then members that only the new group has. Ranks in the
  // transfer group are positions in this list.
  std::vector<int64_t> union_members() const;
  int old_rank_of(int64_t engine) const;  // -1 if not an old member
  int new_rank_of(int64_t engine) const;  // -1 if removed
  int union_rank_of(int64_t engine) const;
};

struct WeightTransfer {
  enum class Kind { kDense, kExpert } kind = Kind::kExpert;
  std::string tensor;  // dense: the tensor name
  int layer = -1;      // expert: layer and logical expert
  int expert = -1;
  int src = -1;        // union ranks
  int dst = -1;
};

// Every transfer of a transition, in one global order. Engines execute the transfers they take
// part in, in this order, with blocking send/recv: the earliest unfinished transfer always has
// both parties ready, so the schedule cannot deadlock.
// - New engines (not old members) receive every dense tensor, each from an old member chosen
//   round-robin so the senders share the load.
// - A new member receives each expert its new slots need and it does not already hold (an old
//   member holds what its old slots held), once per (layer, expert), from an old member holding
//   it, chosen round-robin among the holders.
std::vector<WeightTransfer> plan_transfers(const Transition& t,
                                           const std::vector<std::string>& dense_tensors);

}  // namespace eep
