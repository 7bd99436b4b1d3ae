// Paged decode attention, one query per sequence, GQA. One block per (sequence, query head);
// each of its warps walks a strided share of the positions with an online softmax (running max
// m, running sum l, fp32 accumulator), lanes splitting head_dim; the warps' partial results are
// merged through shared memory at the end.
#pragma once

#include "common.cuh"
#include "launch.cuh"

namespace eep::kernels::detail {

constexpr int kAttnWarps = 4;

template <int HEAD_DIM>
__global__ void paged_decode_attention_kernel(
    const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k_cache,
    const __nv_bfloat16* __restrict__ v_cache, const int32_t* __restrict__ block_tables,
    const int32_t* __restrict__ seq_lens, __nv_bfloat16* __restrict__ out, int num_heads,
    int num_kv_heads, int block_size, int max_blocks_per_seq, float scale) {
  pdl_begin();  // launch.cuh: before any global memory access
  constexpr int kPerLane = HEAD_DIM / 32;  // even: loaded as bf16 pairs
  __shared__ float s_m[kAttnWarps], s_l[kAttnWarps];
  __shared__ float s_acc[kAttnWarps][HEAD_DIM];

  const int seq = blockIdx.x / num_heads;
  const int head = blockIdx.x % num_heads;
  const int kv_head = head / (num_heads / num_kv_heads);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int len = seq_lens[seq];
  const int32_t* table = block_tables + size_t(seq) * max_blocks_per_seq;

  float qv[kPerLane];
  const __nv_bfloat16* qh = q + (size_t(seq) * num_heads + head) * HEAD_DIM + lane * kPerLane;
#pragma unroll
  for (int j = 0; j < kPerLane; j += 2) {
    const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(qh + j));
    qv[j] = f.x * scale;
    qv[j + 1] = f.y * scale;
  }

  float m = -INFINITY, l = 0.0f, acc[kPerLane];
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) acc[j] = 0.0f;

  const size_t token_stride = size_t(num_kv_heads) * HEAD_DIM;
  for (int pos = warp; pos < len; pos += kAttnWarps) {
    const int block = table[pos / block_size];
    const size_t off = (size_t(block) * block_size + pos % block_size) * token_stride +
                       size_t(kv_head) * HEAD_DIM + lane * kPerLane;
    float kv[kPerLane];
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < kPerLane; j += 2) {
      const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(k_cache + off + j));
      s += qv[j] * f.x + qv[j + 1] * f.y;
    }
    s = warp_sum(s);
#pragma unroll
    for (int j = 0; j < kPerLane; j += 2) {
      const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(v_cache + off + j));
      kv[j] = f.x;
      kv[j + 1] = f.y;
    }
    const float m_new = fmaxf(m, s);
    const float corr = __expf(m - m_new);  // 0 on the first position (m = -inf)
    const float p = __expf(s - m_new);
    l = l * corr + p;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) acc[j] = acc[j] * corr + p * kv[j];
    m = m_new;
  }

  // Merge the warps.
  if (lane == 0) {
    s_m[warp] = m;
    s_l[warp] = l;
  }
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) s_acc[warp][lane * kPerLane + j] = acc[j];
  __syncthreads();
  float gm = -INFINITY;
#pragma unroll
  for (int w = 0; w < kAttnWarps; ++w) gm = fmaxf(gm, s_m[w]);
  float gl = 0.0f, f[kAttnWarps];
#pragma unroll
  for (int w = 0; w < kAttnWarps; ++w) {
    f[w] = s_l[w] > 0.0f ? __expf(s_m[w] - gm) : 0.0f;  // a warp with no positions adds nothing
    gl += s_l[w] * f[w];
  }
  const float inv = 1.0f / gl;
  __nv_bfloat16* oh = out + (size_t(seq) * num_heads + head) * HEAD_DIM;
  for (int d = threadIdx.x; d < HEAD_DIM; d += blockDim.x) {
    float o = 0.0f;
#pragma unroll
    for (int w = 0; w < kAttnWarps; ++w) o += s_acc[w][d] * f[w];
    oh[d] = __float2bfloat16(o * inv);
  }
}

}  // namespace eep::kernels::detail
