#include "elastic/weight_move.h"

#include "eep/common.h"
#include "eep/model.h"

#include <algorithm>

namespace eep {

MovedWeights move_weights(Backend& backend, Group& xfer, const Transition& t, int me,
                          const std::atomic<bool>* cancelled) {
  const ModelConfig& cfg = backend.config();
  std::map<std::string, size_t> numel;
  for (const auto& [name, shape] : tensor_layout(cfg)) {
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    numel[name] = n;
  }
  const size_t expert_numel = 3 * static_cast<size_t>(cfg.hidden_size) * cfg.moe_intermediate_size;
  MovedWeights out;
  std::vector<float> buf;
  uint32_t tag = 0;
  for (const WeightTransfer& w : plan_transfers(t, backend.dense_tensor_names())) {
    ++tag;
    if (cancelled && *cancelled) break;
    const bool dense = w.kind == WeightTransfer::Kind::kDense;
    if (w.src == me) {
      if (dense) {
        backend.get_dense(w.tensor, buf);
      } else {
        EEP_CHECK(backend.get_expert(w.layer, w.expert, buf), ErrorCode::kInternal,
                  "asked to send an expert this engine does not hold");
      }
      xfer.send(buf.data(), buf.size() * sizeof(float), w.dst, tag);
      out.bytes_out += buf.size() * sizeof(float);
      ++out.transfers;
    } else if (w.dst == me) {
      buf.assign(dense ? numel.at(w.tensor) : expert_numel, 0.0f);
      xfer.recv(buf.data(), buf.size() * sizeof(float), w.src, tag);
      out.bytes_in += buf.size() * sizeof(float);
      ++out.transfers;
      if (dense) {
        backend.set_dense(w.tensor, std::move(buf));
      } else {
        out.received[{w.layer, w.expert}] = std::move(buf);
      }
      buf = {};
    }
  }
  return out;
}

MovedWeights move_weights_device(Backend& backend, Group& group, const Transition& t, int me,
                                 const std::vector<int>& group_rank, int new_rank,
                                 const std::atomic<bool>* cancelled) {
  EEP_CHECK(backend.device_weights() && group.device_buffers(), ErrorCode::kInternal,
            "device weight transfers need a device backend and a device group");
  const std::vector<WeightTransfer> plan = plan_transfers(t, backend.dense_tensor_names());
  auto peer = [&](int union_rank) {
    EEP_CHECK(union_rank >= 0 && union_rank < static_cast<int>(group_rank.size()) &&
                  group_rank[union_rank] >= 0,
              ErrorCode::kInternal,
              "device transfer with member " + std::to_string(union_rank) + " outside the group");
    return group_rank[union_rank];
  };
  if (new_rank >= 0) backend.begin_staging(t.new_placement, new_rank);
  MovedWeights out;
  std::vector<P2POp> ops;
  for (size_t first = 0; first < plan.size(); first += kDeviceTransfersPerBatch) {
    if (cancelled && *cancelled) return out;
    ops.clear();
    const size_t last = std::min(plan.size(), first + kDeviceTransfersPerBatch);
    for (size_t i = first; i < last; ++i) {
      const WeightTransfer& w = plan[i];
      if (w.src != me && w.dst != me) continue;
      const bool dense = w.kind == WeightTransfer::Kind::kDense;
      const bool send = w.src == me;
      std::vector<Backend::DeviceRegion> regions;
      if (dense) {
        regions = {backend.dense_region(w.tensor)};
      } else if (send) {
        regions = backend.expert_regions(w.layer, w.expert);
        EEP_CHECK(!regions.empty(), ErrorCode::kInternal,
                  "asked to send an expert this engine does not hold");
      } else {
        EEP_CHECK(new_rank >= 0, ErrorCode::kInternal, "a leaving member asked to receive");
        regions = backend.staged_expert_regions(w.layer, w.expert);
      }
      for (const Backend::DeviceRegion& r : regions) {
        ops.push_back(P2POp{send ? P2POp::Kind::kSend : P2POp::Kind::kRecv, r.data, r.bytes,
                            peer(send ? w.dst : w.src)});
        (send ? out.bytes_out : out.bytes_in) += r.bytes;
      }
      ++out.transfers;
    }
    // Members with no part in this cut still agree on it (nothing to wait for).
    if (!ops.empty()) group.send_recv_batch(ops);
  }
  if (new_rank >= 0) backend.end_staging();
  return out;
}

}  // namespace eep
