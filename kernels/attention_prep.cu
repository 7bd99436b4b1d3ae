// Everything between the q/k/v projections and attention, in one launch: per-head RMSNorm of q
// and k, the rotary embedding of both, and the KV-cache write of k and v. Separately these were
// five launches per layer (rmsnorm q, rmsnorm k, rope q, rope k, kv_write), each a few
// microseconds of mostly latency at decode batch sizes.
//
// One warp per (row, head) over the q heads, then the k heads, then the v heads. Lane l holds
// the rotary pairs (i, i + head_dim/2) for i = l, l + 32, ...: the norm needs the whole head (a
// warp sum), the rotation needs both halves of a pair, and both stay in registers. The arithmetic
// is that of rmsnorm then rope: the normalised value is rounded to bf16 before it is rotated,
// and cos/sin come from double precision as in the CPU reference.
#include <cmath>

#include "check.cuh"
#include "common.cuh"
#include "launch.cuh"

namespace eep::kernels {

namespace detail {

constexpr int kPrepWarps = 8;      // warps per block
constexpr int kPrepMaxPairs = 4;   // head_dim <= 256: at most 4 pairs per lane

__global__ void attention_prep_kernel(bf16* __restrict__ q, bf16* __restrict__ k,
                                      const bf16* __restrict__ v, const bf16* __restrict__ q_norm,
                                      const bf16* __restrict__ k_norm,
                                      const int32_t* __restrict__ positions,
                                      const int32_t* __restrict__ kv_slots, int rows,
                                      int num_heads, int num_kv_heads, int head_dim, float eps,
                                      double log_theta, bf16* __restrict__ k_cache,
                                      bf16* __restrict__ v_cache) {
  pdl_begin();  // launch.cuh: before any global memory access
  const int lane = threadIdx.x & 31;
  const int heads_per_row = num_heads + 2 * num_kv_heads;
  const long long item = blockIdx.x * (long long)kPrepWarps + (threadIdx.x >> 5);
  if (item >= (long long)rows * heads_per_row) return;  // whole warps leave together
  const int row = int(item / heads_per_row);
  const int head = int(item % heads_per_row);
  const int half = head_dim / 2;
  const int kv_dim = num_kv_heads * head_dim;
  const size_t slot = size_t(kv_slots[row]);

  if (head >= num_heads + num_kv_heads) {  // v: straight into the cache
    const int h = head - num_heads - num_kv_heads;
    const bf16* src = v + size_t(row) * kv_dim + size_t(h) * head_dim;
    bf16* dst = v_cache + slot * kv_dim + size_t(h) * head_dim;
    for (int i = lane; i < head_dim; i += 32) dst[i] = src[i];
    return;
  }
  const bool is_q = head < num_heads;
  const int h = is_q ? head : head - num_heads;
  bf16* x = is_q ? q + (size_t(row) * num_heads + h) * head_dim
                 : k + size_t(row) * kv_dim + size_t(h) * head_dim;
  const bf16* w = is_q ? q_norm : k_norm;

  float a[kPrepMaxPairs], b[kPrepMaxPairs];
  float ss = 0.0f;
#pragma unroll
  for (int p = 0; p < kPrepMaxPairs; ++p) {
    const int i = lane + 32 * p;
    a[p] = b[p] = 0.0f;
    if (i < half) {
      a[p] = __bfloat162float(x[i]);
      b[p] = __bfloat162float(x[i + half]);
      ss += a[p] * a[p] + b[p] * b[p];
    }
  }
  ss = warp_sum(ss);
  const float inv = rsqrtf(ss / float(head_dim) + eps);
  const double pos = double(positions[row]);
#pragma unroll
  for (int p = 0; p < kPrepMaxPairs; ++p) {
    const int i = lane + 32 * p;
    if (i >= half) continue;
    // RMSNorm, rounded to bf16 as the separate norm kernel stores it.
    const float na = __bfloat162float(__float2bfloat16(__bfloat162float(w[i]) * (a[p] * inv)));
    const float nb =
        __bfloat162float(__float2bfloat16(__bfloat162float(w[i + half]) * (b[p] * inv)));
    const double inv_freq = exp(-log_theta * double(2 * i) / double(head_dim));
    double s, c;
    sincos(pos * inv_freq, &s, &c);
    const float cf = float(c), sf = float(s);
    const bf16 ra = __float2bfloat16(na * cf - nb * sf);
    const bf16 rb = __float2bfloat16(nb * cf + na * sf);
    x[i] = ra;
    x[i + half] = rb;
    if (!is_q) {
      bf16* dst = k_cache + slot * kv_dim + size_t(h) * head_dim;
      dst[i] = ra;
      dst[i + half] = rb;
    }
  }
}

}  // namespace detail

void attention_prep(bf16* q, bf16* k, const bf16* v, const bf16* q_norm, const bf16* k_norm,
                    const int32_t* positions, const int32_t* kv_slots, int rows, int num_heads,
                    int num_kv_heads, int head_dim, float eps, float theta, bf16* k_cache,
                    bf16* v_cache, cudaStream_t stream) {
  EEP_REQUIRE(rows >= 0 && num_heads > 0 && num_kv_heads > 0 && head_dim > 0 &&
                  head_dim % 2 == 0 && head_dim <= 2 * 32 * detail::kPrepMaxPairs,
              "attention_prep: rows >= 0, heads > 0, head_dim even and <= 256");
  EEP_REQUIRE(theta > 0.0f, "attention_prep: theta > 0");
  if (rows == 0) return;
  const long long warps = (long long)rows * (num_heads + 2 * num_kv_heads);
  detail::launch_kernel(detail::attention_prep_kernel, detail::ceil_div(warps, detail::kPrepWarps),
                        32 * detail::kPrepWarps, 0, stream, q, k, v, q_norm, k_norm, positions,
                        kv_slots, rows, num_heads, num_kv_heads, head_dim, eps,
                        std::log(double(theta)), k_cache, v_cache);
}

}  // namespace eep::kernels
