// Token permutation for MoE dispatch/combine on one GPU.
//
// permute_plan_kernel (one block): assigns each (token, slot) pair a row of the expert-grouped
// buffer, stable in (token, slot) order. Warp w owns a contiguous segment of the pairs. Pass 1
// counts, per warp and expert, with __match_any_sync (the lowest lane of each expert's group
// adds the group's size, so no atomics). Then an exclusive scan over (expert, warp) gives each
// warp the first row it may use per expert, and pass 2 walks the segment again handing out rows
// in order. Deterministic: no atomics, no dependence on scheduling.
#pragma once

#include "common.cuh"
#include "launch.cuh"

namespace eep::kernels::detail {

__global__ void permute_plan_kernel(const int32_t* __restrict__ topk_ids, int num_pairs,
                                    int num_experts, int32_t* __restrict__ expert_offsets,
                                    int32_t* __restrict__ slot_rows) {
  pdl_begin();  // launch.cuh: before any global memory access
  extern __shared__ int smem_i[];
  const int num_warps = blockDim.x / 32;
  int* counts = smem_i;                             // [num_warps][num_experts]
  int* totals = smem_i + num_warps * num_experts;   // [num_experts]
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const unsigned lanes_below = (1u << lane) - 1u;
  for (int i = threadIdx.x; i < num_warps * num_experts; i += blockDim.x) counts[i] = 0;
  __syncthreads();

  const int seg = (num_pairs + num_warps - 1) / num_warps;
  const int seg_begin = min(num_pairs, warp * seg);
  const int seg_end = min(num_pairs, seg_begin + seg);
  int* my_counts = counts + warp * num_experts;

  // Pass 1: count.
  for (int base = seg_begin; base < seg_end; base += 32) {
    const int s = base + lane;
    int e = s < seg_end ? topk_ids[s] : -1;
    if (e >= num_experts) e = -1;  // invalid id: the pair is dropped (slot_rows = -1)
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
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int run = 0;
    for (int e = 0; e < num_experts; ++e) {
      const int c = totals[e];
      totals[e] = run;
      expert_offsets[e] = run;
      run += c;
    }
    expert_offsets[num_experts] = run;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < num_warps * num_experts; i += blockDim.x)
    counts[i] += totals[i % num_experts];
  __syncthreads();

  // Pass 2: hand out rows.
  for (int base = seg_begin; base < seg_end; base += 32) {
    const int s = base + lane;
    int e = s < seg_end ? topk_ids[s] : -1;
    if (e >= num_experts) e = -1;
    const unsigned group = __match_any_sync(kFullMask, e);
    const int leader_first = e >= 0 ? my_counts[e] : 0;
    if (s < seg_end) slot_rows[s] = e >= 0 ? leader_first + __popc(group & lanes_below) : -1;
    __syncwarp();
    if (e >= 0 && (group & lanes_below) == 0) my_counts[e] += __popc(group);
    __syncwarp();
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
  const __nv_bfloat16* src = x + size_t(s / k) * hidden;
  __nv_bfloat16* dst = permuted + size_t(row) * hidden;
  if (hidden % 8 == 0) {
    const uint4* s4 = reinterpret_cast<const uint4*>(src);
    uint4* d4 = reinterpret_cast<uint4*>(dst);
    for (int i = threadIdx.x; i < hidden / 8; i += blockDim.x) d4[i] = s4[i];
  } else {
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = src[i];
  }
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
  const int32_t* rows = slot_rows + size_t(t) * k;
  const float* w = weights + size_t(t) * k;
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int j = 0; j < k; ++j) {
    const int r = rows[j];
    if (r < 0) continue;
    const uint4 raw = *reinterpret_cast<const uint4*>(y + size_t(r) * hidden + c);
    const __nv_bfloat162* v = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 f = __bfloat1622float2(v[e]);
      acc[2 * e] += w[j] * f.x;
      acc[2 * e + 1] += w[j] * f.y;
    }
  }
  uint4 packed;
  __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(&packed);
#pragma unroll
  for (int e = 0; e < 4; ++e) o[e] = __floats2bfloat162_rn(acc[2 * e], acc[2 * e + 1]);
  *reinterpret_cast<uint4*>(out + size_t(t) * hidden + c) = packed;
}

}  // namespace eep::kernels::detail
