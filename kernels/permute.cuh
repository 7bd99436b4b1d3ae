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
// plan and copy.
#pragma once

#include "combine.cuh"
#include "common.cuh"
#include "launch.cuh"
#include "permute_plan.cuh"

namespace eep::kernels::detail {

__global__ void permute_plan_kernel(const int32_t* __restrict__ topk_ids, int num_pairs,
                                    int num_experts, const LocalRoute rt,
                                    int32_t* __restrict__ expert_offsets,
                                    int32_t* __restrict__ slot_rows,
                                    const __nv_bfloat16* __restrict__ x, int k, int hidden,
                                    __nv_bfloat16* __restrict__ permuted, bool cache) {
  pdl_begin();  // launch.cuh: before any global memory access
  extern __shared__ int smem_i[];
  permute_plan_block(topk_ids, num_pairs, num_experts, rt, expert_offsets, slot_rows, x, k,
                     hidden, permuted, cache, smem_i);
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
