// Everything between the q/k/v projections and attention, in one launch: per-head RMSNorm of q
// and k, the rotary embedding of both, and the KV-cache write of k and v. Separately these were
// five launches per layer (rmsnorm q, rmsnorm k, rope q, rope k, kv_write), each a few
// microseconds of mostly latency at decode batch sizes.
//
// One warp per (row, head) over the q heads, then the k heads, then the v heads, reading one
// row of the stacked q|k|v projection (one GEMM gives all three). Lane l holds the rotary pairs
// (i, i + head_dim/2) for i = l, l + 32, ...: the norm needs the whole head (a warp sum), the
// rotation needs both halves of a pair, and both stay in registers. The arithmetic is that of
// rmsnorm then rope: the normalised value is rounded to bf16 before it is rotated, and cos/sin
// come from double precision as in the CPU reference. They depend on the row's position and the
// pair only, so a block (one row, kPrepWarps heads) computes each pair's once into shared
// memory while its warps' loads are in flight: per (row, head) that double-precision exp and
// sincos was most of the kernel's time at batch 256 (10 us a layer).
#include <cmath>

#include "check.cuh"
#include "common.cuh"
#include "launch.cuh"

namespace eep::kernels {

namespace detail {

constexpr int kPrepWarps = 8;      // warps (heads of one row) per block
constexpr int kPrepMaxPairs = 4;   // head_dim <= 256: at most 4 pairs per lane

__global__ void attention_prep_kernel(const bf16* __restrict__ qkv, bf16* __restrict__ q_out,
                                      const bf16* __restrict__ q_norm,
                                      const bf16* __restrict__ k_norm,
                                      const int32_t* __restrict__ positions,
                                      const int32_t* __restrict__ kv_slots, int num_heads,
                                      int num_kv_heads, int head_dim, float eps,
                                      double log_theta, bf16* __restrict__ k_cache,
                                      bf16* __restrict__ v_cache) {
  __shared__ float2 rotation[32 * kPrepMaxPairs];  // (cos, sin) of pair i at the row's position
  pdl_begin();  // launch.cuh: before any global memory access
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x;
  const int head = blockIdx.y * kPrepWarps + (threadIdx.x >> 5);
  const int heads_per_row = num_heads + 2 * num_kv_heads;
  const int half = head_dim / 2;
  const int q_dim = num_heads * head_dim, kv_dim = num_kv_heads * head_dim;
  const bf16* src_row = qkv + size_t(row) * (q_dim + 2 * kv_dim);
  const size_t slot = size_t(kv_slots[row]);
  // The head's values: loads first, so they are in flight during the rotation table.
  const bool rotated = head < num_heads + num_kv_heads;  // q or k
  const bool is_q = head < num_heads;
  const int h = is_q ? head : head - num_heads;
  const bf16* x = src_row + size_t(is_q ? 0 : q_dim) + size_t(h) * head_dim;
  float a[kPrepMaxPairs], b[kPrepMaxPairs];
#pragma unroll
  for (int p = 0; p < kPrepMaxPairs; ++p) {
    const int i = lane + 32 * p;
    a[p] = b[p] = 0.0f;
    if (rotated && i < half) {
      a[p] = __bfloat162float(x[i]);
      b[p] = __bfloat162float(x[i + half]);
    }
  }
  if (blockIdx.y * kPrepWarps < num_heads + num_kv_heads) {  // the block has q or k heads
    const double pos = double(positions[row]);
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
      const double inv_freq = exp(-log_theta * double(2 * i) / double(head_dim));
      double sn, cs;
      sincos(pos * inv_freq, &sn, &cs);
      rotation[i] = make_float2(float(cs), float(sn));
    }
  }
  __syncthreads();  // every thread reaches it: no warp has left yet
  if (head >= heads_per_row) return;  // whole warps leave together

  if (!rotated) {  // v: straight into the cache
    const int hv = head - num_heads - num_kv_heads;
    const bf16* src = src_row + q_dim + kv_dim + size_t(hv) * head_dim;
    bf16* dst = v_cache + slot * kv_dim + size_t(hv) * head_dim;
    for (int i = lane; i < head_dim; i += 32) dst[i] = src[i];
    return;
  }
  const bf16* w = is_q ? q_norm : k_norm;
  float ss = 0.0f;
#pragma unroll
  for (int p = 0; p < kPrepMaxPairs; ++p) ss += a[p] * a[p] + b[p] * b[p];
  ss = warp_sum(ss);
  const float inv = rsqrtf(ss / float(head_dim) + eps);
  bf16* dst = is_q ? q_out + (size_t(row) * num_heads + h) * head_dim
                   : k_cache + slot * kv_dim + size_t(h) * head_dim;
#pragma unroll
  for (int p = 0; p < kPrepMaxPairs; ++p) {
    const int i = lane + 32 * p;
    if (i >= half) continue;
    // RMSNorm, rounded to bf16 as the separate norm kernel stores it.
    const float na = __bfloat162float(__float2bfloat16(__bfloat162float(w[i]) * (a[p] * inv)));
    const float nb =
        __bfloat162float(__float2bfloat16(__bfloat162float(w[i + half]) * (b[p] * inv)));
    const float2 r = rotation[i];
    dst[i] = __float2bfloat16(na * r.x - nb * r.y);
    dst[i + half] = __float2bfloat16(nb * r.x + na * r.y);
  }
}

}  // namespace detail

void attention_prep(const bf16* qkv, bf16* q_out, const bf16* q_norm, const bf16* k_norm,
                    const int32_t* positions, const int32_t* kv_slots, int rows, int num_heads,
                    int num_kv_heads, int head_dim, float eps, float theta, bf16* k_cache,
                    bf16* v_cache, cudaStream_t stream) {
  EEP_REQUIRE(rows >= 0 && num_heads > 0 && num_kv_heads > 0 && head_dim > 0 &&
                  head_dim % 2 == 0 && head_dim <= 2 * 32 * detail::kPrepMaxPairs,
              "attention_prep: rows >= 0, heads > 0, head_dim even and <= 256");
  EEP_REQUIRE(theta > 0.0f, "attention_prep: theta > 0");
  if (rows == 0) return;
  const dim3 grid(rows, detail::ceil_div(num_heads + 2 * num_kv_heads, detail::kPrepWarps));
  detail::launch_kernel(detail::attention_prep_kernel, grid, 32 * detail::kPrepWarps, 0, stream,
                        qkv, q_out, q_norm, k_norm, positions, kv_slots, num_heads, num_kv_heads,
                        head_dim, eps, std::log(double(theta)), k_cache, v_cache);
}

}  // namespace eep::kernels
