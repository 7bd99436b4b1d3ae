// SwiGLU activation: y = silu(g) * u, computed in fp32 from bf16 inputs.
#pragma once

#include "common.cuh"
#include "launch.cuh"

namespace eep::kernels::detail {

__device__ __forceinline__ float silu_mul_f(float g, float u) { return g / (1.0f + expf(-g)) * u; }

__global__ void silu_mul_kernel(const __nv_bfloat16* __restrict__ g,
                                const __nv_bfloat16* __restrict__ u, __nv_bfloat16* __restrict__ y,
                                long long n) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += stride)
    y[i] = __float2bfloat16(silu_mul_f(__bfloat162float(g[i]), __bfloat162float(u[i])));
}

// gu [rows][2*inter]: gate in columns [0, inter), up in [inter, 2*inter).
__global__ void silu_mul_fused_kernel(const __nv_bfloat16* __restrict__ gu,
                                      __nv_bfloat16* __restrict__ y, int rows, int inter) {
  pdl_begin();  // launch.cuh: before any global memory access
  const long long n = (long long)rows * inter;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += stride) {
    const long long r = i / inter, c = i % inter;
    const __nv_bfloat16* row = gu + r * 2 * inter;
    y[i] = __float2bfloat16(silu_mul_f(__bfloat162float(row[c]), __bfloat162float(row[inter + c])));
  }
}

}  // namespace eep::kernels::detail
