// Token permutation for MoE dispatch/combine on one GPU.
//
// permute_plan_kernel (one block): assigns each (token, slot) pair a row of the expert-grouped
// buffer, stable in (token, slot) order. Warp w owns a contiguous segment of the pairs. Pass 1
// counts, per warp and expert, with __match_any_sync (the lowest lane of each expert's group
// adds the group's size, so no atomics). Then an exclusive scan over (expert, warp) gives each
// warp the first row it may use per expert, and pass 2 walks the segment again handing out rows
// in order. Deterministic: no atomics, no dependence on scheduling.
//
// With a LocalRoute (a group of one, moe_route.cu's rule) the pairs' buckets are the local slots
// their (expert, item) pairs route to, computed in both passes instead of read, the per-slot load
// is added from the counts (no atomics per item), and the first pair that has no slot here is
// recorded. Small batches (decode) also copy the rows in the same block: one launch for routing,
// plan and copy. At batch 1 the kernel is a chain of dependent loads, so what can be is loaded
// early: the route table and the load counters into shared memory before the PDL wait, x's rows
// into registers right after it, with the ids.
#pragma once

#include "combine.cuh"
#include "common.cuh"
#include "launch.cuh"

namespace eep::kernels::detail {

// moe_route.cu's replica rule for a group of one (route: replica counts, replica slots, the
// expert of each local slot; see route_local in eep_kernels.h).
struct LocalRoute {
  const int32_t* route = nullptr;  // null: the ids are the buckets
  int max_replicas = 0, first_slot = 0, spr = 0, layer = 0, num_experts = 0;
  unsigned long long* load = nullptr;
  int32_t* error = nullptr;
};

// Ints of rt.route: replica counts, replica slots, the expert of each local slot.
__host__ __device__ inline long long route_table_ints(int num_experts, int max_replicas,
                                                      int spr) {
  return (long long)num_experts * (1 + max_replicas) + spr;
}

// The local slot of item i with expert e, or -1; *slot and *holds say why for the error record.
// route: rt.route or its copy in shared memory.
__device__ __forceinline__ int local_slot_of(const LocalRoute& rt, const int32_t* route, int i,
                                             int e, int* slot, int* holds) {
  const int32_t* replicas = route;
  const int32_t* table = route + rt.num_experts;
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

// The inline copy's 16-byte chunks of x held in registers a thread (see the kernel).
constexpr int kInlineCopyChunks = 4;

// Shared memory: counts [warps][num_experts], totals [num_experts], then with `cache` the pairs'
// buckets [num_pairs], then with `route_in_smem` (a route given) the load counters
// [num_experts] (8-byte aligned) and the route table (route_table_ints).
__global__ void permute_plan_kernel(const int32_t* __restrict__ topk_ids, int num_pairs,
                                    int num_experts, const LocalRoute rt,
                                    int32_t* __restrict__ expert_offsets,
                                    int32_t* __restrict__ slot_rows,
                                    const __nv_bfloat16* __restrict__ x, int k, int hidden,
                                    __nv_bfloat16* __restrict__ permuted, bool cache,
                                    bool route_in_smem) {
  extern __shared__ int smem_i[];
  const int num_warps = blockDim.x / 32;
  int* counts = smem_i;                             // [num_warps][num_experts]
  int* totals = smem_i + num_warps * num_experts;   // [num_experts]
  int* cached = cache ? totals + num_experts : nullptr;  // [num_pairs]: each pair's bucket
  int* after = totals + num_experts + (cache ? num_pairs : 0);
  unsigned long long* load_s = reinterpret_cast<unsigned long long*>(
      after + ((reinterpret_cast<uintptr_t>(after) & 7) ? 1 : 0));
  int32_t* route_s = reinterpret_cast<int32_t*>(load_s + num_experts);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const unsigned lanes_below = (1u << lane) - 1u;
  // Before the PDL wait (the widened rule, eep_kernels.h): the route table and this layer's load
  // counters, which no kernel of the step writes but this one (the table changes only by host
  // uploads between steps; the counters only here, the previous step's writes long complete).
  // Each was one more dependent L2 round trip after the ids: replica count, replica slot, the
  // slot's expert, and the counter's read before its add.
  const int32_t* route = rt.route;
  if (route_in_smem) {
    const int n = int(route_table_ints(rt.num_experts, rt.max_replicas, rt.spr));
    for (int i = threadIdx.x; i < n; i += blockDim.x) route_s[i] = rt.route[i];
    if (rt.load)
      for (int e = threadIdx.x; e < num_experts; e += blockDim.x) load_s[e] = rt.load[e];
    route = route_s;
  }
  pdl_begin();  // launch.cuh: before any other global memory access
  // The inline copy's source rows (x is the kernel before's input, complete at the wait), in
  // flight with the ids: thread t holds chunks t, t + blockDim.x, ... of x's rows.
  const int row_chunks = hidden / 8;
  const int x_chunks = permuted ? (num_pairs / k) * row_chunks : 0;
  const bool x_in_regs = permuted && x_chunks <= kInlineCopyChunks * int(blockDim.x);
  uint4 xv[kInlineCopyChunks];
  if (x_in_regs) {
#pragma unroll
    for (int j = 0; j < kInlineCopyChunks; ++j) {
      const int c = threadIdx.x + j * int(blockDim.x);
      if (c < x_chunks) xv[j] = reinterpret_cast<const uint4*>(x)[c];
    }
  }
  for (int i = threadIdx.x; i < num_warps * num_experts; i += blockDim.x) counts[i] = 0;
  __syncthreads();

  const int seg = (num_pairs + num_warps - 1) / num_warps;
  const int seg_begin = min(num_pairs, warp * seg);
  const int seg_end = min(num_pairs, seg_begin + seg);
  int* my_counts = counts + warp * num_experts;

  // The bucket of pair s: its id, or with a route its local slot (-1: dropped).
  auto bucket = [&](int s, bool record) {
    int e = s < seg_end ? topk_ids[s] : -1;
    if (rt.route && s < seg_end) {
      int slot, holds;
      const int local = local_slot_of(rt, route, s, e, &slot, &holds);
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
    if (rt.load && run > 0)  // one thread per slot
      rt.load[e] = (route_in_smem ? load_s[e] : rt.load[e]) + (unsigned long long)run;
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
    const int row = e >= 0 ? leader_first + __popc(group & lanes_below) : -1;
    if (s < seg_end) {
      slot_rows[s] = row;
      if (cached) cached[s] = row;  // the lane read its bucket above; the copy reads its row
    }
    __syncwarp();
    if (e >= 0 && (group & lanes_below) == 0) my_counts[e] += __popc(group);
    __syncwarp();
  }
  // Small batches: the rows too (slot_rows written above by this block: visible after the
  // barrier). From registers: each held chunk to its token's k rows. Else warp w copies pairs
  // w, w + warps, ...; 16 bytes a lane.
  if (permuted == nullptr) return;
  __syncthreads();
  const int32_t* rows_of = cached ? cached : slot_rows;
  if (x_in_regs) {
#pragma unroll
    for (int j = 0; j < kInlineCopyChunks; ++j) {
      const int c = threadIdx.x + j * int(blockDim.x);
      if (c >= x_chunks) break;
      const int t = c / row_chunks, chunk = c % row_chunks;
      for (int choice = 0; choice < k; ++choice) {
        const int row = rows_of[t * k + choice];
        if (row >= 0) reinterpret_cast<uint4*>(permuted + size_t(row) * hidden)[chunk] = xv[j];
      }
    }
    return;
  }
  for (int s = warp; s < num_pairs; s += num_warps) {
    const int row = rows_of[s];
    if (row < 0) continue;
    const uint4* src = reinterpret_cast<const uint4*>(x + size_t(s / k) * hidden);
    uint4* dst = reinterpret_cast<uint4*>(permuted + size_t(row) * hidden);
    for (int i = lane; i < hidden / 8; i += 32) dst[i] = src[i];
  }
}

// One block per pair: permuted[slot_rows[s]] = x[s / k], 16-byte copies when hidden % 8 == 0.
__global__ void permute_copy_kernel(const __nv_bfloat16* __restrict__ x,
                                    const int32_t* __restrict__ slot_rows, int k, int hidden,
                                    __nv_bfloat16* __restrict__ permuted) {
  pdl_begin();  // launch.cuh: before any global memory access
  const int s = blockIdx.x;
  const int row = slot_rows[s];
  if (row < 0) return;
  copy_row_block(x + size_t(s / k) * hidden, permuted + size_t(row) * hidden, hidden);
}

// One block per token: out[t] = sum_j weights[t][j] * y[slot_rows[t*k + j]], j in order.
__global__ void unpermute_kernel(const __nv_bfloat16* __restrict__ y,
                                 const int32_t* __restrict__ slot_rows,
                                 const float* __restrict__ weights, int k, int hidden,
                                 __nv_bfloat16* __restrict__ out) {
  pdl_begin();  // launch.cuh: before any global memory access
  const int t = blockIdx.x;
  const int32_t* rows = slot_rows + size_t(t) * k;
  const float* w = weights + size_t(t) * k;
  for (int d = threadIdx.x; d < hidden; d += blockDim.x) {
    float acc = 0.0f;
    for (int j = 0; j < k; ++j) {
      const int r = rows[j];
      if (r >= 0) acc += w[j] * __bfloat162float(y[size_t(r) * hidden + d]);
    }
    out[size_t(t) * hidden + d] = __float2bfloat16(acc);
  }
}


// The same combine, 8 elements (16 bytes) per thread: a thread issues the k rows' loads of its
// 8 columns at once, so a decode batch of a few tokens is not a chain of dependent loads through
// one block. Needs hidden % 8 == 0 and 16-byte aligned rows. Grid: ceil(tokens * hidden / 8 /
// blockDim) blocks over (token, 8-column group).
__global__ void unpermute_vec8_kernel(const __nv_bfloat16* __restrict__ y,
                                      const int32_t* __restrict__ slot_rows,
                                      const float* __restrict__ weights, int num_tokens, int k,
                                      int hidden, __nv_bfloat16* __restrict__ out) {
  pdl_begin();  // launch.cuh: before any global memory access
  const int groups = hidden / 8;
  const long long g = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (g >= (long long)num_tokens * groups) return;
  const int t = int(g / groups);
  const int c = int(g % groups) * 8;
  *reinterpret_cast<uint4*>(out + size_t(t) * hidden + c) =
      combine8(y, slot_rows + size_t(t) * k, weights + size_t(t) * k, k, hidden, c);
}

}  // namespace eep::kernels::detail
