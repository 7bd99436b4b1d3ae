// Router: softmax over the experts' fp32 logits, then top-k by repeated warp arg-max (ties to
// the lower expert id, as the CPU reference's strict '>'), then optional renormalisation.
// One warp per row; the row's probabilities live in shared memory.
#pragma once

#include "common.cuh"

namespace eep::kernels::detail {

constexpr int kRouterWarps = 4;  // rows per block

__global__ void router_topk_kernel(const float* __restrict__ logits, int rows, int num_experts,
                                   int k, bool renorm, int32_t* __restrict__ ids,
                                   float* __restrict__ weights) {
  extern __shared__ float probs_smem[];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int row = blockIdx.x * kRouterWarps + warp;
  if (row >= rows) return;  // whole warps leave together: no block-level barrier below
  float* probs = probs_smem + warp * num_experts;
  const float* lr = logits + size_t(row) * num_experts;

  // Softmax in fp32.
  float mx = -INFINITY;
  for (int e = lane; e < num_experts; e += 32) mx = fmaxf(mx, lr[e]);
  mx = warp_max(mx);
  float sum = 0.0f;
  for (int e = lane; e < num_experts; e += 32) {
    const float p = expf(lr[e] - mx);
    probs[e] = p;
    sum += p;
  }
  sum = warp_sum(sum);
  const float inv = 1.0f / sum;
  for (int e = lane; e < num_experts; e += 32) probs[e] *= inv;
  __syncwarp();

  // Top-k: probabilities are >= 0, so -1 marks an expert already taken.
  float my_w = 0.0f;  // lane j keeps the j-th weight
  int my_id = 0;
  for (int j = 0; j < k; ++j) {
    float best = -1.0f;
    int best_id = num_experts;
    for (int e = lane; e < num_experts; e += 32) {
      const float p = probs[e];
      if (p > best) {  // e increases: strict '>' keeps the lower id among this lane's equals
        best = p;
        best_id = e;
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ob = __shfl_xor_sync(kFullMask, best, o);
      const int oi = __shfl_xor_sync(kFullMask, best_id, o);
      if (ob > best || (ob == best && oi < best_id)) {
        best = ob;
        best_id = oi;
      }
    }
    if (lane == j) {
      my_w = best;
      my_id = best_id;
    }
    if (lane == 0) probs[best_id] = -1.0f;
    __syncwarp();
  }
  if (renorm) {
    // Sequential sum in slot order, as the reference does.
    float s = 0.0f;
    for (int j = 0; j < k; ++j) s += __shfl_sync(kFullMask, my_w, j);
    my_w /= s;
  }
  if (lane < k) {
    ids[size_t(row) * k + lane] = my_id;
    weights[size_t(row) * k + lane] = my_w;
  }
}

}  // namespace eep::kernels::detail
