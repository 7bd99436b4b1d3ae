// y[m][n] = x[m][k] · w[n][k]^T for a few rows (decode): a memory-bound matrix-vector product,
// where cuBLAS's GEMM kernels read the weights at well under half the HBM rate for m = 1
// (ncu on the H100: 1.8 ms per step for 1.2 GB of q/k/v/o weights). Each warp owns kCols output
// columns: its lanes stream those weight rows 16 bytes at a time, multiply them with every row
// of x (read through L1, shared by the block's warps) and reduce across the warp. The weights
// are read exactly once, with several independent 16-byte loads in flight per lane.
#include "check.cuh"
#include "common.cuh"
#include "launch.cuh"

namespace eep::kernels {

namespace detail {

constexpr int kSkinnyCols = 2;      // output columns per warp
constexpr int kSkinnyThreads = 256;

__device__ __forceinline__ void store_out(bf16* p, float v) { *p = __float2bfloat16(v); }
__device__ __forceinline__ void store_out(float* p, float v) { *p = v; }

// Up to kSkinnyMaxSegments products with the same x in one launch (q, k and v): warps are
// numbered over the segments' columns in order; segment s owns warps [first[s], first[s+1]).
struct SkinnySegments {
  const bf16* w[kSkinnyMaxSegments];
  void* y[kSkinnyMaxSegments];
  int n[kSkinnyMaxSegments];
  long long first[kSkinnyMaxSegments + 1];
  int count;
};

template <int M, typename OutT>
__global__ void __launch_bounds__(kSkinnyThreads)
    skinny_gemm_kernel(const bf16* __restrict__ x, const SkinnySegments segs, int k) {
  const int lane = threadIdx.x & 31;
  long long warp = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
  const bool active = warp < segs.first[segs.count];
  int s = 0;
  if (active) {
    while (warp >= segs.first[s + 1]) ++s;
    warp -= segs.first[s];
  }
  const bf16* __restrict__ w = segs.w[s];
  const int n = segs.n[s];
  const long long col0 = warp * kSkinnyCols;
  // The weights are constant during a step: start pulling this warp's rows into L2 while the
  // kernel before (the norm that makes x) still runs; one 128-byte line per lane and step.
  if (active)
    for (int c = 0; c < kSkinnyCols && col0 + c < n; ++c)
      for (int i = lane * 64; i < k; i += 32 * 64) prefetch_l2(w + size_t(col0 + c) * k + i);
  pdl_begin();
  if (!active) return;
  OutT* __restrict__ y = static_cast<OutT*>(segs.y[s]);
  float acc[kSkinnyCols][M];
#pragma unroll
  for (int c = 0; c < kSkinnyCols; ++c)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[c][m] = 0.0f;
  const bool two = col0 + 1 < n;
  const bf16* w0 = w + size_t(col0) * k;
  const bf16* w1 = two ? w0 + k : w0;
#pragma unroll 4
  for (int i = lane * 8; i < k; i += 32 * 8) {
    const uint4 a0 = __ldg(reinterpret_cast<const uint4*>(w0 + i));
    const uint4 a1 = __ldg(reinterpret_cast<const uint4*>(w1 + i));
    float f0[8], f1[8];
    const __nv_bfloat162* p0 = reinterpret_cast<const __nv_bfloat162*>(&a0);
    const __nv_bfloat162* p1 = reinterpret_cast<const __nv_bfloat162*>(&a1);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 u = __bfloat1622float2(p0[e]), v = __bfloat1622float2(p1[e]);
      f0[2 * e] = u.x, f0[2 * e + 1] = u.y, f1[2 * e] = v.x, f1[2 * e + 1] = v.y;
    }
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const uint4 xv = __ldg(reinterpret_cast<const uint4*>(x + size_t(m) * k + i));
      const __nv_bfloat162* px = reinterpret_cast<const __nv_bfloat162*>(&xv);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 xf = __bfloat1622float2(px[e]);
        acc[0][m] += f0[2 * e] * xf.x + f0[2 * e + 1] * xf.y;
        acc[1][m] += f1[2 * e] * xf.x + f1[2 * e + 1] * xf.y;
      }
    }
  }
#pragma unroll
  for (int c = 0; c < kSkinnyCols; ++c)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[c][m] = warp_sum(acc[c][m]);
  if (lane == 0) {
#pragma unroll
    for (int m = 0; m < M; ++m) {
      store_out(y + size_t(m) * n + col0, acc[0][m]);
      if (two) store_out(y + size_t(m) * n + col0 + 1, acc[1][m]);
    }
  }
}

template <typename OutT>
void launch_skinny(const bf16* x, const SkinnySegments& segs, int rows, int k,
                   cudaStream_t stream) {
  const int blocks = ceil_div(segs.first[segs.count] * 32, kSkinnyThreads);
  switch (rows) {
#define EEP_SKINNY_CASE(M)                                                                     \
  case M:                                                                                      \
    launch_kernel(skinny_gemm_kernel<M, OutT>, blocks, kSkinnyThreads, 0, stream, x, segs, k); \
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
    segs.first[s + 1] = segs.first[s] + (n[s] + detail::kSkinnyCols - 1) / detail::kSkinnyCols;
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
