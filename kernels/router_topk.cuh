// Router: softmax over the experts' fp32 logits, then top-k by repeated warp arg-max (ties to
// the lower expert id, as the CPU reference's strict '>'), then optional renormalisation.
// One warp per row; the row's probabilities live in shared memory.
#pragma once

#include <cstdint>

#include <cooperative_groups.h>

#include "common.cuh"
#include "launch.cuh"
#include "mma.cuh"  // cp_async16, cp_async_commit, cp_async_wait, smem_u32

namespace eep::kernels::detail {

constexpr int kRouterWarps = 4;  // rows per block

// Softmax of one row's logits lr by one warp into probs (shared memory, num_experts floats; may
// be lr itself).
__device__ __forceinline__ void router_softmax_warp(const float* lr, float* probs,
                                                    int num_experts) {
  const int lane = threadIdx.x & 31;
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
}

// Softmax and top-k of one row's logits lr by one warp, probabilities in probs (shared memory,
// num_experts floats); lanes < k write ids/weights of the row.
__device__ __forceinline__ void router_topk_warp(const float* lr, float* probs, int num_experts,
                                                 int k, bool renorm, int32_t* __restrict__ ids,
                                                 float* __restrict__ weights) {
  const int lane = threadIdx.x & 31;
  router_softmax_warp(lr, probs, num_experts);

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
// computes the logits of WARPS experts (a warp per expert: lanes over the hidden dimension with
// float4 loads of the fp32 router and of the row staged in shared memory, then a warp sum).
// Spreading a row over blocks matters: one block reading the whole 1 MB router of
// Qwen3-30B-A3B took 18 us on the H100. The first kRouterHeldLoads float4 of each lane's
// weights are loaded before pdl_begin() (the router is constant during a step), so they arrive
// while the norm before still runs; the sum keeps the same order.
// Then the softmax and top-k of the row, by one warp, on the logits gathered one of two ways:
// - CLUSTER (the blocks of a row are one thread-block cluster, at most 8): each warp writes its
//   logit into the shared memory of the cluster's first block, a cluster barrier, and that
//   block goes on. No workspace, nothing to reset.
// - else (more experts than 8 blocks of 16 warps hold): each block writes its logits to
//   `logits` and counts itself in on a per-row arrival counter; the last block of the row
//   reads them back, goes on and resets the counter (graph-replayable). The fence, the atomic
//   and the read-back are three L2 round trips the cluster form does not make.
// Both give the same bits: a logit is one warp's sum either way.
constexpr int kRouterExpertsPerBlock = 8;          // warps of the counter form
constexpr int kRouterClusterExpertsPerBlock = 16;  // warps of the cluster form
constexpr int kRouterMaxClusterBlocks = 8;         // portable cluster size
constexpr int kRouterHeldLoads = 16;       // float4 per lane: all of it up to hidden 2048

template <int WARPS, bool CLUSTER>
__global__ void __launch_bounds__(32 * WARPS)
    router_fused_kernel(const float* __restrict__ x, const float* __restrict__ w, int hidden,
                        int num_experts, int k, bool renorm, float* logits, unsigned* counters,
                        int32_t* __restrict__ ids, float* __restrict__ weights) {
  extern __shared__ float smem_f[];
  float* xs = smem_f;                  // [hidden]
  float* probs = smem_f + hidden;      // [num_experts] (the block that does the top-k)
  const int row = blockIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int e = blockIdx.y * WARPS + warp;
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
  if ((hidden & 3) == 0 && (reinterpret_cast<uintptr_t>(xr) & 15) == 0) {
    const float4* xr4 = reinterpret_cast<const float4*>(xr);
    float4* xs4 = reinterpret_cast<float4*>(xs);
    for (int i = threadIdx.x; i < hidden / 4; i += blockDim.x) xs4[i] = xr4[i];
  } else {
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) xs[i] = xr[i];
  }
  __syncthreads();
  float acc = 0.0f;
  if (e < num_experts) {
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
  }
  if constexpr (CLUSTER) {
    cooperative_groups::cluster_group cluster = cooperative_groups::this_cluster();
    if (e < num_experts && lane == 0) *cluster.map_shared_rank(probs + e, 0) = acc;
    cluster.sync();  // every logit is in block 0's shared memory
    if (cluster.block_rank() != 0 || warp != 0) return;
    router_topk_warp(probs, probs, num_experts, k, renorm, ids + size_t(row) * k,
                     weights + size_t(row) * k);
  } else {
    float* lr = logits + size_t(row) * num_experts;
    if (e < num_experts && lane == 0) lr[e] = acc;
    // Publish this block's logits, then count it in; the last block of the row goes on.
    __shared__ bool last;
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
}

// The router GEMM (logits = x . w^T, fp32 in, fp32 accumulation, no TF32) and the router's
// softmax/top-k in one launch for tens to thousands of rows (router_tiled, eep_kernels.h; the
// launcher, which picks the shapes below, is in router_topk.cu).
//
// Why: at 256 rows of Qwen3-30B-A3B (hidden 2048, 128 experts) cuBLAS's SGEMM, its split-K
// reduce and router_topk are three launches (15 us in a graph on the H100, ~20 in the engine's
// profile); the output is small (rows x 128) and the depth long, so the work is split over k to
// fill the GPU, and the split sums and the top-k are small enough for the same launch.
//
// Shape of the work:
// - A block computes a tile of TR rows x all experts (up to 1024) over one slice of hidden (a
//   "split"). Its 8 warps are EG groups over the experts (each warp 32 lanes x TE experts, lane
//   l owning experts l, l+32, ...) times KG = 8/EG groups over the k of the slice. A thread
//   holds all TR rows x its TE experts, so every w value it reads serves TR rows from
//   registers; x is read as float4 broadcasts (all lanes of a warp read the same address).
//   An 8-k step is 2*TE float4 reads of w + 2*TR broadcasts of x for 8*TR*TE FMAs.
// - w and x are staged in shared memory by cp.async in chunks of KC k, two chunks in flight.
//   w is copied row-contiguous (coalesced; a first version read w straight from global memory,
//   a lane per expert, so every load instruction touched 32 lines for 16 bytes each) into rows
//   padded to KC + 4 floats, so a warp's float4 reads of 8 consecutive experts hit distinct
//   banks. The first two chunks of w (at Qwen3 decode shapes most or all of a block's w)
//   are issued before pdl_begin() (w is constant during a step), to arrive while the kernel
//   before still runs; halving the stage was no faster at any batch size measured.
// - The S splits of a row tile are one thread-block cluster (S <= 8, the portable size; the
//   launcher takes S so that the clusters run in one wave). Each block sums its warps'
//   partials in shared memory; after a cluster barrier, block s of the cluster sums rows s,
//   s+S, ... of the tile over the S blocks' shared memory (distributed shared memory) and does
//   their softmax/top-k. No global workspace and no arrival counters: nothing to reset, so a
//   CUDA graph replays it as it is, and the reduction is spread over the cluster.
// - The summation order is fixed, whichever block runs first: a logit is the sum over
//   s = 0..S-1 (ascending) of [the sum over k-groups g = 0..KG-1 (ascending) of the fma chain of
//   warp g over its k in increasing order]. Deterministic; it differs from the CPU's order (as
//   cuBLAS's does), so ids can differ from the CPU reference on near-ties only.
// - Top-k: router_topk_warp takes k dependent rounds of a warp arg-max (about 6k cycles a row
//   in an ncu profile of this kernel), so when the block's rows x experts^2 is small (Qwen3:
//   128 experts) the block ranks instead: after the softmax, every (row, expert) counts the
//   experts before it in (probability desc, id asc) order, the order of router_topk_warp's
//   picks, and writes itself to slot = rank when rank < k; then the weights are renormalised in
//   slot order as router_topk_warp does.
// - Row tile: the L2 traffic for w is (row tiles) x |w| (1 MB at Qwen3-30B-A3B), the block
//   count at most 8 x (row tiles), and the per-block work TR x experts x hidden / S: 8-row
//   tiles up to 96 rows, 16-row up to 256 (both measured best there on the H100), then 32-row
//   with 2 experts a lane. One block per SM (~150 KB of shared memory): at most 15 clusters of
//   8 run at once on the H100, so 256 rows (16 tiles) take 6 splits, not 8.
// - Measured (H100, graph of back-to-back launches, hidden 2048, 128 experts, k 8): 7.5 us at
//   33 rows, 11.5 at 128, 12.5 at 192, 16.5 at 256, against 11.6 / 12.3 / 14.6 / 15.0 for
//   cuBLAS's SGEMM + router_topk. An ncu profile at 256 rows puts ~25% of a block's time in
//   the FMA loop and the rest in its serial phases (staging, the two reductions with the
//   cluster barrier, softmax and ranking), with 8 warps an SM to hide them: where to look next
//   (two blocks an SM, or w multicast over a cluster of row tiles).

namespace cg = cooperative_groups;

constexpr int kTiledThreads = 256;
constexpr int kTiledWarps = kTiledThreads / 32;
constexpr int kTiledStep = 8;            // k per inner step: two float4 of each w row
constexpr int kTiledStageBytes = 80 * 1024;  // one chunk of w and x (two in flight)
constexpr int kTiledPad = 4;             // floats after each staged w row (bank spread)
constexpr int kTiledMaxSplits = 8;       // portable cluster size
constexpr int kTiledMaxExperts = 1024;
constexpr int kTiledRows8Max = 96;       // up to this many rows: 8-row tiles
constexpr int kTiledRows16Max = 256;     // up to this many (or > 512 experts): 16-row tiles
constexpr int kTiledRankWork = 2048;     // most rank comparisons a thread makes (else warp top-k)

struct RouterTiledArgs {
  const float* x;
  const float* w;
  int32_t* ids;
  float* weights;
  int rows, hidden, num_experts, top_k;
  bool renorm;
  bool rank_topk;  // block-wide ranking instead of router_topk_warp
  int k_split;     // hidden values per split: chunks * kc
  int kc;          // k values per staged chunk, a multiple of 8 * (8 / eg)
  int chunks;
  int eg;          // warp groups over the experts (1, 2, 4 or 8); 8 / eg groups over k
  int nw_log2;     // log2 of the experts the warps cover, eg * 32 * TE
  int region_a;    // floats of the stages / partials region
};

// cp.async of one float (zero-filled when !full); the 16-byte form (mma.cuh) needs 16-byte
// aligned rows, so hidden % 4 == 0.
__device__ __forceinline__ void cp_async4(uint32_t dst, const void* src, bool full) {
  const int n = full ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(n));
}

// Copies rows [0, nrows) x k [kb, kb + kc) of src (row stride `hidden` floats) into dst (row
// stride `stride` floats), zero past `rows_valid` rows and past kend. Issued by the whole block.
template <bool VEC>
__device__ __forceinline__ void tiled_stage(const float* src, int nrows, int rows_valid,
                                            int hidden, int kb, int kc, int kend, float* dst,
                                            int stride) {
  if constexpr (VEC) {
    const int q4 = kc / 4;
    for (int i = threadIdx.x; i < nrows * q4; i += kTiledThreads) {
      const int r = i / q4, q = i - r * q4;
      const int kk = kb + 4 * q;
      const bool ok = r < rows_valid && kk < kend;  // kend % 4 == 0: all in or all out
      cp_async16(smem_u32(dst + r * stride + 4 * q), ok ? src + size_t(r) * hidden + kk : src,
                 ok);
    }
  } else {
    for (int i = threadIdx.x; i < nrows * kc; i += kTiledThreads) {
      const int r = i / kc, q = i - r * kc;
      const int kk = kb + q;
      const bool ok = r < rows_valid && kk < kend;
      cp_async4(smem_u32(dst + r * stride + q), ok ? src + size_t(r) * hidden + kk : src, ok);
    }
  }
}

// Grid (S, row tiles), cluster (S, 1, 1): blockIdx.x is the split and the rank in the cluster.
// Shared memory: region A (two stages of [nw][kc + pad] w and [TR][kc] x, then the warps'
// partials [KG][TR][nw]), then (S > 1) this block's summed rows [ceil(TR / S)][nw], then the
// ranked top-k's slot weights [ceil(TR / S)][32].
template <int TR, int TE, bool VEC>
__global__ void __launch_bounds__(kTiledThreads, 1)
    router_tiled_kernel(const RouterTiledArgs a) {
  extern __shared__ float4 tiled_smem4[];  // float4: 16-byte aligned for cp.async
  float* smem = reinterpret_cast<float*>(tiled_smem4);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int split = blockIdx.x, num_splits = gridDim.x;
  const int row0 = blockIdx.y * TR;
  const int eg = warp % a.eg, kg = warp / a.eg;
  const int groups_k = kTiledWarps / a.eg;
  const int nw = 1 << a.nw_log2;
  const int n = a.num_experts;
  const int kc = a.kc, wstride = kc + kTiledPad;
  const int stage_floats = nw * wstride + TR * kc;
  const int kw = kc / groups_k;         // this warp's k in a chunk, a multiple of kTiledStep
  const int k0 = split * a.k_split;
  const int kend = min(k0 + a.k_split, a.hidden);  // > k0: the launcher leaves no empty split
  const int e0 = eg * 32 * TE + lane;
  const int rows_valid = min(TR, a.rows - row0);
  auto stage_w = [&](int c) {
    if (c < a.chunks)
      tiled_stage<VEC>(a.w, n, n, a.hidden, k0 + c * kc, kc, kend,
                       smem + (c & 1) * stage_floats, wstride);
  };
  auto stage_x = [&](int c) {
    if (c < a.chunks)
      tiled_stage<VEC>(a.x + size_t(row0) * a.hidden, TR, rows_valid, a.hidden, k0 + c * kc, kc,
                       kend, smem + (c & 1) * stage_floats + nw * wstride, kc);
  };

  // Before pdl_begin(): only w (groups 0 and 1: chunks 0 and 1 of w).
  stage_w(0);
  cp_async_commit();
  stage_w(1);
  cp_async_commit();
  pdl_begin();  // launch.cuh: x is written by the kernel before
  stage_x(0);
  cp_async_commit();
  stage_x(1);
  cp_async_commit();

  float acc[TR][TE] = {};
  for (int c = 0; c < a.chunks; ++c) {
    // Pending at most the group of chunk c + 1 (x of chunk 1 at c = 0): chunk c has landed.
    cp_async_wait<1>();
    __syncthreads();
    const float* ws = smem + (c & 1) * stage_floats + kg * kw;
    const float* xs = smem + (c & 1) * stage_floats + nw * wstride + kg * kw;
    if (k0 + c * kc + kg * kw < kend) {  // warp-uniform: slices past hidden hold zeros only
      for (int s = 0; s < kw; s += kTiledStep) {
        float4 wv[TE][2];
#pragma unroll
        for (int j = 0; j < TE; ++j) {
          const float4* w4 = reinterpret_cast<const float4*>(ws + (e0 + 32 * j) * wstride + s);
          wv[j][0] = w4[0];
          wv[j][1] = w4[1];
        }
#pragma unroll
        for (int r = 0; r < TR; ++r) {
          const float4* x4 = reinterpret_cast<const float4*>(xs + r * kc + s);
          const float4 xa = x4[0], xb = x4[1];
#pragma unroll
          for (int j = 0; j < TE; ++j) {
            float v = acc[r][j];
            v = fmaf(xa.x, wv[j][0].x, v);
            v = fmaf(xa.y, wv[j][0].y, v);
            v = fmaf(xa.z, wv[j][0].z, v);
            v = fmaf(xa.w, wv[j][0].w, v);
            v = fmaf(xb.x, wv[j][1].x, v);
            v = fmaf(xb.y, wv[j][1].y, v);
            v = fmaf(xb.z, wv[j][1].z, v);
            v = fmaf(xb.w, wv[j][1].w, v);
            acc[r][j] = v;
          }
        }
      }
    }
    __syncthreads();  // stage c & 1 is free: chunk c + 2 goes there
    stage_w(c + 2);
    stage_x(c + 2);
    cp_async_commit();
  }
  cp_async_wait<0>();  // nothing is in flight into region A past here (only empty groups)

  // The warps' partials, red[g][r][e] (g: k-group), summed over g in ascending order into g 0.
  // Experts >= num_experts (staged w rows never written) are left out.
  float* red = smem;
#pragma unroll
  for (int r = 0; r < TR; ++r)
#pragma unroll
    for (int j = 0; j < TE; ++j) red[(kg * TR + r) * nw + e0 + 32 * j] = acc[r][j];
  __syncthreads();
  for (int i = threadIdx.x; i < TR * nw; i += kTiledThreads) {
    if ((i & (nw - 1)) >= n) continue;
    float part[kTiledWarps];  // all loads first, then the sum in order: one latency, not KG
#pragma unroll
    for (int g = 0; g < kTiledWarps; ++g) part[g] = g < groups_k ? red[g * TR * nw + i] : 0.0f;
    float v = part[0];
#pragma unroll
    for (int g = 1; g < kTiledWarps; ++g)
      if (g < groups_k) v += part[g];
    red[i] = v;
  }

  // Rows split, split + S, ... of the tile are this block's to finish: lg[rr] is row
  // split + rr * S (stride nw), the logits, then the probabilities in place.
  const int mine = (TR - split + num_splits - 1) / num_splits;
  float* lg = red;
  if (num_splits == 1) {
    __syncthreads();
  } else {
    cg::cluster_group cluster = cg::this_cluster();
    cluster.sync();  // every block's sums are in its shared memory (release / acquire)
    lg = smem + a.region_a;
    for (int i = threadIdx.x; i < mine * nw; i += kTiledThreads) {
      const int rr = i >> a.nw_log2, e = i & (nw - 1);
      if (e >= n) continue;
      const int at = (split + rr * num_splits) * nw + e;
      float part[kTiledMaxSplits];  // as above: the loads in flight together, the sum in order
#pragma unroll
      for (int s = 0; s < kTiledMaxSplits; ++s)
        part[s] = s < num_splits ? cluster.map_shared_rank(red, s)[at] : 0.0f;
      float v = part[0];
#pragma unroll
      for (int s = 1; s < kTiledMaxSplits; ++s)
        if (s < num_splits) v += part[s];
      lg[i] = v;
    }
    // Done reading the other blocks' memory (the values are used above, so the reads are
    // complete: relaxed is enough); the matching wait is at the end.
    asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory");
    __syncthreads();
  }
  const int tile_rows = min(mine, (rows_valid - split + num_splits - 1) / num_splits);
  if (!a.rank_topk) {
    for (int rr = warp; rr < tile_rows; rr += kTiledWarps) {
      const int row = row0 + split + rr * num_splits;
      float* l = lg + rr * nw;
      router_topk_warp(l, l, n, a.top_k, a.renorm, a.ids + size_t(row) * a.top_k,
                       a.weights + size_t(row) * a.top_k);
    }
  } else {
    float* slot_w = lg + (num_splits == 1 ? a.region_a : mine * nw);  // [mine][32]
    for (int rr = warp; rr < tile_rows; rr += kTiledWarps)
      router_softmax_warp(lg + rr * nw, lg + rr * nw, n);
    __syncthreads();
    // rank(e) = #{e' : p[e'] > p[e] or (p[e'] == p[e] and e' < e)}: router_topk_warp's order.
    for (int i = threadIdx.x; i < tile_rows * nw; i += kTiledThreads) {
      const int rr = i >> a.nw_log2, e = i & (nw - 1);
      if (e >= n) continue;
      const float* pr = lg + rr * nw;  // 16-byte aligned: nw and region A are multiples of 4
      const float p = pr[e];
      // Four counts in flight (the loop is latency-bound); the same address across the warp's
      // lanes of this row (a broadcast).
      int c0 = 0, c1 = 0, c2 = 0, c3 = 0;
      int f = 0;
      for (; f + 4 <= n; f += 4) {
        const float4 q = *reinterpret_cast<const float4*>(pr + f);
        c0 += (q.x > p) | ((q.x == p) & (f < e));
        c1 += (q.y > p) | ((q.y == p) & (f + 1 < e));
        c2 += (q.z > p) | ((q.z == p) & (f + 2 < e));
        c3 += (q.w > p) | ((q.w == p) & (f + 3 < e));
      }
      for (; f < n; ++f) c0 += (pr[f] > p) | ((pr[f] == p) & (f < e));
      const int rank = c0 + c1 + c2 + c3;
      if (rank < a.top_k) {
        const int row = row0 + split + rr * num_splits;
        a.ids[size_t(row) * a.top_k + rank] = e;
        slot_w[rr * 32 + rank] = p;
      }
    }
    __syncthreads();
    for (int rr = warp; rr < tile_rows; rr += kTiledWarps) {
      const int row = row0 + split + rr * num_splits;
      float my_w = lane < a.top_k ? slot_w[rr * 32 + lane] : 0.0f;
      if (a.renorm) {
        float s = 0.0f;  // sequential sum in slot order, as router_topk_warp and the reference
        for (int j = 0; j < a.top_k; ++j) s += __shfl_sync(kFullMask, my_w, j);
        my_w /= s;
      }
      if (lane < a.top_k) a.weights[size_t(row) * a.top_k + lane] = my_w;
    }
  }
  // A block's shared memory must outlive the other blocks' reads of it.
  if (num_splits > 1) asm volatile("barrier.cluster.wait.aligned;\n" ::: "memory");
}

}  // namespace eep::kernels::detail
