// y[m][n] = x[m][k] · w[n][k]^T for a few rows (decode): a memory-bound matrix-vector product,
// where cuBLAS's GEMM kernels read the weights at well under half the HBM rate for m = 1.
//
// A block owns 8 (4 beyond one row) output columns and its kSkinnyWarps warps split k: warp
// w's lanes take 16-byte chunks of its k-slice, so at k = 2048 every lane issues all of its
// weight loads (one per column) at once, and the block's partial sums meet in shared memory.
// Those first weight loads go out before pdl_begin(): the weights are constant, so they are read
// while the kernel before (the norm or the attention that makes x) still runs. (The earlier form,
// a warp per two columns walking all of k, reached 1.0-1.5 TB/s on q/k/v and o at one row:
// ncu on the H100, docs/cuda.md.)
#include <algorithm>

#include "check.cuh"
#include "common.cuh"
#include "launch.cuh"

namespace eep::kernels {

namespace detail {

// Output columns per block: 8 at one row; 4 beyond (the accumulators and the weights in
// flight would otherwise take ~230 registers at 8 rows and one block per SM).
template <int M>
__host__ __device__ constexpr int skinny_cols() { return M == 1 ? 8 : 4; }
constexpr int kSkinnyWarps = 8;  // warps per block, each a slice of k
constexpr int kSkinnyThreads = 32 * kSkinnyWarps;

__device__ __forceinline__ void store_out(bf16* p, float v) { *p = __float2bfloat16(v); }
__device__ __forceinline__ void store_out(float* p, float v) { *p = v; }

__device__ __forceinline__ float dot8(const uint4& a, const uint4& b) {
  const __nv_bfloat162* pa = reinterpret_cast<const __nv_bfloat162*>(&a);
  const __nv_bfloat162* pb = reinterpret_cast<const __nv_bfloat162*>(&b);
  float s = 0.0f;
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const float2 fa = __bfloat1622float2(pa[e]), fb = __bfloat1622float2(pb[e]);
    s += fa.x * fb.x + fa.y * fb.y;
  }
  return s;
}

// The product: w [n][k], y [rows][n] (OutT).
struct SkinnyProduct {
  const bf16* w;
  void* y;
  int n;
};

// Column group g (kCols columns from g * kCols): its first column and how many of its columns
// exist (the last group may be short).
struct SkinnyGroup {
  long long col0;
  int cols;
};

template <int kCols>
__device__ __forceinline__ SkinnyGroup skinny_group(const SkinnyProduct& p, long long g) {
  SkinnyGroup r;
  r.col0 = g * kCols;
  r.cols = p.n - r.col0 < kCols ? int(p.n - r.col0) : kCols;
  return r;
}

// The 16-byte chunk `chunk` of k of every column of a group (zeros past its last column).
template <int kCols>
__device__ __forceinline__ void load_group_chunk(const SkinnyProduct& p, const SkinnyGroup& grp,
                                                 int k, int chunk, uint4 (&out)[kCols]) {
#pragma unroll
  for (int c = 0; c < kCols; ++c)
    out[c] = c < grp.cols
                 ? __ldg(reinterpret_cast<const uint4*>(p.w + (grp.col0 + c) * k) + chunk)
                 : make_uint4(0, 0, 0, 0);
}

// Persistent (at one row): block b takes groups b, b + gridDim.x, ... (the grid is what fits on
// the GPU at once), so the weight stream does not stop between short-lived blocks: while a
// group's last chunk is summed and reduced, the next group's first weights are in flight.
template <int M, typename OutT>
__global__ void __launch_bounds__(kSkinnyThreads, 2)  // two blocks an SM: 128 registers
    skinny_gemm_kernel(const bf16* __restrict__ x, const SkinnyProduct prod, int k) {
  constexpr int kCols = skinny_cols<M>();
  constexpr bool kPersistent = M == 1;  // see launch_skinny_rows
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const long long groups = (prod.n + kCols - 1) / kCols;
  // This warp's slice of k, in 8-element chunks; lane l takes chunks begin + l, + 32, ...
  const int chunks = k / 8;
  const int per_warp = (chunks + kSkinnyWarps - 1) / kSkinnyWarps;
  const int begin = min(chunks, warp * per_warp), end = min(chunks, begin + per_warp);
  uint4 next[kCols];
  auto load_w = [&](const SkinnyGroup& grp, int chunk) {
    load_group_chunk(prod, grp, k, chunk, next);
  };
  long long g = blockIdx.x;
  SkinnyGroup grp = skinny_group<kCols>(prod, g);
  if (begin + lane < end) load_w(grp, begin + lane);  // before the wait: weights are constant
  pdl_begin();
  __shared__ float partial[kSkinnyWarps][kCols * M];
  for (; g < groups; g += gridDim.x) {
    const long long g_next = kPersistent ? g + gridDim.x : groups;
    const SkinnyGroup grp_next = g_next < groups ? skinny_group<kCols>(prod, g_next) : grp;
    float acc[kCols][M];
#pragma unroll
    for (int c = 0; c < kCols; ++c)
#pragma unroll
      for (int m = 0; m < M; ++m) acc[c][m] = 0.0f;
    for (int chunk = begin + lane; chunk < end; chunk += 32) {
      uint4 wv[kCols];
#pragma unroll
      for (int c = 0; c < kCols; ++c) wv[c] = next[c];
      // In flight meanwhile: this group's next chunk, or the next group's first.
      if (chunk + 32 < end)
        load_w(grp, chunk + 32);
      else if (g_next < groups)
        load_w(grp_next, begin + lane);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const uint4 xv = __ldg(reinterpret_cast<const uint4*>(x + size_t(m) * k) + chunk);
#pragma unroll
        for (int c = 0; c < kCols; ++c) acc[c][m] += dot8(wv[c], xv);
      }
    }
    // Warps' partial sums: each warp reduces its own, then one thread per (column, row) adds
    // the warps' in a fixed order.
#pragma unroll
    for (int c = 0; c < kCols; ++c)
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const float v = warp_sum(acc[c][m]);
        if (lane == 0) partial[warp][c * M + m] = v;
      }
    __syncthreads();
    const int t = threadIdx.x;
    if (t < kCols * M && t / M < grp.cols) {
      float sum = 0.0f;
#pragma unroll
      for (int i = 0; i < kSkinnyWarps; ++i) sum += partial[i][t];
      store_out(static_cast<OutT*>(prod.y) + size_t(t % M) * prod.n + grp.col0 + t / M, sum);
    }
    if (!kPersistent) break;
    __syncthreads();  // partial is reused by the next group
    grp = grp_next;
  }
}

// 2-8 rows: the kernel above with a block per 4 columns spent most of its time outside the
// weight stream (ncu at 8 rows on the H100: ~1 TB/s on q|k|v and o, 1.2 TB/s on lm_head): every
// thread held one 16-byte chunk of k, so each (column, row) needed its own warp sum (160
// shuffles a thread for 256 multiply-adds), and every block read all rows of x again (40 MB of
// L2 reads for 21 MB of q|k|v weights). Here a block stages x in shared memory once and each
// warp takes groups of kRowsCols columns over all of k (lanes over 16-byte chunks, the next
// chunk's weights in flight while one is multiplied), so a warp sum serves k / 256 chunks; the
// grid is what fits on the GPU, and warp v of block b takes groups b * warps + v, then one
// grid's worth of warps further on.
constexpr int kRowsCols = 4;
// x staged as bf16 [M][k]: this much shared memory at most (the launcher falls back above it).
constexpr int kRowsMaxSmem = 96 * 1024;

template <int M, typename OutT>
__global__ void __launch_bounds__(kSkinnyThreads, 2)
    skinny_rows_kernel(const bf16* __restrict__ x, const SkinnyProduct prod, int k) {
  extern __shared__ uint4 xs[];  // [M][k / 8]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const long long groups = (prod.n + kRowsCols - 1) / kRowsCols;
  const long long stride = (long long)gridDim.x * kSkinnyWarps;
  const int chunks = k / 8;
  uint4 next[kRowsCols];
  auto load_w = [&](const SkinnyGroup& grp, int chunk) {
    load_group_chunk(prod, grp, k, chunk, next);
  };
  long long g = (long long)blockIdx.x * kSkinnyWarps + warp;
  SkinnyGroup grp = skinny_group<kRowsCols>(prod, g < groups ? g : 0);
  if (g < groups && lane < chunks) load_w(grp, lane);  // before the wait: weights are constant
  pdl_begin();
  const uint4* x4 = reinterpret_cast<const uint4*>(x);
  for (int i = threadIdx.x; i < M * chunks; i += kSkinnyThreads) xs[i] = x4[i];
  __syncthreads();
  for (; g < groups; g += stride) {
    const long long g_next = g + stride;
    const SkinnyGroup grp_next = g_next < groups ? skinny_group<kRowsCols>(prod, g_next) : grp;
    float acc[kRowsCols][M];
#pragma unroll
    for (int c = 0; c < kRowsCols; ++c)
#pragma unroll
      for (int m = 0; m < M; ++m) acc[c][m] = 0.0f;
    for (int chunk = lane; chunk < chunks; chunk += 32) {
      uint4 wv[kRowsCols];
#pragma unroll
      for (int c = 0; c < kRowsCols; ++c) wv[c] = next[c];
      // In flight meanwhile: this group's next chunk, or the next group's first.
      if (chunk + 32 < chunks)
        load_w(grp, chunk + 32);
      else if (g_next < groups && lane < chunks)
        load_w(grp_next, lane);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const uint4 xv = xs[m * chunks + chunk];
#pragma unroll
        for (int c = 0; c < kRowsCols; ++c) acc[c][m] += dot8(wv[c], xv);
      }
    }
    // One warp sum per (column, row); lane c * M + m stores it. Fixed order: the lanes' partial
    // sums by warp_sum's butterfly.
    float mine = 0.0f;
#pragma unroll
    for (int c = 0; c < kRowsCols; ++c)
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const float v = warp_sum(acc[c][m]);
        if (lane == c * M + m) mine = v;
      }
    if (lane < kRowsCols * M && lane / M < grp.cols)
      store_out(static_cast<OutT*>(prod.y) + size_t(lane % M) * prod.n + grp.col0 + lane / M,
                mine);
    grp = grp_next;
  }
}

// Blocks of `kernel` (kSkinnyThreads threads; smem bytes of dynamic shared memory, the limit
// raised to it first when it is above the default) that fit on the current device at once,
// cached in the caller's per-kernel array (the engine's device does not change).
template <typename Kernel>
int resident_blocks(Kernel kernel, size_t smem, int (&cached)[64]) {
  int dev = 0;
  EEP_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev < 0 || dev >= 64) dev = 0;
  if (cached[dev] == 0) {
    if (smem > 48 * 1024)
      EEP_CUDA_CHECK(
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    int sms = 0, per_sm = 0;
    EEP_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    EEP_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kSkinnyThreads, smem));
    cached[dev] = std::max(1, sms * std::max(1, per_sm));
  }
  return cached[dev];
}

template <int M, typename OutT>
int skinny_resident_blocks() {
  static int cached[64] = {};
  return resident_blocks(skinny_gemm_kernel<M, OutT>, 0, cached);
}

// Sized for the largest x it takes (kRowsMaxSmem): a smaller one fits at least as many blocks.
template <int M, typename OutT>
int skinny_rows_resident_blocks() {
  static int cached[64] = {};
  return resident_blocks(skinny_rows_kernel<M, OutT>, kRowsMaxSmem, cached);
}

template <int M, typename OutT>
void launch_skinny_rows(const bf16* x, const SkinnyProduct& prod, int k, cudaStream_t stream) {
  if constexpr (M > 1) {
    const size_t smem = size_t(M) * k * sizeof(bf16);
    if (smem <= size_t(kRowsMaxSmem)) {
      const long long warps_needed = ceil_div(prod.n, kRowsCols);
      const long long grid = std::min<long long>(ceil_div(warps_needed, kSkinnyWarps),
                                                 skinny_rows_resident_blocks<M, OutT>());
      launch_kernel(skinny_rows_kernel<M, OutT>, unsigned(grid), kSkinnyThreads, smem, stream,
                    x, prod, k);
      return;
    }
  }
  // One row, or an x too large to stage: this kernel, persistent at one row only (at 2-8 rows
  // its block per group measured faster than its group loop: H100, batch 8, 15.50-15.57 ms a
  // step against 15.83-15.85, alternated runs).
  const long long groups = ceil_div(prod.n, skinny_cols<M>());
  const long long grid =
      M == 1 ? std::min<long long>(groups, skinny_resident_blocks<M, OutT>()) : groups;
  launch_kernel(skinny_gemm_kernel<M, OutT>, unsigned(grid), kSkinnyThreads, 0, stream, x, prod,
                k);
}

template <typename OutT>
void launch_skinny(const bf16* x, const SkinnyProduct& prod, int rows, int k,
                   cudaStream_t stream) {
  switch (rows) {
#define EEP_SKINNY_CASE(M)                            \
  case M:                                             \
    launch_skinny_rows<M, OutT>(x, prod, k, stream); \
    break;
    EEP_SKINNY_CASE(1) EEP_SKINNY_CASE(2) EEP_SKINNY_CASE(3) EEP_SKINNY_CASE(4)
    EEP_SKINNY_CASE(5) EEP_SKINNY_CASE(6) EEP_SKINNY_CASE(7) EEP_SKINNY_CASE(8)
#undef EEP_SKINNY_CASE
  }
}

}  // namespace detail

void skinny_gemm(const bf16* x, const bf16* w, void* y, bool y_f32, int rows, int n, int k,
                 cudaStream_t stream) {
  EEP_REQUIRE(rows >= 0 && rows <= kSkinnyMaxRows && n > 0 && k > 0 && k % 8 == 0,
              "skinny_gemm: 0 <= rows <= 8, n > 0, k > 0, k % 8 == 0");
  if (rows == 0) return;
  const detail::SkinnyProduct prod{w, y, n};
  if (y_f32)
    detail::launch_skinny<float>(x, prod, rows, k, stream);
  else
    detail::launch_skinny<bf16>(x, prod, rows, k, stream);
}

}  // namespace eep::kernels
