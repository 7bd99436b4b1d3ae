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

namespace eep::kernels::detail {

// The same attention with one block per (sequence, KV head): the group's query heads share
// every K/V row it loads, where the kernel above loads each row once per query head (8 times
// for Qwen3-30B-A3B's 32/4 heads; 0.44 ms a layer at batch 256, context 256 on an H100, ~9% of
// the HBM rate). Positions go in tiles of kGqaTile: K and V of the tile staged in shared memory
// (K rows padded to an odd number of words, so the lanes of a warp, one position each, read
// different banks), the scores of all heads (warp w takes heads w, w + warps, ...; lane = the
// position), an online softmax per head over the tile, then thread d accumulates output
// dimension d of every head. One thread per dimension: HEAD_DIM threads.
constexpr int kGqaTile = 32;
constexpr int kGqaMaxGroup = 8;  // query heads per KV head (larger groups: the kernel above)

template <int HEAD_DIM>
__global__ void __launch_bounds__(HEAD_DIM) paged_decode_attention_gqa_kernel(
    const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k_cache,
    const __nv_bfloat16* __restrict__ v_cache, const int32_t* __restrict__ block_tables,
    const int32_t* __restrict__ seq_lens, __nv_bfloat16* __restrict__ out, int num_heads,
    int num_kv_heads, int block_size, int max_blocks_per_seq, float scale) {
  pdl_begin();  // launch.cuh: before any global memory access
  constexpr int kWarps = HEAD_DIM / 32;
  constexpr int kRows = kGqaTile / kWarps;     // tile rows each warp stages
  constexpr int kWords = HEAD_DIM / 64;        // 4-byte words of a row per lane
  constexpr int kKStride = HEAD_DIM / 2 + 1;   // K row in 4-byte words, odd
  constexpr int kMine = (kGqaMaxGroup + kWarps - 1) / kWarps;  // heads scored per warp
  __shared__ uint32_t ks[kGqaTile][kKStride];
  __shared__ uint32_t vs[kGqaTile][HEAD_DIM / 2];
  __shared__ float qs[kGqaMaxGroup][HEAD_DIM];
  __shared__ float ps[kGqaMaxGroup][kGqaTile];
  __shared__ float alpha[kGqaMaxGroup];

  const int group = num_heads / num_kv_heads;
  const int seq = blockIdx.x / num_kv_heads;
  const int kv_head = blockIdx.x % num_kv_heads;
  const int d = threadIdx.x, lane = d & 31, warp = d >> 5;
  const int len = seq_lens[seq];
  const int32_t* table = block_tables + size_t(seq) * max_blocks_per_seq;
  const __nv_bfloat16* qg = q + (size_t(seq) * num_heads + size_t(kv_head) * group) * HEAD_DIM;
  for (int g = 0; g < group; ++g) qs[g][d] = __bfloat162float(qg[size_t(g) * HEAD_DIM + d]) * scale;

  // A tile's rows into registers: warp w takes rows w, w + kWarps, ...; every load of the tile
  // is issued before any is used, and the next tile's are in flight during this tile's math.
  const uint32_t* k32 = reinterpret_cast<const uint32_t*>(k_cache);
  const uint32_t* v32 = reinterpret_cast<const uint32_t*>(v_cache);
  const size_t token_words = size_t(num_kv_heads) * HEAD_DIM / 2;
  uint32_t kr[kRows][kWords], vr[kRows][kWords];
  auto load_tile = [&](int base) {
    size_t off[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int pos = base + warp + r * kWarps;
      off[r] = pos < len ? (size_t(table[pos / block_size]) * block_size + pos % block_size) *
                                   token_words + size_t(kv_head) * HEAD_DIM / 2 + lane * kWords
                         : ~size_t(0);
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r)
#pragma unroll
      for (int w = 0; w < kWords; ++w) {
        kr[r][w] = off[r] != ~size_t(0) ? __ldg(k32 + off[r] + w) : 0u;
        vr[r][w] = off[r] != ~size_t(0) ? __ldg(v32 + off[r] + w) : 0u;
      }
  };

  float acc[kGqaMaxGroup];
#pragma unroll
  for (int g = 0; g < kGqaMaxGroup; ++g) acc[g] = 0.0f;
  float m[kMine], l[kMine];
#pragma unroll
  for (int i = 0; i < kMine; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
  }

  load_tile(0);
  for (int base = 0; base < len; base += kGqaTile) {
    __syncthreads();  // the previous tile's K, V and probabilities are used up; qs written
#pragma unroll
    for (int r = 0; r < kRows; ++r)
#pragma unroll
      for (int w = 0; w < kWords; ++w) {
        ks[warp + r * kWarps][lane * kWords + w] = kr[r][w];
        vs[warp + r * kWarps][lane * kWords + w] = vr[r][w];
      }
    __syncthreads();
    if (base + kGqaTile < len) load_tile(base + kGqaTile);
    // Scores of this warp's heads (one pass over the lane's K row), then the online softmax;
    // lane = position of the tile.
    const bool live = base + lane < len;
    float s[kMine];
#pragma unroll
    for (int i = 0; i < kMine; ++i) s[i] = 0.0f;
#pragma unroll 8
    for (int w = 0; w < HEAD_DIM / 2; ++w) {
      const float2 kf = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&ks[lane][w]));
#pragma unroll
      for (int i = 0; i < kMine; ++i) {
        const int g = min(warp + i * kWarps, kGqaMaxGroup - 1);
        s[i] += qs[g][2 * w] * kf.x + qs[g][2 * w + 1] * kf.y;
      }
    }
#pragma unroll
    for (int i = 0; i < kMine; ++i) {
      const int g = warp + i * kWarps;
      if (g >= group) break;
      const float si = live ? s[i] : -INFINITY;
      const float m_new = fmaxf(m[i], warp_max(si));  // finite: the tile has a live position
      const float p = live ? __expf(si - m_new) : 0.0f;
      const float a = __expf(m[i] - m_new);  // 0 on the first tile (m = -inf)
      l[i] = l[i] * a + warp_sum(p);
      m[i] = m_new;
      ps[g][lane] = p;
      if (lane == 0) alpha[g] = a;
    }
    __syncthreads();
    // Output dimension d of every head.
    const __nv_bfloat16* vcol = reinterpret_cast<const __nv_bfloat16*>(&vs[0][0]) + d;
#pragma unroll
    for (int g = 0; g < kGqaMaxGroup; ++g) {
      if (g >= group) break;
      float o = acc[g] * alpha[g];
#pragma unroll 8
      for (int t = 0; t < kGqaTile; ++t) o += ps[g][t] * __bfloat162float(vcol[t * HEAD_DIM]);
      acc[g] = o;
    }
  }
  // 1 / l of each head, from the warp that kept it.
  __syncthreads();
#pragma unroll
  for (int i = 0; i < kMine; ++i) {
    const int g = warp + i * kWarps;
    if (g < group && lane == 0) alpha[g] = 1.0f / l[i];
  }
  __syncthreads();
  __nv_bfloat16* og = out + (size_t(seq) * num_heads + size_t(kv_head) * group) * HEAD_DIM;
#pragma unroll
  for (int g = 0; g < kGqaMaxGroup; ++g) {
    if (g >= group) break;
    og[size_t(g) * HEAD_DIM + d] = __float2bfloat16(acc[g] * alpha[g]);
  }
}

}  // namespace eep::kernels::detail
