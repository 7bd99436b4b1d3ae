// The MoE combine of 8 columns of one token, shared by unpermute_vec8_kernel and the residual
// norm that folds the combine in (add_combine_rmsnorm): one expression, so both give the same
// bits.
#pragma once

#include "common.cuh"

namespace eep::kernels::detail {

// acc[e] = sum over choices j = 0..k-1, in order, of w[j] * y[rows[j]][c + e] in fp32; a pair
// with rows[j] < 0 (dropped) adds nothing. Packs the result as 8 bf16 (what a stored MoE output
// holds).
__device__ __forceinline__ uint4 combine8(const __nv_bfloat16* __restrict__ y,
                                          const int32_t* __restrict__ rows,
                                          const float* __restrict__ w, int k, int hidden, int c) {
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
  return packed;
}

}  // namespace eep::kernels::detail
