// RMSNorm over rows: one warp per row, fp32 sum of squares, bf16 in and out.
#pragma once

#include "common.cuh"

namespace eep::kernels::detail {

constexpr int kRmsnormWarps = 8;  // rows per block

__global__ void rmsnorm_kernel(const __nv_bfloat16* __restrict__ x,
                               const __nv_bfloat16* __restrict__ w, __nv_bfloat16* out, int rows,
                               int dim, float eps) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * kRmsnormWarps + (threadIdx.x >> 5);
  if (row >= rows) return;
  const __nv_bfloat16* xr = x + size_t(row) * dim;
  __nv_bfloat16* outr = out + size_t(row) * dim;
  float ss = 0.0f;
  if ((dim & 1) == 0) {
    const __nv_bfloat162* x2 = reinterpret_cast<const __nv_bfloat162*>(xr);
    for (int i = lane; i < dim / 2; i += 32) {
      float2 v = __bfloat1622float2(x2[i]);
      ss += v.x * v.x + v.y * v.y;
    }
  } else {
    for (int i = lane; i < dim; i += 32) {
      float v = __bfloat162float(xr[i]);
      ss += v * v;
    }
  }
  ss = warp_sum(ss);
  const float inv = rsqrtf(ss / float(dim) + eps);
  // NOTE: out may alias x: the loop above has finished its reads before the shuffles, and below
  // each lane reads element i just before it overwrites it.
  for (int i = lane; i < dim; i += 32)
    outr[i] = __float2bfloat16(__bfloat162float(w[i]) * (__bfloat162float(xr[i]) * inv));
}

}  // namespace eep::kernels::detail
