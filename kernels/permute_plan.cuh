// The permutation plan as a block-level device function (permute.cuh's comment describes it),
// with the replica rule of a group of one and the launch shape, for the kernels that run a plan:
// permute_plan_kernel (permute.cuh) and router_fused's last block (router_topk.cuh). Device
// functions and host inlines only, so more than one .cu file may include it.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "common.cuh"

namespace eep::kernels::detail {

// moe_route.cu's replica rule for a group of one (route: replica counts, replica slots, the
// expert of each local slot; see route_local in eep_kernels.h).
struct LocalRoute {
  const int32_t* route = nullptr;  // null: the ids are the buckets
  int max_replicas = 0, first_slot = 0, spr = 0, layer = 0, num_experts = 0;
  unsigned long long* load = nullptr;
  int32_t* error = nullptr;
};

// The local slot of item i with expert e, or -1; *slot and *holds say why for the error record.
__device__ __forceinline__ int local_slot_of(const LocalRoute& rt, int i, int e, int* slot,
                                             int* holds) {
  const int32_t* replicas = rt.route;
  const int32_t* table = rt.route + rt.num_experts;
  const int32_t* slot_expert = table + size_t(rt.num_experts) * rt.max_replicas;
  *slot = -1;
  *holds = -2;
  if (e < 0 || e >= rt.num_experts || replicas[e] <= 0) return -1;
  *slot = table[size_t(e) * rt.max_replicas + i % replicas[e]];
  const int s = *slot - rt.first_slot;
  if (s < 0 || s >= rt.spr) return -1;
  *holds = slot_expert[s];
  return *holds == e ? s : -1;
}

// Rows to copy in the plan's own block (one launch at decode sizes): at most this many elements.
constexpr long long kInlineCopyElements = 64 * 1024;

// How a plan of `pairs` pairs over num_buckets runs in a block of `warps` warps: its shared
// memory (the counts, under the default 48 KiB), whether the pairs' buckets are cached there
// too, and whether the block also copies the rows (copy: there are rows to copy).
struct PlanShape {
  size_t smem = 0;
  bool cache = false;
  bool inline_copy = false;
};
inline PlanShape plan_shape(long long pairs, int num_buckets, int warps, int hidden, bool copy) {
  PlanShape p;
  p.smem = sizeof(int) * size_t(warps + 1) * num_buckets;
  p.cache = p.smem + sizeof(int) * size_t(pairs) <= 48 * 1024;
  if (p.cache) p.smem += sizeof(int) * size_t(pairs);
  p.inline_copy = copy && hidden % 8 == 0 && pairs * hidden <= kInlineCopyElements;
  return p;
}

// The plan by one whole block (any number of warps) in smem_i: (warps + 1) * num_experts ints,
// plus num_pairs more when cache. The ids are read through L2 (ld.global.cg): router_fused's
// last block runs this on ids that other blocks of the same launch wrote.
__device__ __forceinline__ void permute_plan_block(
    const int32_t* topk_ids, int num_pairs, int num_experts, const LocalRoute& rt,
    int32_t* __restrict__ expert_offsets, int32_t* __restrict__ slot_rows,
    const __nv_bfloat16* __restrict__ x, int k, int hidden, __nv_bfloat16* __restrict__ permuted,
    bool cache, int* smem_i) {
  const int num_warps = blockDim.x / 32;
  int* counts = smem_i;                             // [num_warps][num_experts]
  int* totals = smem_i + num_warps * num_experts;   // [num_experts]
  int* cached = cache ? totals + num_experts : nullptr;  // [num_pairs]: each pair's bucket
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const unsigned lanes_below = (1u << lane) - 1u;
  for (int i = threadIdx.x; i < num_warps * num_experts; i += blockDim.x) counts[i] = 0;
  __syncthreads();

  const int seg = (num_pairs + num_warps - 1) / num_warps;
  const int seg_begin = min(num_pairs, warp * seg);
  const int seg_end = min(num_pairs, seg_begin + seg);
  int* my_counts = counts + warp * num_experts;

  // The bucket of pair s: its id, or with a route its local slot (-1: dropped).
  auto bucket = [&](int s, bool record) {
    int e = s < seg_end ? __ldcg(topk_ids + s) : -1;
    if (rt.route && s < seg_end) {
      int slot, holds;
      const int local = local_slot_of(rt, s, e, &slot, &holds);
      if (local < 0 && record && atomicCAS(rt.error, 0, 1) == 0) {
        rt.error[1] = rt.layer;
        rt.error[2] = e;
        rt.error[3] = slot;
        rt.error[4] = holds;
      }
      e = local;
    }
    return e >= num_experts ? -1 : e;  // invalid id: the pair is dropped (slot_rows = -1)
  };

  // With room in shared memory, every pair's bucket first: the loop's iterations are
  // independent, so the loads of a warp's pairs (the id, then the route table's entries) are in
  // flight together, and neither pass below waits on them again (at 2048 pairs, two passes of
  // two dependent load chains per warp were most of the kernel's 12 us).
  if (cached) {
#pragma unroll 4
    for (int s = seg_begin + lane; s < seg_end; s += 32) cached[s] = bucket(s, true);
    __syncwarp();
  }
  auto bucket_of = [&](int s, bool record) {
    return cached ? (s < seg_end ? cached[s] : -1) : bucket(s, record);
  };

  // Pass 1: count.
  for (int base = seg_begin; base < seg_end; base += 32) {
    const int s = base + lane;
    const int e = bucket_of(s, true);
    const unsigned group = __match_any_sync(kFullMask, e);
    if (e >= 0 && (group & lanes_below) == 0) my_counts[e] += __popc(group);
    __syncwarp();
  }
  __syncthreads();

  // Scan: per expert over warps, then over experts.
  for (int e = threadIdx.x; e < num_experts; e += blockDim.x) {
    int run = 0;
    for (int w = 0; w < num_warps; ++w) {
      const int c = counts[w * num_experts + e];
      counts[w * num_experts + e] = run;
      run += c;
    }
    totals[e] = run;
    if (rt.load && run > 0) rt.load[e] += (unsigned long long)run;  // one thread per slot
  }
  __syncthreads();
  if (warp == 0) {  // exclusive scan of the totals, 32 experts a round
    int carry = 0;
    for (int base = 0; base < num_experts; base += 32) {
      const int e = base + lane;
      const int c = e < num_experts ? totals[e] : 0;
      int incl = c;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const int up = __shfl_up_sync(kFullMask, incl, o);
        if (lane >= o) incl += up;
      }
      if (e < num_experts) {
        totals[e] = carry + incl - c;
        expert_offsets[e] = carry + incl - c;
      }
      carry += __shfl_sync(kFullMask, incl, 31);
    }
    if (lane == 0) expert_offsets[num_experts] = carry;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < num_warps * num_experts; i += blockDim.x)
    counts[i] += totals[i % num_experts];
  __syncthreads();

  // Pass 2: hand out rows.
  for (int base = seg_begin; base < seg_end; base += 32) {
    const int s = base + lane;
    const int e = bucket_of(s, false);
    const unsigned group = __match_any_sync(kFullMask, e);
    const int leader_first = e >= 0 ? my_counts[e] : 0;
    if (s < seg_end) slot_rows[s] = e >= 0 ? leader_first + __popc(group & lanes_below) : -1;
    __syncwarp();
    if (e >= 0 && (group & lanes_below) == 0) my_counts[e] += __popc(group);
    __syncwarp();
  }
  // Small batches: the rows too (slot_rows written above by this block: visible after the
  // barrier). Warp w copies pairs w, w + warps, ...; 16 bytes a lane.
  if (permuted == nullptr) return;
  __syncthreads();
  for (int s = warp; s < num_pairs; s += num_warps) {
    const int row = slot_rows[s];
    if (row < 0) continue;
    const uint4* src = reinterpret_cast<const uint4*>(x + size_t(s / k) * hidden);
    uint4* dst = reinterpret_cast<uint4*>(permuted + size_t(row) * hidden);
    for (int i = lane; i < hidden / 8; i += 32) dst[i] = src[i];
  }
}

// permute_copy_kernel over the pairs (none when pairs is 0 or permuted null): the rows a plan
// whose shape has no inline copy leaves to copy (permute.cu).
void permute_copy(const __nv_bfloat16* x, const int32_t* slot_rows, long long pairs, int k,
                  int hidden, __nv_bfloat16* permuted, cudaStream_t stream);

}  // namespace eep::kernels::detail
