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
  // Choices in batches of kBatch: every row index of a batch is loaded, then every row, then the
  // sums run in order. A loop that loads rows[j] and then its row one choice at a time is a
  // chain of 2k dependent L2 round trips: at batch 1 the norm that folds this in ended 7.3 us
  // after the down GEMM, the plain norm 2.2 us after its GEMM (kernel trace, device run 65).
  constexpr int kBatch = 8;
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int j0 = 0; j0 < k; j0 += kBatch) {
    int r[kBatch];
    float wj[kBatch];
#pragma unroll
    for (int t = 0; t < kBatch; ++t) {
      r[t] = j0 + t < k ? rows[j0 + t] : -1;
      wj[t] = j0 + t < k ? w[j0 + t] : 0.0f;
    }
    uint4 raw[kBatch];
#pragma unroll
    for (int t = 0; t < kBatch; ++t)
      raw[t] = r[t] >= 0 ? *reinterpret_cast<const uint4*>(y + size_t(r[t]) * hidden + c)
                         : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int t = 0; t < kBatch; ++t) {
      if (r[t] < 0) continue;  // a dropped pair adds nothing
      const __nv_bfloat162* v = reinterpret_cast<const __nv_bfloat162*>(&raw[t]);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 f = __bfloat1622float2(v[e]);
        acc[2 * e] += wj[t] * f.x;
        acc[2 * e + 1] += wj[t] * f.y;
      }
    }
  }
  uint4 packed;
  __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(&packed);
#pragma unroll
  for (int e = 0; e < 4; ++e) o[e] = __floats2bfloat162_rn(acc[2 * e], acc[2 * e + 1]);
  return packed;
}

}  // namespace eep::kernels::detail
