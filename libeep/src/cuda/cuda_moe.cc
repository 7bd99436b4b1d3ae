// The MoE FFN of one layer on the GPU, across the expert-parallel group (design.md §3): the
// router (fp32 GEMM on the fp32 normalised rows, softmax/top-k) on the device, then one of two
// paths that route identically (the CPU backend's (token, choice) → replica rule):
//
// - a group of one (moe_device_routed): replica choice, the invariant check "no row reaches a
//   slot whose weights are not in place", the load count and the rows grouped by slot in one
//   kernel at decode sizes (route_permute_tokens), grouped GEMMs that read the row offsets on
//   the device, SwiGLU, and the weighted combine (at decode inside the next residual norm). No
//   host work, so a decode step can be a CUDA graph.
// - a larger group (moe_host_routed): the top-k ids go to the host once per layer; replica and
//   owner there, rows packed per owner, exchanged, every arriving row's (slot, expert) header
//   checked on the host, grouped by local slot, cuBLAS grouped GEMMs (host offsets), returned,
//   combined in choice order.
#include <chrono>
#include <random>

#include "cuda/cuda_backend.h"
#include "eep/comm.h"
#include "eep_kernels.h"

namespace eep::cuda {

namespace {
// Up to this many rows the router GEMM and top-k run as one fused kernel (blocks of a row read
// the fp32 router from L2, once per row; beyond a few dozen rows cuBLAS's GEMM is cheaper).
constexpr int kFusedRouterRows = 32;
// Up to this many rows (above kFusedRouterRows) router_tiled does the GEMM and the top-k in one
// launch; beyond, cuBLAS's SGEMM and router_topk. Measured on the H100 at Qwen3-30B-A3B's shape
// (kernels/router_topk.cuh): 7.5 / 11.5 / 12.5 / 16.5 us at 33 / 128 / 192 / 256 rows against
// 11.6 / 12.3 / 14.6 / 15.0 us for the two launches.
constexpr int kTiledRouterRows = 192;
// Up to this many rows per local slot on average, gate|up and SwiGLU run as one fused GEMM.
constexpr int kFusedSwigluRowsPerSlot = 64;

// Header of one dispatched row: the slot on the receiving rank and the expert expected there.
struct RowHeader {
  int32_t local_slot;
  int32_t expert;
};
}  // namespace

void CudaBackend::moe(int layer, const bf16* h, const float* h_f32, int rows, Group& group,
                      bf16* out, kernels::MoeCombine* deferred) {
  const DenseLayer& d = layers_[layer];
  const int k = cfg_.num_experts_per_tok;
  EEP_CHECK(placement_.num_ranks == group.size(), ErrorCode::kInternal,
            "placement has " + std::to_string(placement_.num_ranks) + " ranks, group has " +
                std::to_string(group.size()));
  if (rows > 0 && rows <= kFusedRouterRows &&
      size_t(cfg_.hidden_size + cfg_.num_experts) * sizeof(float) <= 48 * 1024) {
    // Decode batches: one launch (a cuBLAS GEMV plus the top-k were two, mostly latency).
    if (router_counters_.empty()) {
      router_counters_.resize(kFusedRouterRows);
      EEP_CU(cudaMemsetAsync(router_counters_.get(), 0, router_counters_.bytes(), stream_));
    }
    kernels::router_fused(h_f32, d.router.get(), rows, cfg_.hidden_size, cfg_.num_experts, k,
                          cfg_.norm_topk_prob,
                          router_logits_.reserve(size_t(kFusedRouterRows) * cfg_.num_experts),
                          router_counters_.get(), topk_ids_.reserve(size_t(rows) * k),
                          topk_w_.reserve(size_t(rows) * k), stream_);
  } else if (rows > 0 && rows <= kTiledRouterRows) {
    // Decode batches above the fused kernel's rows: one launch, no workspace (the split sums
    // go through the row tile's cluster), instead of an SGEMM, its split-K reduce and the top-k.
    kernels::router_tiled(h_f32, d.router.get(), rows, cfg_.hidden_size, cfg_.num_experts, k,
                          cfg_.norm_topk_prob, topk_ids_.reserve(size_t(rows) * k),
                          topk_w_.reserve(size_t(rows) * k), stream_);
  } else if (rows > 0) {
    float* logits = router_logits_.reserve(size_t(rows) * cfg_.num_experts);
    gemm_f32(h_f32, d.router.get(), logits, rows, cfg_.hidden_size, cfg_.num_experts);
    kernels::router_topk(logits, rows, cfg_.num_experts, k, cfg_.norm_topk_prob,
                         topk_ids_.reserve(size_t(rows) * k), topk_w_.reserve(size_t(rows) * k),
                         stream_);
  }
  mark("router");
  if (group.size() == 1 && !host_routing_)
    moe_device_routed(layer, h, rows, out, deferred);
  else if (exchange_cap_ > 0)
    moe_device_exchange(layer, h, rows, group, out, deferred);
  else
    moe_host_routed(layer, h, rows, group, out);
}

void CudaBackend::moe_device_routed(int layer, const bf16* h, int rows, bf16* out,
                                    kernels::MoeCombine* deferred) {
  if (rows == 0) return;
  const ExpertLayer& ex = experts_[layer];
  const int hidden = cfg_.hidden_size, k = cfg_.num_experts_per_tok;
  const int spr = placement_.slots_per_rank();
  const int items = rows * k;
  // item → local slot (none, and an error record, if the slot does not hold the expert), the
  // load per slot, and the rows grouped by slot (stable) with their offsets: one launch (two
  // for many rows).
  int32_t* offsets = offsets_dev_.reserve(spr + 1);
  int32_t* slot_rows = slot_rows_.reserve(items);
  bf16* permuted = permuted_.reserve(size_t(items) * hidden);
  kernels::route_permute_tokens(h, topk_ids_.get(), rows, k, hidden, ex.route.get(),
                                cfg_.num_experts, ex.max_replicas, rank_ * spr, spr, layer,
                                load_dev_.get() + size_t(layer) * spr, route_error_.get(), offsets,
                                slot_rows, permuted, stream_);
  load_dev_dirty_ = true;
  mark("moe route");
  bf16* y = local_experts(ex, permuted, offsets, items);
  // out[t] = sum over choices j of w[t][j] * y[row of (t, j)], in choice order (as the CPU);
  // or, deferred, the same sum inside the next residual norm (one launch fewer per layer).
  if (deferred && kernels::add_combine_rmsnorm_supported(hidden)) {
    *deferred = kernels::MoeCombine{y, slot_rows, topk_w_.get(), k};
    return;
  }
  kernels::unpermute_tokens(y, slot_rows, topk_w_.get(), rows, k, hidden, out, stream_);
  mark("moe combine");
}

bf16* CudaBackend::local_experts(const ExpertLayer& ex, const bf16* permuted,
                                 const int32_t* offsets, int max_rows) {
  const int hidden = cfg_.hidden_size, inter = cfg_.moe_intermediate_size;
  const int spr = placement_.slots_per_rank();
  bf16* act = act_.reserve(size_t(max_rows) * inter);
  bf16* y = y_.reserve(size_t(max_rows) * hidden);
  // gate|up with SwiGLU in the epilogue (its tiles take inter % 64 == 0; else two steps), then
  // down; offsets read on the device. The fused form wins at decode sizes and loses at prefill
  // sizes (H100: even at ~128 rows per expert, 390 against ~580 TFLOP/s at ~512), so large
  // batches take the plain GEMM and a separate SwiGLU.
  if (inter % 64 == 0 && max_rows <= kFusedSwigluRowsPerSlot * spr) {
    kernels::grouped_gemm_swiglu_device(permuted, ex.gate_up.get(), act, offsets, spr, max_rows,
                                        inter, hidden, stream_);
  } else {
    bf16* gu = gu_.reserve(size_t(max_rows) * 2 * inter);
    kernels::grouped_gemm_device(permuted, ex.gate_up.get(), gu, offsets, spr, max_rows,
                                 2 * inter, hidden, stream_);
    kernels::silu_mul_fused(gu, act, max_rows, inter, stream_);
  }
  mark("moe gate_up");
  kernels::grouped_gemm_device(act, ex.down.get(), y, offsets, spr, max_rows, hidden, inter,
                               stream_);
  mark("moe down");
  return y;
}

void CudaBackend::moe_device_exchange(int layer, const bf16* h, int rows, Group& group,
                                      bf16* out, kernels::MoeCombine* deferred) {
  const ExpertLayer& ex = experts_[layer];
  const int hidden = cfg_.hidden_size, k = cfg_.num_experts_per_tok;
  const int E = cfg_.num_experts;
  const int peers = group.size(), spr = placement_.slots_per_rank();
  const int items = rows * k, cap = exchange_cap_, total = peers * cap;
  const int width = 2 * spr + 1;
  const size_t block_bytes = size_t(cap) * hidden * sizeof(bf16);
  const size_t table_head = size_t(E) + size_t(E) * ex.max_replicas;

  // Sender: items to every slot of the group (owner-major), rows into per-owner blocks.
  int32_t* slot_offsets = xchg_offsets_.reserve(size_t(placement_.num_slots) + 1);
  int32_t* item_rows = slot_rows_.reserve(std::max(items, 1));
  kernels::route_to_slots(topk_ids_.get(), rows, k, ex.route_all.get(), E, ex.max_replicas,
                          placement_.num_slots, layer, route_error_.get(), slot_offsets,
                          item_rows, stream_);
  int32_t* meta_send = hdr_dev_send_.reserve(size_t(peers) * width);
  int32_t* meta_recv = hdr_dev_recv_.reserve(size_t(peers) * width);
  int32_t* ret_idx = moe_idx_.reserve(std::max(items, 1));
  bf16* send = send_rows_.reserve(size_t(total) * hidden);
  bf16* recv = recv_rows_.reserve(size_t(total) * hidden);
  kernels::exchange_pack(h, item_rows, slot_offsets, ex.route_all.get() + table_head, items, k,
                         hidden, peers, spr, cap, layer, meta_send, ret_idx, send,
                         route_error_.get(), stream_);
  using K = P2POp::Kind;
  std::vector<P2POp> ops;
  ops.reserve(4 * size_t(peers));
  for (int p = 0; p < peers; ++p) {
    ops.push_back({K::kSend, meta_send + size_t(p) * width, width * sizeof(int32_t), p});
    ops.push_back({K::kSend, send + size_t(p) * cap * hidden, block_bytes, p});
    ops.push_back({K::kRecv, meta_recv + size_t(p) * width, width * sizeof(int32_t), p});
    ops.push_back({K::kRecv, recv + size_t(p) * cap * hidden, block_bytes, p});
  }
  group.send_recv_batch_async(ops, stream_);
  exchange_group_ = &group;

  // Receiver: check the senders' tables, group the arrivals by local slot, run the experts.
  int32_t* offsets = offsets_dev_.reserve(spr + 1);
  int32_t* perm_src = xchg_perm_src_.reserve(total);
  int32_t* arr_dst = xchg_arr_dst_.reserve(total);
  kernels::exchange_arrivals(meta_recv, ex.route.get() + table_head, peers, spr, cap, layer,
                             rank_ * spr, load_dev_.get() + size_t(layer) * spr,
                             route_error_.get(), offsets, perm_src, arr_dst, stream_);
  load_dev_dirty_ = true;
  bf16* permuted = permuted_.reserve(size_t(total) * hidden);
  kernels::gather_rows(recv, perm_src, total, hidden, permuted, stream_);
  bf16* y = local_experts(ex, permuted, offsets, total);

  // Results back to their senders' blocks, then combined in choice order.
  bf16* ret_send = results_.reserve(size_t(total) * hidden);
  bf16* ret_recv = returned_.reserve(size_t(total) * hidden);
  kernels::gather_rows(y, arr_dst, total, hidden, ret_send, stream_);
  ops.clear();
  for (int p = 0; p < peers; ++p) {
    ops.push_back({K::kSend, ret_send + size_t(p) * cap * hidden, block_bytes, p});
    ops.push_back({K::kRecv, ret_recv + size_t(p) * cap * hidden, block_bytes, p});
  }
  group.send_recv_batch_async(ops, stream_);
  ++device_exchanges_;
  mark("moe exchange");
  if (rows == 0) return;
  if (deferred && kernels::add_combine_rmsnorm_supported(hidden)) {
    *deferred = kernels::MoeCombine{ret_recv, ret_idx, topk_w_.get(), k};
    return;
  }
  kernels::unpermute_tokens(ret_recv, ret_idx, topk_w_.get(), rows, k, hidden, out, stream_);
}

void CudaBackend::moe_host_routed(int layer, const bf16* h, int rows, Group& group, bf16* out) {
  const ExpertLayer& ex = experts_[layer];
  const int hidden = cfg_.hidden_size, k = cfg_.num_experts_per_tok, inter = cfg_.moe_intermediate_size;
  const int num_peers = group.size();
  const int spr = placement_.slots_per_rank();
  const int items = rows * k;

  // The top-k ids to the host.
  int32_t* ids_host = ids_host_.reserve(std::max(items, 1));
  if (rows > 0) {
    EEP_CU(cudaMemcpyAsync(ids_host, topk_ids_.get(), items * sizeof(int32_t),
                           cudaMemcpyDeviceToHost, stream_));
    EEP_CU(cudaStreamSynchronize(stream_));
  }

  // Replica and owner of each item (round-robin over replicas by item index, as on the CPU),
  // then the send order: items grouped by owner, in item order within an owner.
  std::vector<int64_t> send_count(num_peers, 0), recv_count(num_peers, 0);
  std::vector<int> owner_of(items);
  for (int i = 0; i < items; ++i) {
    const auto& replicas = placement_.log2phy[layer][ids_host[i]];
    const int slot = replicas[size_t(i) % replicas.size()];
    owner_of[i] = slot / spr;
    ids_host[i] = slot;  // keep the physical slot
    ++send_count[owner_of[i]];
  }
  std::vector<int64_t> first(num_peers + 1, 0);
  for (int p = 0; p < num_peers; ++p) first[p + 1] = first[p] + send_count[p];
  // idx_host: [items] token of each sent row, then [items] the sent row of each item (combine).
  int32_t* idx = idx_host_.reserve(2 * size_t(std::max(items, 1)));
  RowHeader* hdr_send = reinterpret_cast<RowHeader*>(hdr_send_.reserve(2 * size_t(std::max(items, 1))));
  {
    std::vector<int64_t> fill(first.begin(), first.end() - 1);
    for (int i = 0; i < items; ++i) {
      const int64_t row = fill[owner_of[i]]++;
      idx[row] = i / k;
      idx[items + i] = static_cast<int32_t>(row);
      hdr_send[row] = RowHeader{ids_host[i] % spr, placement_.phy2log[layer][ids_host[i]]};
    }
  }
  int32_t* idx_dev = moe_idx_.reserve(2 * size_t(std::max(items, 1)));
  bf16* send_rows = send_rows_.reserve(std::max<size_t>(size_t(items) * hidden, 1));
  if (items > 0) {
    EEP_CU(cudaMemcpyAsync(idx_dev, idx, 2 * size_t(items) * sizeof(int32_t),
                           cudaMemcpyHostToDevice, stream_));
    kernels::gather_rows(h, idx_dev, items, hidden, send_rows, stream_);
  }
  mark("moe route (host)");

  // Exchange: counts, headers, rows. A group of one skips it.
  const size_t row_bytes = size_t(hidden) * sizeof(bf16);
  int64_t total_recv = items;
  bf16* recv_rows = send_rows;
  const RowHeader* hdr_recv = hdr_send;
  std::vector<int64_t> send_bytes(num_peers), recv_bytes(num_peers);
  if (num_peers > 1) {
    group.alltoall_counts(send_count.data(), recv_count.data());
    total_recv = 0;
    for (int p = 0; p < num_peers; ++p) total_recv += recv_count[p];
    // Rows for a rank are only as many as its peers' items; a bogus count is a bug elsewhere.
    EEP_CHECK(total_recv >= 0, ErrorCode::kInternal, "negative receive count");
    RowHeader* hr = reinterpret_cast<RowHeader*>(hdr_recv_.reserve(2 * size_t(std::max<int64_t>(total_recv, 1))));
    std::vector<int64_t> hs(num_peers), hrb(num_peers);
    for (int p = 0; p < num_peers; ++p) {
      hs[p] = send_count[p] * int64_t(sizeof(RowHeader));
      hrb[p] = recv_count[p] * int64_t(sizeof(RowHeader));
      send_bytes[p] = send_count[p] * int64_t(row_bytes);
      recv_bytes[p] = recv_count[p] * int64_t(row_bytes);
    }
    recv_rows = recv_rows_.reserve(std::max<size_t>(size_t(total_recv) * hidden, 1));
    if (group.device_buffers()) {
      // Headers and rows in one batch (one wait instead of two), the headers' upload queued
      // behind the gather; then the headers come back to the host for the check below.
      int32_t* hsd = hdr_dev_send_.reserve(2 * size_t(std::max(items, 1)));
      int32_t* hrd = hdr_dev_recv_.reserve(2 * size_t(std::max<int64_t>(total_recv, 1)));
      EEP_CU(cudaMemcpyAsync(hsd, hdr_send, size_t(items) * sizeof(RowHeader),
                             cudaMemcpyHostToDevice, stream_));
      EEP_CU(cudaStreamSynchronize(stream_));  // send_rows complete before anyone reads them
      std::vector<P2POp> ops;
      ops.reserve(4 * size_t(num_peers));
      int64_t hso = 0, hro = 0, so = 0, ro = 0;
      for (int p = 0; p < num_peers; ++p) {
        using K = P2POp::Kind;
        ops.push_back({K::kSend, reinterpret_cast<char*>(hsd) + hso, size_t(hs[p]), p});
        ops.push_back({K::kSend, reinterpret_cast<char*>(send_rows) + so, size_t(send_bytes[p]), p});
        ops.push_back({K::kRecv, reinterpret_cast<char*>(hrd) + hro, size_t(hrb[p]), p});
        ops.push_back({K::kRecv, reinterpret_cast<char*>(recv_rows) + ro, size_t(recv_bytes[p]), p});
        hso += hs[p];
        hro += hrb[p];
        so += send_bytes[p];
        ro += recv_bytes[p];
      }
      group.send_recv_batch(ops);
      EEP_CU(cudaMemcpy(hr, hrd, size_t(total_recv) * sizeof(RowHeader), cudaMemcpyDeviceToHost));
    } else {
      EEP_CU(cudaStreamSynchronize(stream_));  // send_rows complete before anyone reads them
      group.alltoallv(hdr_send, hs, hr, hrb);
      char* ss = stage_send_.reserve(std::max<size_t>(size_t(items) * row_bytes, 1));
      char* sr = stage_recv_.reserve(std::max<size_t>(size_t(total_recv) * row_bytes, 1));
      EEP_CU(cudaMemcpy(ss, send_rows, size_t(items) * row_bytes, cudaMemcpyDeviceToHost));
      group.alltoallv(ss, send_bytes, sr, recv_bytes);
      EEP_CU(cudaMemcpyAsync(recv_rows, sr, size_t(total_recv) * row_bytes,
                             cudaMemcpyHostToDevice, stream_));
    }
    hdr_recv = hr;
  }
  mark("moe dispatch");

  // Check every arriving row against the slot it targets, count load, and group rows by slot.
  std::vector<int> offsets(spr + 1, 0);
  int32_t* slot_ids = slot_ids_host_.reserve(std::max<size_t>(size_t(total_recv), 1));
  const RowHeader* headers = hdr_recv;
  for (int64_t i = 0; i < total_recv; ++i) {
    const RowHeader& hd = headers[i];
    EEP_CHECK(hd.local_slot >= 0 && hd.local_slot < spr, ErrorCode::kInternal,
              "layer " + std::to_string(layer) + ": row routed to local slot " +
                  std::to_string(hd.local_slot) + " of " + std::to_string(spr));
    EEP_CHECK(ex.expert[hd.local_slot] == hd.expert, ErrorCode::kInternal,
              "layer " + std::to_string(layer) + ": row for expert " + std::to_string(hd.expert) +
                  " reached slot " + std::to_string(rank_ * spr + hd.local_slot) +
                  " which holds expert " + std::to_string(ex.expert[hd.local_slot]));
    slot_ids[i] = hd.local_slot;
    ++offsets[hd.local_slot + 1];
  }
  for (int s = 0; s < spr; ++s) {
    load_[layer][size_t(rank_) * spr + s] += offsets[s + 1];
    offsets[s + 1] += offsets[s];
  }
  mark("moe check rows");

  // Local experts: group by slot (stable), gate/up GEMM, SwiGLU, down GEMM, back to arrival order.
  bf16* results = recv_rows;  // overwritten in place once grouped
  if (total_recv > 0) {
    const size_t n = size_t(total_recv);
    int32_t* dev_slot_ids = slot_rows_.reserve(2 * n);
    EEP_CU(cudaMemcpyAsync(dev_slot_ids, slot_ids, n * sizeof(int32_t), cudaMemcpyHostToDevice,
                           stream_));
    bf16* permuted = permuted_.reserve(n * hidden);
    kernels::permute_tokens(recv_rows, dev_slot_ids, int(n), 1, hidden, spr,
                            offsets_dev_.reserve(spr + 1), dev_slot_ids + n, permuted, stream_);
    if (grouped_capacity_ < spr) {
      grouped_ = std::make_unique<kernels::GroupedGemm>(spr);
      grouped_capacity_ = spr;
    }
    bf16* gu = gu_.reserve(n * 2 * inter);
    bf16* act = act_.reserve(n * inter);
    bf16* y = y_.reserve(n * hidden);
    grouped_->run(kernels::GroupedGemmImpl::kCublasGrouped, permuted, ex.gate_up.get(), gu,
                  offsets.data(), spr, 2 * inter, hidden, stream_);
    kernels::silu_mul_fused(gu, act, int(n), inter, stream_);
    grouped_->run(kernels::GroupedGemmImpl::kCublasGrouped, act, ex.down.get(), y, offsets.data(),
                  spr, hidden, inter, stream_);
    // y is in slot order; slot_rows (second half of dev_slot_ids) gives each arrival's row.
    if (ones_.size() < n) {
      std::vector<float> host_ones(n + n / 2, 1.0f);
      ones_.resize(host_ones.size());
      EEP_CU(cudaMemcpy(ones_.get(), host_ones.data(), host_ones.size() * sizeof(float),
                        cudaMemcpyHostToDevice));
    }
    float* ones = ones_.get();
    results = results_.reserve(n * hidden);
    kernels::unpermute_tokens(y, dev_slot_ids + n, ones, int(n), 1, hidden, results, stream_);
  }
  mark("moe experts");

  // Results back to the senders, then combine in choice order.
  bf16* returned = results;
  if (num_peers > 1) {
    returned = returned_.reserve(std::max<size_t>(size_t(items) * hidden, 1));
    EEP_CU(cudaStreamSynchronize(stream_));
    if (group.device_buffers()) {
      group.alltoallv(results, recv_bytes, returned, send_bytes);
    } else {
      char* ss = stage_send_.reserve(std::max<size_t>(size_t(total_recv) * row_bytes, 1));
      char* sr = stage_recv_.reserve(std::max<size_t>(size_t(items) * row_bytes, 1));
      EEP_CU(cudaMemcpy(ss, results, size_t(total_recv) * row_bytes, cudaMemcpyDeviceToHost));
      group.alltoallv(ss, recv_bytes, sr, send_bytes);
      EEP_CU(cudaMemcpyAsync(returned, sr, size_t(items) * row_bytes, cudaMemcpyHostToDevice,
                             stream_));
    }
  }
  mark("moe return");
  if (rows > 0)
    kernels::unpermute_tokens(returned, idx_dev + items, topk_w_.get(), rows, k, hidden, out,
                              stream_);
  mark("moe combine");
}

double CudaBackend::benchmark_moe(int layer, int rows, int iters, Group& group) {
  EEP_CHECK(layer >= 0 && layer < cfg_.num_layers, ErrorCode::kInvalidArgument,
            "layer " + std::to_string(layer) + " out of range");
  EEP_CHECK(rows >= 0 && iters >= 1, ErrorCode::kInvalidArgument, "rows >= 0 and iters >= 1");
  activate();
  // Hidden rows of unit scale, as the post-attention norm gives.
  std::mt19937 rng(1234 + group.rank());
  std::uniform_real_distribution<float> dist(-1.7f, 1.7f);
  std::vector<float> host(size_t(rows) * cfg_.hidden_size);
  for (float& v : host) v = dist(rng);
  DeviceArray<bf16> in(std::max<size_t>(host.size(), 1)), out(std::max<size_t>(host.size(), 1));
  {
    std::lock_guard<std::mutex> lock(side_mutex_);
    if (!host.empty()) upload_f32_as_bf16(host, in.get(), side_stream_);
  }
  DeviceArray<float> in_f32(std::max<size_t>(host.size(), 1));
  if (!host.empty())
    EEP_CU(cudaMemcpy(in_f32.get(), host.data(), host.size() * sizeof(float),
                      cudaMemcpyHostToDevice));
  exchange_cap_ = 0;  // the host-routed path, as documented
  // warm-up: workspaces, cuBLAS heuristics
  moe(layer, in.get(), in_f32.get(), rows, group, out.get());
  EEP_CU(cudaStreamSynchronize(stream_));
  group.barrier();
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) moe(layer, in.get(), in_f32.get(), rows, group, out.get());
  EEP_CU(cudaStreamSynchronize(stream_));
  auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration<double>(t1 - t0).count() / iters;
}

}  // namespace eep::cuda
