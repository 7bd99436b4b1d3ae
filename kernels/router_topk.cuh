// Router: softmax over the experts' fp32 logits, then top-k by repeated warp arg-max (ties to
// the lower expert id, as the CPU reference's strict '>'), then optional renormalisation.
// One warp per row; the row's probabilities live in shared memory.
#pragma once

#include "common.cuh"

namespace eep::kernels::detail {

constexpr int kRouterWarps = 4;  // rows per block

// Softmax and top-k of one row's logits lr by one warp, probabilities in probs (shared memory,
// num_experts floats); lanes < k write ids/weights of the row.
__device__ __forceinline__ void router_topk_warp(const float* lr, float* probs, int num_experts,
                                                 int k, bool renorm, int32_t* __restrict__ ids,
                                                 float* __restrict__ weights) {
  const int lane = threadIdx.x & 31;

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
    ids[lane] = my_id;
    weights[lane] = my_w;
  }
}

__global__ void router_topk_kernel(const float* __restrict__ logits, int rows, int num_experts,
                                   int k, bool renorm, int32_t* __restrict__ ids,
                                   float* __restrict__ weights) {
  extern __shared__ float probs_smem[];
  const int warp = threadIdx.x >> 5;
  const int row = blockIdx.x * kRouterWarps + warp;
  if (row >= rows) return;  // whole warps leave together: no block-level barrier below
  router_topk_warp(logits + size_t(row) * num_experts, probs_smem + warp * num_experts,
                   num_experts, k, renorm, ids + size_t(row) * k, weights + size_t(row) * k);
}

// The router GEMM and the top-k in one launch, for a few rows (decode): one block per row. The
// row (fp32) is staged in shared memory; warp w computes the logits of experts w, w + 32, ...
// (lanes over the hidden dimension, then a warp sum); warp 0 then does the softmax and top-k.
// Each block reads the whole router (num_experts x hidden fp32) from L2, which is why this
// form is for small batches only.
constexpr int kRouterFusedThreads = 1024;

__global__ void router_fused_kernel(const float* __restrict__ x, const float* __restrict__ w,
                                    int hidden, int num_experts, int k, bool renorm,
                                    int32_t* __restrict__ ids, float* __restrict__ weights) {
  extern __shared__ float smem_f[];
  float* xs = smem_f;                  // [hidden]
  float* logits = smem_f + hidden;     // [num_experts]
  float* probs = logits + num_experts; // [num_experts]
  const int row = blockIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const float* xr = x + size_t(row) * hidden;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) xs[i] = xr[i];
  __syncthreads();
  for (int e = warp; e < num_experts; e += warps) {
    const float* we = w + size_t(e) * hidden;
    float acc = 0.0f;
    if ((hidden & 3) == 0) {
      const float4* w4 = reinterpret_cast<const float4*>(we);
      const float4* x4 = reinterpret_cast<const float4*>(xs);
      for (int i = lane; i < hidden / 4; i += 32) {
        const float4 a = w4[i], b = x4[i];
        acc += a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
      }
    } else {
      for (int i = lane; i < hidden; i += 32) acc += we[i] * xs[i];
    }
    acc = warp_sum(acc);
    if (lane == 0) logits[e] = acc;
  }
  __syncthreads();
  if (warp == 0)
    router_topk_warp(logits, probs, num_experts, k, renorm, ids + size_t(row) * k,
                     weights + size_t(row) * k);
}

}  // namespace eep::kernels::detail
