// CpuBackend's side of elastic transitions: weights by name for peer transfer, and expert slots
// staged next to the serving ones until commit.
#include <cstring>
#include <utility>

#include "eep/common.h"
#include "engine/cpu_backend.h"

namespace eep {

namespace {
// Dense tensors of one layer, in the order of DenseLayer's fields.
const char* kLayerFields[] = {"input_layernorm",    "self_attn.q_proj",  "self_attn.k_proj",
                              "self_attn.v_proj",   "self_attn.o_proj",  "self_attn.q_norm",
                              "self_attn.k_norm",   "post_attention_layernorm", "mlp.gate"};
}  // namespace

std::vector<std::string> CpuBackend::dense_tensor_names() const {
  return eep::dense_tensor_names(cfg_);
}

std::vector<float>* CpuBackend::dense_ptr(const std::string& name) {
  if (name == tensor_name_embed()) return &embed_;
  if (name == tensor_name_final_norm()) return &final_norm_;
  if (name == tensor_name_lm_head()) return &lm_head_;
  if (layers_.size() != static_cast<size_t>(cfg_.num_layers)) layers_.resize(cfg_.num_layers);
  for (int l = 0; l < cfg_.num_layers; ++l) {
    DenseLayer& d = layers_[l];
    std::vector<float>* fields[] = {&d.input_norm, &d.wq,     &d.wk,        &d.wv,    &d.wo,
                                    &d.q_norm,     &d.k_norm, &d.post_norm, &d.router};
    for (size_t i = 0; i < std::size(kLayerFields); ++i)
      if (name == tensor_name_layer(l, kLayerFields[i])) return fields[i];
  }
  throw Error(ErrorCode::kNotFound, "no dense tensor named " + name);
}

void CpuBackend::get_dense(const std::string& name, std::vector<float>& out) const {
  out = *dense_ptr(name);
}

void CpuBackend::set_dense(const std::string& name, std::vector<float> data) {
  *dense_ptr(name) = std::move(data);
}

bool CpuBackend::get_expert(int layer, int expert, std::vector<float>& out) const {
  if (layer < 0 || layer >= static_cast<int>(slots_.size())) return false;
  for (const ExpertSlot& s : slots_[layer]) {
    if (s.expert != expert || s.gate.empty()) continue;
    out.clear();
    out.insert(out.end(), s.gate.begin(), s.gate.end());
    out.insert(out.end(), s.up.begin(), s.up.end());
    out.insert(out.end(), s.down.begin(), s.down.end());
    return true;
  }
  return false;
}

void CpuBackend::stage_experts(const Placement& placement, int rank,
                               const std::map<std::pair<int, int>, std::vector<float>>& received) {
  const size_t n = static_cast<size_t>(cfg_.hidden_size) * cfg_.moe_intermediate_size;
  const int spr = placement.slots_per_rank();
  std::vector<std::vector<ExpertSlot>> next(cfg_.num_layers, std::vector<ExpertSlot>(spr));
  std::vector<float> flat;
  for (int l = 0; l < cfg_.num_layers; ++l) {
    for (int s = 0; s < spr; ++s) {
      const int expert = placement.phy2log[l][rank * spr + s];
      ExpertSlot& slot = next[l][s];
      slot.expert = expert;
      auto it = received.find({l, expert});
      const std::vector<float>* src = nullptr;
      if (it != received.end()) {
        src = &it->second;
      } else if (get_expert(l, expert, flat)) {
        src = &flat;
      }
      EEP_CHECK(src != nullptr && src->size() == 3 * n, ErrorCode::kInternal,
                "staging layer " + std::to_string(l) + " expert " + std::to_string(expert) +
                    ": weights neither held locally nor received");
      slot.gate.assign(src->begin(), src->begin() + n);
      slot.up.assign(src->begin() + n, src->begin() + 2 * n);
      slot.down.assign(src->begin() + 2 * n, src->end());
    }
  }
  staged_slots_ = std::move(next);
  staged_placement_ = placement;
  staged_rank_ = rank;
}

void CpuBackend::commit_staged() {
  EEP_CHECK(staged_rank_ >= 0, ErrorCode::kInternal, "commit without staged experts");
  previous_slots_ = std::exchange(slots_, std::move(staged_slots_));
  previous_placement_ = std::exchange(placement_, std::move(staged_placement_));
  previous_rank_ = std::exchange(rank_, staged_rank_);
  staged_slots_.clear();
  staged_rank_ = -1;
  load_.assign(cfg_.num_layers, std::vector<int64_t>(placement_.num_slots, 0));
}

void CpuBackend::restore_previous() {
  EEP_CHECK(previous_rank_ >= 0, ErrorCode::kInternal, "restore without previous slots");
  slots_ = std::move(previous_slots_);
  placement_ = std::move(previous_placement_);
  rank_ = previous_rank_;
  release_previous();
  load_.assign(cfg_.num_layers, std::vector<int64_t>(placement_.num_slots, 0));
}

void CpuBackend::release_previous() {
  previous_slots_ = {};
  previous_placement_ = Placement();
  previous_rank_ = -1;
}

void CpuBackend::discard_staged() {
  staged_slots_.clear();
  staged_rank_ = -1;
}

}  // namespace eep
