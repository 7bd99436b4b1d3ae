// CudaBackend's side of elastic transitions: dense tensors and experts by name for peer
// transfer (fp32 on the host side of the interface, bf16 on the device), or as device regions
// that an NCCL group moves in their stored form; and expert slots staged next to the serving
// ones until commit. Runs on the prepare worker's thread and stream.
#include <cstdlib>
#include <cstring>
#include <utility>

#include "cuda/cuda_backend.h"
#include "eep/model.h"
#include "eep_kernels.h"

namespace eep::cuda {

namespace {

void bf16_to_host_f32(const bf16* dev, size_t n, std::vector<float>& out, size_t at,
                      cudaStream_t stream) {
  std::vector<bf16> tmp(n);
  EEP_CU(cudaMemcpyAsync(tmp.data(), dev, n * sizeof(bf16), cudaMemcpyDeviceToHost, stream));
  EEP_CU(cudaStreamSynchronize(stream));
  for (size_t i = 0; i < n; ++i) out[at + i] = __bfloat162float(tmp[i]);
}

}  // namespace

std::vector<std::string> CudaBackend::dense_tensor_names() const {
  return eep::dense_tensor_names(cfg_);
}

CudaBackend::DenseRef CudaBackend::dense_array(const std::string& name) {
  if (name == tensor_name_embed()) return {&embed_, nullptr};
  if (name == tensor_name_final_norm()) return {&final_norm_, nullptr};
  if (name == tensor_name_lm_head()) return {&lm_head_, nullptr};
  // model.layers.<l>.<field>.weight
  static const std::string prefix = "model.layers.";
  if (name.compare(0, prefix.size(), prefix) == 0) {
    char* end = nullptr;
    const long l = std::strtol(name.c_str() + prefix.size(), &end, 10);
    if (end && *end == '.' && l >= 0 && l < cfg_.num_layers) {
      if (layers_.size() != size_t(cfg_.num_layers)) layers_.resize(cfg_.num_layers);
      DenseLayer& d = layers_[l];
      const std::string field(end + 1);
      if (field == "input_layernorm.weight") return {&d.input_norm, nullptr};
      // q, k and v: consecutive parts of the stacked wqkv.
      const size_t hidden = size_t(cfg_.hidden_size);
      const size_t q_size = size_t(cfg_.num_heads) * cfg_.head_dim * hidden;
      const size_t kv_size = size_t(cfg_.num_kv_heads) * cfg_.head_dim * hidden;
      const size_t whole = q_size + 2 * kv_size;
      if (field == "self_attn.q_proj.weight") return {&d.wqkv, nullptr, 0, q_size, whole};
      if (field == "self_attn.k_proj.weight") return {&d.wqkv, nullptr, q_size, kv_size, whole};
      if (field == "self_attn.v_proj.weight")
        return {&d.wqkv, nullptr, q_size + kv_size, kv_size, whole};
      if (field == "self_attn.o_proj.weight") return {&d.wo, nullptr};
      if (field == "self_attn.q_norm.weight") return {&d.q_norm, nullptr};
      if (field == "self_attn.k_norm.weight") return {&d.k_norm, nullptr};
      if (field == "post_attention_layernorm.weight") return {&d.post_norm, nullptr};
      if (field == "mlp.gate.weight") return {nullptr, &d.router};
    }
  }
  throw Error(ErrorCode::kNotFound, "no dense tensor named " + name);
}

void CudaBackend::get_dense(const std::string& name, std::vector<float>& out) const {
  activate();
  std::lock_guard<std::mutex> lock(side_mutex_);
  const DenseRef ref = const_cast<CudaBackend*>(this)->dense_array(name);
  if (ref.f32_array) {
    out.resize(ref.f32_array->size());
    EEP_CU(cudaMemcpyAsync(out.data(), ref.f32_array->get(), out.size() * sizeof(float),
                           cudaMemcpyDeviceToHost, side_stream_));
    EEP_CU(cudaStreamSynchronize(side_stream_));
    return;
  }
  const size_t n = ref.count ? ref.count : ref.bf16_array->size();
  EEP_CHECK(ref.bf16_array->size() >= ref.offset + n, ErrorCode::kNotFound,
            "dense tensor " + name + " is not loaded");
  out.resize(n);
  bf16_to_host_f32(ref.bf16_array->get() + ref.offset, n, out, 0, side_stream_);
}

void CudaBackend::set_dense(const std::string& name, std::vector<float> data) {
  activate();
  std::lock_guard<std::mutex> lock(side_mutex_);
  store_dense(name, dense_array(name), data);
}

bf16* CudaBackend::dense_bf16_target(const std::string& name, const DenseRef& ref,
                                     size_t numel) {
  if (ref.count == 0) {
    if (ref.bf16_array->size() != numel) {
      ref.bf16_array->resize(numel);
      graphs_stale_ = true;
    }
    return ref.bf16_array->get();
  }
  // A part of a stacked array: its neighbours fix its size.
  EEP_CHECK(numel == ref.count, ErrorCode::kInvalidArgument,
            "dense tensor " + name + " has " + std::to_string(numel) + " values, the model's " +
                "shape gives " + std::to_string(ref.count));
  if (ref.bf16_array->size() != ref.whole) {
    ref.bf16_array->resize(ref.whole);
    graphs_stale_ = true;
  }
  return ref.bf16_array->get() + ref.offset;
}

// Caller holds side_mutex_. Sizes may change (a tensor arriving before the first load).
void CudaBackend::store_dense(const std::string& name, const DenseRef& ref,
                              const std::vector<float>& data) {
  graphs_stale_ = true;
  if (ref.f32_array) {
    ref.f32_array->resize(data.size());
    EEP_CU(cudaMemcpyAsync(ref.f32_array->get(), data.data(), data.size() * sizeof(float),
                           cudaMemcpyHostToDevice, side_stream_));
    EEP_CU(cudaStreamSynchronize(side_stream_));  // data is pageable and the caller's
    return;
  }
  upload_f32_as_bf16(data, dense_bf16_target(name, ref, data.size()), side_stream_);
}

bool CudaBackend::get_expert(int layer, int expert, std::vector<float>& out) const {
  if (layer < 0 || layer >= static_cast<int>(experts_.size())) return false;
  const ExpertLayer& ex = experts_[layer];
  for (size_t s = 0; s < ex.expert.size(); ++s) {
    if (ex.expert[s] != expert) continue;
    activate();
    std::lock_guard<std::mutex> lock(side_mutex_);
    const size_t n = size_t(cfg_.hidden_size) * cfg_.moe_intermediate_size;
    out.resize(3 * n);
    bf16_to_host_f32(ex.gate_up.get() + 2 * n * s, 2 * n, out, 0, side_stream_);
    bf16_to_host_f32(ex.down.get() + n * s, n, out, 2 * n, side_stream_);
    return true;
  }
  return false;
}

// Caller holds side_mutex_. The slots `placement` gives `rank`, each filled from `received`
// (host, fp32) or from a serving slot holding its expert; slots filled by neither are left
// for device transfers and listed in staging_missing_ (empty when every slot is filled).
std::vector<CudaBackend::ExpertLayer> CudaBackend::fill_staged(
    const Placement& placement, int rank,
    const std::map<std::pair<int, int>, std::vector<float>>* received) {
  const size_t n = size_t(cfg_.hidden_size) * cfg_.moe_intermediate_size;
  const int spr = placement.slots_per_rank();
  std::vector<ExpertLayer> next;
  allocate_experts(next, spr);
  staging_missing_.clear();
  for (int l = 0; l < cfg_.num_layers; ++l) {
    for (int s = 0; s < spr; ++s) {
      const int expert = placement.phy2log[l][rank * spr + s];
      next[l].expert[s] = expert;
      bf16* gu = next[l].gate_up.get() + 2 * n * s;
      bf16* down = next[l].down.get() + n * s;
      if (received) {
        auto it = received->find({l, expert});
        if (it != received->end()) {
          EEP_CHECK(it->second.size() == 3 * n, ErrorCode::kInternal,
                    "received expert of the wrong size");
          float* staging = side_f32_.reserve(3 * n);
          EEP_CU(cudaMemcpyAsync(staging, it->second.data(), 3 * n * sizeof(float),
                                 cudaMemcpyHostToDevice, side_stream_));
          kernels::f32_to_bf16(staging, gu, int64_t(2 * n), side_stream_);
          kernels::f32_to_bf16(staging + 2 * n, down, int64_t(n), side_stream_);
          EEP_CU(cudaStreamSynchronize(side_stream_));
          continue;
        }
      }
      int held = -1;
      if (l < static_cast<int>(experts_.size()))
        for (size_t o = 0; o < experts_[l].expert.size() && held < 0; ++o)
          if (experts_[l].expert[o] == expert) held = static_cast<int>(o);
      if (held < 0) {
        EEP_CHECK(!received, ErrorCode::kInternal,
                  "staging layer " + std::to_string(l) + " expert " + std::to_string(expert) +
                      ": weights neither held locally nor received");
        staging_missing_.push_back({l, s});
        continue;
      }
      EEP_CU(cudaMemcpyAsync(gu, experts_[l].gate_up.get() + 2 * n * held, 2 * n * sizeof(bf16),
                             cudaMemcpyDeviceToDevice, side_stream_));
      EEP_CU(cudaMemcpyAsync(down, experts_[l].down.get() + n * held, n * sizeof(bf16),
                             cudaMemcpyDeviceToDevice, side_stream_));
    }
  }
  EEP_CU(cudaStreamSynchronize(side_stream_));
  return next;
}

void CudaBackend::stage_experts(const Placement& placement, int rank,
                                const std::map<std::pair<int, int>, std::vector<float>>& received) {
  activate();
  std::lock_guard<std::mutex> lock(side_mutex_);
  std::vector<ExpertLayer> next = fill_staged(placement, rank, &received);
  upload_routes(next, placement, rank);
  staged_ = std::move(next);
  staged_placement_ = placement;
  staged_rank_ = rank;
}

// --- device-resident transfers (backend.h, weight_move.h) ---------------------------------

Backend::DeviceRegion CudaBackend::dense_region(const std::string& name) {
  activate();
  std::lock_guard<std::mutex> lock(side_mutex_);
  size_t numel = 0;
  for (const auto& [tensor, shape] : tensor_layout(cfg_)) {
    if (tensor != name) continue;
    numel = 1;
    for (int64_t d : shape) numel *= size_t(d);
  }
  EEP_CHECK(numel > 0, ErrorCode::kNotFound, "no dense tensor named " + name);
  // A receiver's tensor is allocated here (graphs hold addresses); a sender's stays put, so its
  // graphs stay valid.
  const DenseRef ref = dense_array(name);
  if (ref.f32_array) {
    if (ref.f32_array->size() != numel) {
      ref.f32_array->resize(numel);
      graphs_stale_ = true;
    }
    return {ref.f32_array->get(), ref.f32_array->bytes()};
  }
  return {dense_bf16_target(name, ref, numel), numel * sizeof(bf16)};
}

std::vector<Backend::DeviceRegion> CudaBackend::expert_regions(int layer, int expert) {
  if (layer < 0 || layer >= static_cast<int>(experts_.size())) return {};
  const size_t n = size_t(cfg_.hidden_size) * cfg_.moe_intermediate_size;
  const ExpertLayer& ex = experts_[layer];
  for (size_t s = 0; s < ex.expert.size(); ++s)
    if (ex.expert[s] == expert)
      return {{ex.gate_up.get() + 2 * n * s, 2 * n * sizeof(bf16)},
              {ex.down.get() + n * s, n * sizeof(bf16)}};
  return {};
}

void CudaBackend::begin_staging(const Placement& placement, int rank) {
  activate();
  std::lock_guard<std::mutex> lock(side_mutex_);
  staged_.clear();
  staged_rank_ = -1;
  staging_ = fill_staged(placement, rank, nullptr);
  staging_placement_ = placement;
  staging_rank_ = rank;
  staging_received_.clear();
}

std::vector<Backend::DeviceRegion> CudaBackend::staged_expert_regions(int layer, int expert) {
  std::lock_guard<std::mutex> lock(side_mutex_);
  EEP_CHECK(staging_rank_ >= 0, ErrorCode::kInternal, "staged_expert_regions before begin_staging");
  EEP_CHECK(layer >= 0 && layer < cfg_.num_layers, ErrorCode::kInternal,
            "staged_expert_regions: layer " + std::to_string(layer) + " out of range");
  const size_t n = size_t(cfg_.hidden_size) * cfg_.moe_intermediate_size;
  ExpertLayer& ex = staging_[layer];
  for (size_t s = 0; s < ex.expert.size(); ++s) {
    if (ex.expert[s] != expert) continue;
    staging_received_[{layer, expert}] = static_cast<int>(s);
    return {{ex.gate_up.get() + 2 * n * s, 2 * n * sizeof(bf16)},
            {ex.down.get() + n * s, n * sizeof(bf16)}};
  }
  throw Error(ErrorCode::kInternal, "staged_expert_regions: layer " + std::to_string(layer) +
                                        " expert " + std::to_string(expert) +
                                        " has no staged slot on this rank");
}

void CudaBackend::end_staging() {
  activate();
  std::lock_guard<std::mutex> lock(side_mutex_);
  EEP_CHECK(staging_rank_ >= 0, ErrorCode::kInternal, "end_staging before begin_staging");
  const size_t n = size_t(cfg_.hidden_size) * cfg_.moe_intermediate_size;
  for (const auto& [l, s] : staging_missing_) {
    ExpertLayer& ex = staging_[l];
    const int expert = ex.expert[s];
    auto it = staging_received_.find({l, expert});
    EEP_CHECK(it != staging_received_.end(), ErrorCode::kInternal,
              "staging layer " + std::to_string(l) + " expert " + std::to_string(expert) +
                  ": weights neither held locally nor received");
    const int from = it->second;
    if (from == s) continue;
    EEP_CU(cudaMemcpyAsync(ex.gate_up.get() + 2 * n * s, ex.gate_up.get() + 2 * n * from,
                           2 * n * sizeof(bf16), cudaMemcpyDeviceToDevice, side_stream_));
    EEP_CU(cudaMemcpyAsync(ex.down.get() + n * s, ex.down.get() + n * from, n * sizeof(bf16),
                           cudaMemcpyDeviceToDevice, side_stream_));
  }
  upload_routes(staging_, staging_placement_, staging_rank_);
  EEP_CU(cudaStreamSynchronize(side_stream_));
  staged_ = std::move(staging_);
  staged_placement_ = std::move(staging_placement_);
  staged_rank_ = staging_rank_;
  staging_.clear();
  staging_rank_ = -1;
  staging_missing_.clear();
  staging_received_.clear();
}

void CudaBackend::commit_staged() {
  EEP_CHECK(staged_rank_ >= 0, ErrorCode::kInternal, "commit without staged experts");
  activate();
  EEP_CU(cudaStreamSynchronize(stream_));  // no step still reads the old slots
  // The old slots stay allocated (no step uses them) so that a rollback after the switch is a
  // swap back, not a copy: see restore_previous.
  previous_ = std::exchange(experts_, std::move(staged_));
  previous_placement_ = std::exchange(placement_, std::move(staged_placement_));
  previous_rank_ = std::exchange(rank_, staged_rank_);
  staged_.clear();
  staged_rank_ = -1;
  graphs_stale_ = true;  // graphs hold the old slots' addresses and shapes
  restart_load_counts(stream_);  // counts restart with the placement, host and device
}

void CudaBackend::restore_previous() {
  EEP_CHECK(previous_rank_ >= 0, ErrorCode::kInternal, "restore without previous slots");
  activate();
  EEP_CU(cudaStreamSynchronize(stream_));  // no step still reads the slots given up
  experts_ = std::move(previous_);
  placement_ = std::move(previous_placement_);
  rank_ = previous_rank_;
  previous_.clear();
  previous_placement_ = Placement();
  previous_rank_ = -1;
  graphs_stale_ = true;
  restart_load_counts(stream_);
}

void CudaBackend::release_previous() {
  activate();
  previous_.clear();  // cudaFree: waits for the device, so call it between steps
  previous_placement_ = Placement();
  previous_rank_ = -1;
}

void CudaBackend::discard_staged() {
  std::lock_guard<std::mutex> lock(side_mutex_);
  activate();
  staged_.clear();
  staged_rank_ = -1;
  staging_.clear();
  staging_rank_ = -1;
  staging_missing_.clear();
  staging_received_.clear();
}

}  // namespace eep::cuda
