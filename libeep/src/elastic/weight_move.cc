#include "elastic/weight_move.h"

#include "eep/common.h"
#include "eep/model.h"

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

}  // namespace eep
