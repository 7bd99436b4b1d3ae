// MoE FFN of one layer across the expert-parallel group (design.md §3, one step):
// route (top-k) → pick a replica per (token, expert) → all-to-all rows to slot owners → run the
// local experts → all-to-all results back → combine with the routing weights in a fixed order.
#include <cstring>
#include <string>

#include "eep/comm.h"
#include "eep/common.h"
#include "engine/cpu_backend.h"

namespace eep {

namespace {
// Wire layout of one dispatched row: a small header, then the hidden vector.
struct ItemHeader {
  int32_t local_slot;  // slot index on the receiving rank
  int32_t expert;      // logical expert the sender expects there (checked on arrival)
};
}  // namespace

void CpuBackend::moe(int layer, const std::vector<float>& h, int rows, Group& group,
                     std::vector<float>& out) {
  const DenseLayer& d = layers_[layer];
  const int hidden = cfg_.hidden_size;
  const int k = cfg_.num_experts_per_tok;
  const int num_peers = group.size();
  const int spr = placement_.slots_per_rank();
  EEP_CHECK(placement_.num_ranks == num_peers, ErrorCode::kInternal,
            "placement has " + std::to_string(placement_.num_ranks) + " ranks, group has " +
                std::to_string(num_peers));

  // Route.
  std::vector<float> router_logits(static_cast<size_t>(rows) * cfg_.num_experts);
  std::vector<int32_t> ids(static_cast<size_t>(rows) * k);
  std::vector<float> weights(static_cast<size_t>(rows) * k);
  ops::matmul_nt(h.data(), d.router.data(), router_logits.data(), rows, hidden, cfg_.num_experts);
  ops::router_topk(router_logits.data(), rows, cfg_.num_experts, k, cfg_.norm_topk_prob,
                   ids.data(), weights.data());

  // Pick a replica per (row, choice) and bucket by owner. Any replica gives the same result
  // (identical weights, row-independent math); spreading over replicas balances load.
  const size_t item_bytes = sizeof(ItemHeader) + size_t(hidden) * sizeof(float);
  std::vector<std::vector<int>> items_for_peer(num_peers);  // row * k + choice
  std::vector<ItemHeader> header_of(static_cast<size_t>(rows) * k);
  for (int r = 0; r < rows; ++r) {
    for (int j = 0; j < k; ++j) {
      int item = r * k + j;
      int expert = ids[item];
      const auto& replicas = placement_.log2phy[layer][expert];
      int slot = replicas[static_cast<size_t>(item) % replicas.size()];
      int owner = slot / spr;
      header_of[item] = ItemHeader{slot % spr, expert};
      items_for_peer[owner].push_back(item);
    }
  }

  // Exchange counts, then rows.
  std::vector<int64_t> send_count(num_peers), recv_count(num_peers);
  for (int p = 0; p < num_peers; ++p) send_count[p] = static_cast<int64_t>(items_for_peer[p].size());
  group.alltoall_counts(send_count.data(), recv_count.data());
  std::vector<int64_t> send_bytes(num_peers), recv_bytes(num_peers);
  int64_t total_send = 0, total_recv = 0;
  for (int p = 0; p < num_peers; ++p) {
    send_bytes[p] = send_count[p] * static_cast<int64_t>(item_bytes);
    recv_bytes[p] = recv_count[p] * static_cast<int64_t>(item_bytes);
    total_send += send_count[p];
    total_recv += recv_count[p];
  }
  std::vector<char> send_buf(static_cast<size_t>(total_send) * item_bytes);
  std::vector<char> recv_buf(static_cast<size_t>(total_recv) * item_bytes);
  {
    char* w = send_buf.data();
    for (int p = 0; p < num_peers; ++p) {
      for (int item : items_for_peer[p]) {
        std::memcpy(w, &header_of[item], sizeof(ItemHeader));
        std::memcpy(w + sizeof(ItemHeader), &h[size_t(item / k) * hidden], hidden * sizeof(float));
        w += item_bytes;
      }
    }
  }
  group.alltoallv(send_buf.data(), send_bytes, recv_buf.data(), recv_bytes);

  // Run the local experts on what arrived, slot by slot. NOTE: the invariant "no token reaches a
  // slot whose weights are not in place" is checked here, on every row.
  std::vector<std::vector<int64_t>> rows_of_slot(spr);
  for (int64_t i = 0; i < total_recv; ++i) {
    ItemHeader hdr;
    std::memcpy(&hdr, recv_buf.data() + size_t(i) * item_bytes, sizeof(ItemHeader));
    EEP_CHECK(hdr.local_slot >= 0 && hdr.local_slot < spr, ErrorCode::kInternal,
              "layer " + std::to_string(layer) + ": row routed to local slot " +
                  std::to_string(hdr.local_slot) + " of " + std::to_string(spr));
    const ExpertSlot& slot = slots_[layer][hdr.local_slot];
    EEP_CHECK(slot.expert == hdr.expert && !slot.gate.empty(), ErrorCode::kInternal,
              "layer " + std::to_string(layer) + ": row for expert " + std::to_string(hdr.expert) +
                  " reached slot " + std::to_string(rank_ * spr + hdr.local_slot) +
                  " which holds expert " + std::to_string(slot.expert));
    rows_of_slot[hdr.local_slot].push_back(i);
  }
  const int inter = cfg_.moe_intermediate_size;
  std::vector<char> result_buf(static_cast<size_t>(total_recv) * hidden * sizeof(float));
  float* results = reinterpret_cast<float*>(result_buf.data());
  std::vector<float> in_rows, out_rows;
  for (int s = 0; s < spr; ++s) {
    const auto& list = rows_of_slot[s];
    if (list.empty()) continue;
    load_[layer][rank_ * spr + s] += static_cast<int64_t>(list.size());
    in_rows.resize(list.size() * hidden);
    out_rows.resize(list.size() * hidden);
    for (size_t i = 0; i < list.size(); ++i)
      std::memcpy(&in_rows[i * hidden],
                  recv_buf.data() + size_t(list[i]) * item_bytes + sizeof(ItemHeader),
                  hidden * sizeof(float));
    const ExpertSlot& slot = slots_[layer][s];
    ops::swiglu_expert(in_rows.data(), static_cast<int>(list.size()), slot.gate.data(),
                       slot.up.data(), slot.down.data(), hidden, inter, out_rows.data());
    for (size_t i = 0; i < list.size(); ++i)
      std::memcpy(results + size_t(list[i]) * hidden, &out_rows[i * hidden], hidden * sizeof(float));
  }

  // Send results back: the reverse exchange, same per-peer order.
  std::vector<int64_t> back_send(num_peers), back_recv(num_peers);
  for (int p = 0; p < num_peers; ++p) {
    back_send[p] = recv_count[p] * hidden * static_cast<int64_t>(sizeof(float));
    back_recv[p] = send_count[p] * hidden * static_cast<int64_t>(sizeof(float));
  }
  std::vector<float> returned(static_cast<size_t>(total_send) * hidden);
  group.alltoallv(result_buf.data(), back_send, returned.data(), back_recv);

  // Combine in choice order j = 0..k-1 (fixed, so the sum is batch- and placement-invariant).
  std::vector<const float*> result_of(static_cast<size_t>(rows) * k, nullptr);
  {
    size_t idx = 0;
    for (int p = 0; p < num_peers; ++p)
      for (int item : items_for_peer[p]) result_of[item] = &returned[(idx++) * hidden];
  }
  out.assign(static_cast<size_t>(rows) * hidden, 0.0f);
  for (int r = 0; r < rows; ++r) {
    float* o = &out[size_t(r) * hidden];
    for (int j = 0; j < k; ++j) {
      const float* y = result_of[size_t(r) * k + j];
      const float w = weights[size_t(r) * k + j];
      for (int c = 0; c < hidden; ++c) o[c] += w * y[c];
    }
  }
}

// eep-bench moe: the FFN above on seeded uniform [-1, 1) rows (the same rows on every member for a
// given rows count), one warm-up call, then `iters` timed calls that start together on every
// member of the group. Expert load is counted as in serving, so a caller can see which experts
// the rows reached.
double CpuBackend::benchmark_moe(int layer, int rows, int iters, Group& group) {
  EEP_CHECK(layer >= 0 && layer < cfg_.num_layers && layer < static_cast<int>(slots_.size()),
            ErrorCode::kInvalidArgument,
            "benchmark_moe: layer " + std::to_string(layer) + " is not loaded");
  EEP_CHECK(rows >= 1 && iters >= 1, ErrorCode::kInvalidArgument,
            "benchmark_moe: rows and iters must be at least 1");
  std::vector<float> h(static_cast<size_t>(rows) * cfg_.hidden_size), out;
  uint64_t state = 0x6d6f65ULL + static_cast<uint64_t>(rows);
  for (float& x : h) {  // splitmix64
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    x = static_cast<float>(static_cast<double>((z ^ (z >> 31)) >> 11) * 0x1.0p-52 - 1.0);
  }
  moe(layer, h, rows, group, out);
  group.barrier();
  const auto t0 = Clock::now();
  for (int i = 0; i < iters; ++i) moe(layer, h, rows, group, out);
  return std::chrono::duration<double>(Clock::now() - t0).count() / iters;
}

}  // namespace eep
