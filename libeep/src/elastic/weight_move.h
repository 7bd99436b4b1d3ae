// The weight-moving step of an elastic transition (design.md §4, prepare), as a function of a
// backend and a transfer group: every member executes its part of plan_transfers in the plan's
// global order, with blocking send/recv through the host (fp32; any backend and group) or in
// batches between device memory (move_weights_device: GPU backends over NCCL). Engine::prepare_worker (engine_elastic.cc) runs it,
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

// The same transfers between device memory (Backend::device_weights, a group with
// device_buffers): each tensor goes from the sender's weights straight into the receiver's
// (dense tensors in place, experts into slots staged by begin_staging), in their stored form,
// in batches of Group::send_recv_batch. The batches are cuts of the plan's global order (every
// member cuts at the same transfers), so no member waits on a transfer of a later batch.
// group_rank[u]: the rank in `group` of union member u (every member that sends or receives
// must be in the group). new_rank >= 0: this member stages t.new_placement's slots for that
// rank (begin_staging ... end_staging; MovedWeights::received stays empty, nothing is left for
// stage_experts); -1: it only sends. Checks *cancelled between batches.
MovedWeights move_weights_device(Backend& backend, Group& group, const Transition& t, int me,
                                 const std::vector<int>& group_rank, int new_rank,
                                 const std::atomic<bool>* cancelled = nullptr);
// Transfers of the plan per send_recv_batch call (an expert is two operations, gate|up and
// down, of ~9.4 MB together at Qwen3-30B-A3B sizes).
constexpr size_t kDeviceTransfersPerBatch = 512;

}  // namespace eep
