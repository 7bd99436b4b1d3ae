// Small device helpers shared by the kernels.
#pragma once

#include <cuda_bf16.h>

namespace eep::kernels::detail {

constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// One row of `hidden` bf16 values copied by the threads of a block: 16 bytes a thread when
// hidden % 8 == 0 (rows 16-byte aligned), else one value a thread.
__device__ __forceinline__ void copy_row_block(const __nv_bfloat16* src, __nv_bfloat16* dst,
                                               int hidden) {
  if (hidden % 8 == 0) {
    const uint4* s4 = reinterpret_cast<const uint4*>(src);
    uint4* d4 = reinterpret_cast<uint4*>(dst);
    for (int i = threadIdx.x; i < hidden / 8; i += blockDim.x) d4[i] = s4[i];
  } else {
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = src[i];
  }
}

inline int ceil_div(long long a, long long b) { return int((a + b - 1) / b); }

}  // namespace eep::kernels::detail
