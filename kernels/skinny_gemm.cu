// y[m][n] = x[m][k] · w[n][k]^T for a few rows (decode): a memory-bound matrix-vector product,
// where cuBLAS's GEMM kernels read the weights at well under half the HBM rate for m = 1.
//
// A block owns 8 (4 beyond 2 rows) output columns and its kSkinnyWarps warps split k: warp
// w's lanes take 16-byte chunks of its k-slice, so at k = 2048 every lane issues all of its
// weight loads (one per column) at once, and the block's partial sums meet in shared memory.
// Those first weight loads go out before pdl_begin(): the weights are constant, so they are read
// while the kernel before (the norm or the attention that makes x) still runs. (The earlier form,
// a warp per two columns walking all of k, reached 1.0-1.5 TB/s on q/k/v and o at one row:
// ncu on the H100, docs/cuda.md.)
#include "check.cuh"
#include "common.cuh"
#include "launch.cuh"

namespace eep::kernels {

namespace detail {

// Output columns per block: 8 up to 2 rows; 4 beyond (the accumulators and the weights in
// flight would otherwise take ~230 registers at 8 rows and one block per SM).
template <int M>
__host__ __device__ constexpr int skinny_cols() { return M <= 2 ? 8 : 4; }
constexpr int kSkinnyWarps = 8;  // warps per block, each a slice of k
constexpr int kSkinnyThreads = 32 * kSkinnyWarps;

__device__ __forceinline__ void store_out(bf16* p, float v) { *p = __float2bfloat16(v); }
__device__ __forceinline__ void store_out(float* p, float v) { *p = v; }

// Up to kSkinnyMaxSegments products with the same x in one launch (q, k and v): blocks are
// numbered over the segments' column groups in order; segment s owns blocks [first[s],
// first[s+1]) (set by launch_skinny for the kernel's columns per block).
struct SkinnySegments {
  const bf16* w[kSkinnyMaxSegments];
  void* y[kSkinnyMaxSegments];
  int n[kSkinnyMaxSegments];
  long long first[kSkinnyMaxSegments + 1];
  int count;
};

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

template <int M, typename OutT>
__global__ void __launch_bounds__(kSkinnyThreads)
    skinny_gemm_kernel(const bf16* __restrict__ x, const SkinnySegments segs, int k) {
  constexpr int kCols = skinny_cols<M>();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  long long blk = blockIdx.x;
  int s = 0;
  while (blk >= segs.first[s + 1]) ++s;
  blk -= segs.first[s];
  const bf16* __restrict__ w = segs.w[s];
  const int n = segs.n[s];
  const long long col0 = blk * kCols;
  const int cols = n - col0 < kCols ? int(n - col0) : kCols;
  // This warp's slice of k, in 8-element chunks; lane l takes chunks begin + l, + 32, ...
  const int chunks = k / 8;
  const int per_warp = (chunks + kSkinnyWarps - 1) / kSkinnyWarps;
  const int begin = min(chunks, warp * per_warp), end = min(chunks, begin + per_warp);
  float acc[kCols][M];
#pragma unroll
  for (int c = 0; c < kCols; ++c)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[c][m] = 0.0f;
  uint4 next[kCols];
  auto load_w = [&](int chunk) {
#pragma unroll
    for (int c = 0; c < kCols; ++c)
      next[c] = c < cols ? __ldg(reinterpret_cast<const uint4*>(w + (col0 + c) * k) + chunk)
                         : make_uint4(0, 0, 0, 0);
  };
  int chunk = begin + lane;
  if (chunk < end) load_w(chunk);  // before the wait: weights are never written during a step
  pdl_begin();
  for (; chunk < end; chunk += 32) {
    uint4 wv[kCols];
#pragma unroll
    for (int c = 0; c < kCols; ++c) wv[c] = next[c];
    if (chunk + 32 < end) load_w(chunk + 32);  // the next chunk's weights in flight meanwhile
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const uint4 xv = __ldg(reinterpret_cast<const uint4*>(x + size_t(m) * k) + chunk);
#pragma unroll
      for (int c = 0; c < kCols; ++c) acc[c][m] += dot8(wv[c], xv);
    }
  }
  // Warps' partial sums: each warp reduces its own, then one thread per (column, row) adds the
  // warps' in a fixed order.
  __shared__ float partial[kSkinnyWarps][kCols * M];
#pragma unroll
  for (int c = 0; c < kCols; ++c)
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const float v = warp_sum(acc[c][m]);
      if (lane == 0) partial[warp][c * M + m] = v;
    }
  __syncthreads();
  const int t = threadIdx.x;
  if (t < kCols * M && t / M < cols) {
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < kSkinnyWarps; ++i) sum += partial[i][t];
    OutT* __restrict__ y = static_cast<OutT*>(segs.y[s]);
    store_out(y + size_t(t % M) * n + col0 + t / M, sum);
  }
}

template <int M, typename OutT>
void launch_skinny_rows(const bf16* x, SkinnySegments segs, int k, cudaStream_t stream) {
  constexpr int cols = skinny_cols<M>();
  for (int s = 0; s < segs.count; ++s) segs.first[s + 1] = segs.first[s] + ceil_div(segs.n[s], cols);
  launch_kernel(skinny_gemm_kernel<M, OutT>, unsigned(segs.first[segs.count]), kSkinnyThreads, 0,
                stream, x, segs, k);
}

template <typename OutT>
void launch_skinny(const bf16* x, const SkinnySegments& segs, int rows, int k,
                   cudaStream_t stream) {
  switch (rows) {
#define EEP_SKINNY_CASE(M)                            \
  case M:                                             \
    launch_skinny_rows<M, OutT>(x, segs, k, stream); \
    break;
    EEP_SKINNY_CASE(1) EEP_SKINNY_CASE(2) EEP_SKINNY_CASE(3) EEP_SKINNY_CASE(4)
    EEP_SKINNY_CASE(5) EEP_SKINNY_CASE(6) EEP_SKINNY_CASE(7) EEP_SKINNY_CASE(8)
#undef EEP_SKINNY_CASE
  }
}

}  // namespace detail

void skinny_gemm_multi(const bf16* x, const bf16* const* w, void* const* y, const int* n,
                       int count, bool y_f32, int rows, int k, cudaStream_t stream) {
  EEP_REQUIRE(rows >= 0 && rows <= kSkinnyMaxRows && k > 0 && k % 8 == 0 && count >= 1 &&
                  count <= kSkinnyMaxSegments,
              "skinny_gemm: 0 <= rows <= 8, k > 0, k % 8 == 0, 1..3 segments");
  detail::SkinnySegments segs{};
  segs.count = count;
  for (int s = 0; s < count; ++s) {
    EEP_REQUIRE(n[s] > 0, "skinny_gemm: n > 0");
    segs.w[s] = w[s];
    segs.y[s] = y[s];
    segs.n[s] = n[s];
  }
  if (rows == 0) return;
  if (y_f32)
    detail::launch_skinny<float>(x, segs, rows, k, stream);
  else
    detail::launch_skinny<bf16>(x, segs, rows, k, stream);
  EEP_LAUNCH_CHECK();
}

void skinny_gemm(const bf16* x, const bf16* w, void* y, bool y_f32, int rows, int n, int k,
                 cudaStream_t stream) {
  skinny_gemm_multi(x, &w, &y, &n, 1, y_f32, rows, k, stream);
}

}  // namespace eep::kernels
