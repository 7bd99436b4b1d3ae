// Rotary embedding, rotate_half (NeoX) layout, in place. One thread per (row, pair index i):
// it computes cos/sin of pos * theta^(-2i/head_dim) once, in double as the CPU reference does,
// rounds them to fp32 and rotates that pair in every head of the row.
#pragma once

#include "common.cuh"

namespace eep::kernels::detail {

__global__ void rope_kernel(__nv_bfloat16* x, const int32_t* __restrict__ positions, int rows,
                            int num_heads, int head_dim, double log_theta) {
  const int half = head_dim / 2;
  const long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (idx >= (long long)rows * half) return;
  const int row = int(idx / half);
  const int i = int(idx % half);
  const double inv_freq = exp(-log_theta * double(2 * i) / double(head_dim));
  double s, c;
  sincos(double(positions[row]) * inv_freq, &s, &c);
  const float cf = float(c), sf = float(s);
  __nv_bfloat16* base = x + size_t(row) * num_heads * head_dim;
  for (int h = 0; h < num_heads; ++h) {
    __nv_bfloat16* v = base + size_t(h) * head_dim;
    const float a = __bfloat162float(v[i]);
    const float b = __bfloat162float(v[i + half]);
    v[i] = __float2bfloat16(a * cf - b * sf);
    v[i + half] = __float2bfloat16(b * cf + a * sf);
  }
}

}  // namespace eep::kernels::detail
