// Router: softmax over the experts' fp32 logits, then top-k by repeated warp arg-max (ties to
// the lower expert id, as the CPU reference's strict '>'), then optional renormalisation.
// One warp per row; the row's probabilities live in shared memory.
#pragma once

#include "common.cuh"
#include "launch.cuh"

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
  pdl_begin();  // launch.cuh: before any global memory access
  extern __shared__ float probs_smem[];
  const int warp = threadIdx.x >> 5;
  const int row = blockIdx.x * kRouterWarps + warp;
  if (row >= rows) return;  // whole warps leave together: no block-level barrier below
  router_topk_warp(logits + size_t(row) * num_experts, probs_smem + warp * num_experts,
                   num_experts, k, renorm, ids + size_t(row) * k, weights + size_t(row) * k);
}

// The router GEMM and the top-k in one launch, for a few rows (decode). Block (row, part)
// computes the logits of kRouterExpertsPerBlock experts (a warp per expert: lanes over the
// hidden dimension with float4 loads of the fp32 router and of the row staged in shared
// memory, then a warp sum) into logits[row]; the last block of a row to finish (a per-row
// arrival counter) does the softmax and top-k and resets the counter, so the kernel can be
// replayed from a graph. Spreading a row over blocks matters: one block reading the whole 1 MB
// router of Qwen3-30B-A3B took 18 us on the H100. The first kRouterHeldLoads float4 of each
// lane's weights are loaded before pdl_begin() (the router is constant during a step), so they
// arrive while the norm before still runs; the sum keeps the same order.
constexpr int kRouterExpertsPerBlock = 8;  // one warp each
constexpr int kRouterHeldLoads = 16;       // float4 per lane: all of it up to hidden 2048

__global__ void router_fused_kernel(const float* __restrict__ x, const float* __restrict__ w,
                                    int hidden, int num_experts, int k, bool renorm,
                                    float* logits, unsigned* counters,
                                    int32_t* __restrict__ ids, float* __restrict__ weights) {
  extern __shared__ float smem_f[];
  float* xs = smem_f;                  // [hidden]
  float* probs = smem_f + hidden;      // [num_experts] (last block only)
  __shared__ bool last;
  const int row = blockIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int e = blockIdx.y * kRouterExpertsPerBlock + warp;
  const bool vec = (hidden & 3) == 0 && e < num_experts;
  const float* we = w + size_t(e) * hidden;
  const float4* w4 = reinterpret_cast<const float4*>(we);
  float4 held[kRouterHeldLoads];
#pragma unroll
  for (int j = 0; j < kRouterHeldLoads; ++j) {
    const int i = lane + 32 * j;
    held[j] = vec && i < hidden / 4 ? __ldg(w4 + i) : make_float4(0, 0, 0, 0);
  }
  pdl_begin();  // launch.cuh: the loads above read only weights
  const float* xr = x + size_t(row) * hidden;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) xs[i] = xr[i];
  __syncthreads();
  float* lr = logits + size_t(row) * num_experts;
  if (e < num_experts) {
    float acc = 0.0f;
    if (vec) {
      const float4* x4 = reinterpret_cast<const float4*>(xs);
#pragma unroll
      for (int j = 0; j < kRouterHeldLoads; ++j) {
        const int i = lane + 32 * j;
        if (i < hidden / 4) {
          const float4 a = held[j], b = x4[i];
          acc += a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
        }
      }
      for (int i = lane + 32 * kRouterHeldLoads; i < hidden / 4; i += 32) {
        const float4 a = __ldg(w4 + i), b = x4[i];
        acc += a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
      }
    } else {
      for (int i = lane; i < hidden; i += 32) acc += we[i] * xs[i];
    }
    acc = warp_sum(acc);
    if (lane == 0) lr[e] = acc;
  }
  // Publish this block's logits, then count it in; the last block of the row goes on.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(counters + row, 1u) == gridDim.y - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  if (warp == 0) {
    const volatile float* vl = lr;  // written by other blocks: read from memory, not L1
    for (int i = lane; i < num_experts; i += 32) probs[i] = vl[i];
    __syncwarp();
    router_topk_warp(probs, probs, num_experts, k, renorm, ids + size_t(row) * k,
                     weights + size_t(row) * k);
    if (lane == 0) counters[row] = 0;  // ready for the next launch (graph replays included)
  }
}

}  // namespace eep::kernels::detail
