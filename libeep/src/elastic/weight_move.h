// The weight-moving step of an elastic transition (design.md §4, prepare), as a function of a
// backend and a transfer group: every member executes its part of plan_transfers in the plan's
// global order with blocking send/recv. Engine::prepare_worker (engine_elastic.cc) runs it,
// and eep-bench transfer times the same code.
#pragma once

#include <atomic>
#include <cstddef>
#include <map>
#include <utility>
#include <vector>

#include "eep/backend.h"
#include "eep/comm.h"
#include "eep/elastic.h"

namespace eep {

struct MovedWeights {
  // Experts this member received, (layer, expert) -> gate|up|down, for Backend::stage_experts.
  // Dense tensors received go straight into the backend (set_dense).
  std::map<std::pair<int, int>, std::vector<float>> received;
  size_t bytes_in = 0, bytes_out = 0;
  size_t transfers = 0;  // this member sent or received this many tensors
};

// xfer is a group over t.union_members(); me is this member's rank in it. Stops between
// transfers once *cancelled is true (the result is then incomplete). Throws what the group
// throws when a peer is gone, Error(kInternal) when asked to send an expert it does not hold.
MovedWeights move_weights(Backend& backend, Group& xfer, const Transition& t, int me,
                          const std::atomic<bool>* cancelled = nullptr);

}  // namespace eep
