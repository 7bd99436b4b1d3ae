// Decode attention on tensor cores: a warp per (sequence, KV head) computes the scores of all the
// group's query heads (the rows of one m16 tile, zero-padded) against a tile of positions with
// mma.sync, an online softmax in registers (FlashAttention-2's layout: the score accumulators
// are the probabilities' A fragments), and P·V with mma.sync into fp32 accumulators. K and V
// tiles are staged in shared memory by cp.async, double-buffered, so the next tile's loads are
// in flight during this one's math. The CUDA-core kernels (paged_attention.cuh) spend most of
// their time on shared-memory instructions (two per multiply-add); here a 16x8x16 product is one
// instruction over fragments that ldmatrix loads once.
#pragma once

#include <cuda_bf16.h>

#include "common.cuh"
#include "launch.cuh"
#include "mma.cuh"

namespace eep::kernels::detail {

constexpr int kMmaMaxGroup = 16;  // query heads per KV head: the rows of one m16 tile

// VB: buffers of V. Two (the default): a tile's K and V both load during the tile before, 34 KiB
// of shared memory a warp at head_dim 128, so 6 warps an SM. One (kMmaOneV): K stays double
// buffered, V(t+1) loads once P V(t) is done and lands while S(t+1) and its softmax run,
// 26 KiB, so 8 warps an SM: at 1024 (sequence, KV head) pairs (batch 256 of Qwen3-30B-A3B) one
// wave of warps instead of a full one and a thin second.
template <int HEAD_DIM, int TILE, int VB = 2>
__global__ void __launch_bounds__(32) paged_decode_attention_mma_kernel(
    const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k_cache,
    const __nv_bfloat16* __restrict__ v_cache, const int32_t* __restrict__ block_tables,
    const int32_t* __restrict__ seq_lens, __nv_bfloat16* __restrict__ out, int num_heads,
    int num_kv_heads, int block_size, int max_blocks_per_seq, float scale_log2, int splits,
    int split_len, float* __restrict__ partial) {
  static_assert(HEAD_DIM % 32 == 0 && TILE % 16 == 0, "fragment shapes");
  static_assert(VB == 1 || VB == 2, "one or two V buffers");
  constexpr int KS = HEAD_DIM / 16;      // k-steps of Q K^T
  constexpr int NT = HEAD_DIM / 8;       // n-tiles of the output
  constexpr int ST = TILE / 8;           // n-tiles of the scores (positions)
  constexpr int CHUNKS = HEAD_DIM / 8;   // 16-byte chunks of a staged row
  // Staged rows padded by 16 bytes: ldmatrix's 8 rows then start in distinct bank groups. Two
  // buffers of K and VB of V: 34 KiB (26 with one V) at head_dim 128 and 32 positions.
  constexpr int STRIDE = HEAD_DIM + 8;   // bf16 elements per staged row
  __shared__ __align__(128) __nv_bfloat16 ks[2][TILE][STRIDE];
  __shared__ __align__(128) __nv_bfloat16 vs[VB][TILE][STRIDE];

  const int group = num_heads / num_kv_heads;
  const int pair = blockIdx.x / splits, split = blockIdx.x % splits;
  const int seq = pair / num_kv_heads, kv_head = pair % num_kv_heads;
  const int lane = threadIdx.x;
  const int r0 = lane >> 2, c0 = (lane & 3) * 2;  // fragment row (head) and column pair
  const bool row_a = r0 < group, row_b = r0 + 8 < group;
  // Split into `splits` ranges of split_len positions (a multiple of TILE): this warp takes
  // positions begin .. len-1 of its range, and leaves its unnormalised output, running maximum
  // and sum in `partial` for the combine kernel (partial == nullptr: one range, final output).
  // Rows (seq, head) in order, then splits: O [rows][splits][HEAD_DIM], then (m, l) [rows][splits].
  const size_t first_row = size_t(seq) * num_heads + size_t(kv_head) * group;
  const size_t total_rows = size_t(gridDim.x / splits / num_kv_heads) * num_heads;
  auto write_partial = [&](int row, float m, float l, const float (*o)[4], int half) {
    const size_t idx = (first_row + row) * splits + split;
    float* op = partial + idx * HEAD_DIM;
#pragma unroll
    for (int n = 0; n < HEAD_DIM / 8; ++n)
      *reinterpret_cast<float2*>(op + 8 * n + c0) =
          o ? make_float2(o[n][2 * half], o[n][2 * half + 1]) : make_float2(0.0f, 0.0f);
    if ((lane & 3) == 0)
      *reinterpret_cast<float2*>(partial + total_rows * splits * HEAD_DIM + idx * 2) =
          make_float2(m, l);
  };
  // Before pdl_begin() this kernel reads only what no kernel of the step writes: the step's
  // metadata (lengths, block tables: uploaded before its first kernel) and K/V rows of earlier
  // positions. A decode step writes one position per sequence, its last (seq_len - 1, by
  // attention_prep, the kernel before), so the first tile may be fetched early when it ends
  // before that position: its loads then overlap attention_prep (launch.cuh's rule, widened
  // for this kernel's inputs). At batch 1 this kernel added 7.7 us a layer to the step, 6.1
  // with the early tile (kernel traces, device runs 68 and 69).
  const int begin = split * split_len;
  const int seq_len = seq_lens[seq];
  const int len = min(seq_len, begin + split_len);  // the end of this warp's range
  if (begin >= len) {  // an empty range (only with splits): nothing to add
    pdl_begin();
    if (row_a) write_partial(r0, -INFINITY, 0.0f, nullptr, 0);
    if (row_b) write_partial(r0 + 8, -INFINITY, 0.0f, nullptr, 1);
    return;
  }
  const bool first_tile_early = begin + TILE < seq_len;  // holds no position seq_len - 1
  const int32_t* table = block_tables + size_t(seq) * max_blocks_per_seq;
  const size_t row_elems = size_t(num_kv_heads) * HEAD_DIM;
  const __nv_bfloat16* kh = k_cache + size_t(kv_head) * HEAD_DIM;
  const __nv_bfloat16* vh = v_cache + size_t(kv_head) * HEAD_DIM;

  // Positions base .. base + TILE - 1 of K (into ks[kb], kb >= 0) and V (into vs[vb], vb >= 0)
  // as one cp.async group; positions past len are zero-filled (their scores are masked, and
  // zeros keep 0 x V finite).
  auto load = [&](int base, int kb, int vb) {
    constexpr int kRowsPerPass = 32 / CHUNKS > 0 ? 32 / CHUNKS : 1;
    const int chunk = lane % CHUNKS;
    for (int r = lane / CHUNKS; r < TILE; r += kRowsPerPass) {
      const int pos = base + r;
      const bool live = pos < len;
      const size_t row =
          live ? size_t(table[pos / block_size]) * block_size + pos % block_size : 0;
      const size_t off = row * row_elems + size_t(chunk) * 8;
      if (kb >= 0) cp_async16(smem_u32(&ks[kb][r][chunk * 8]), kh + off, live);
      if (vb >= 0) cp_async16(smem_u32(&vs[vb][r][chunk * 8]), vh + off, live);
    }
    cp_async_commit();
  };
  // The first tile: one group (two V buffers), or K's group then V's (one; see the loop).
  auto load_tile = [&](int base, int buf) {
    if constexpr (VB == 2) {
      load(base, buf, buf);
    } else {
      load(base, buf, -1);
      load(base, -1, 0);
    }
  };
  if (first_tile_early) {
    load_tile(begin, 0);
    pdl_begin();
  } else {
    pdl_begin();  // launch.cuh: the tile holds the position the kernel before wrote
    load_tile(begin, 0);
  }

  // Q's A fragments (rows: the group's heads, zero past the group), kept for every tile.
  const __nv_bfloat16* qg = q + first_row * HEAD_DIM;
  uint32_t qa[KS][4];
#pragma unroll
  for (int s = 0; s < KS; ++s) {
    const int c = 16 * s + c0;
    auto pair = [&](bool live, int row, int col) {
      return live ? *reinterpret_cast<const uint32_t*>(qg + size_t(row) * HEAD_DIM + col) : 0u;
    };
    qa[s][0] = pair(row_a, r0, c);
    qa[s][1] = pair(row_b, r0 + 8, c);
    qa[s][2] = pair(row_a, r0, c + 8);
    qa[s][3] = pair(row_b, r0 + 8, c + 8);
  }

  float o[NT][4];
#pragma unroll
  for (int n = 0; n < NT; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;  // rows r0 and r0 + 8
  const int tiles = (len - begin + TILE - 1) / TILE;
  for (int t = 0; t < tiles; ++t) {
    const int buf = t & 1;
    const int vbuf = VB == 2 ? buf : 0;
    const bool next = t + 1 < tiles;
    __syncwarp();  // every lane is done with the buffer the next load overwrites
    if constexpr (VB == 2) {
      if (next) {
        load(begin + (t + 1) * TILE, buf ^ 1, buf ^ 1);
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
    } else {
      // Groups pending here: K(t), V(t), and K(t+1) once issued. Wait for K(t) only.
      if (next) {
        load(begin + (t + 1) * TILE, buf ^ 1, -1);
        cp_async_wait<2>();
      } else {
        cp_async_wait<1>();
      }
    }
    __syncwarp();  // this tile's copies, made by every lane, are visible

    // Scores S = Q K^T (log2 domain), masked past len.
    float s[ST][4];
#pragma unroll
    for (int j = 0; j < ST; ++j) {
      s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
      for (int h = 0; h < KS / 2; ++h) {
        uint32_t b0, b1, b2, b3;
        ldmatrix_x4(smem_u32(&ks[buf][8 * j + (lane & 7)][32 * h + 8 * (lane >> 3)]), b0, b1,
                    b2, b3);
        mma_bf16(s[j], qa[2 * h], b0, b1);
        mma_bf16(s[j], qa[2 * h + 1], b2, b3);
      }
    }
    const int base = begin + t * TILE;
    float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
    for (int j = 0; j < ST; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const bool live = base + 8 * j + c0 + e < len;
        s[j][e] = live ? s[j][e] * scale_log2 : -INFINITY;
        s[j][2 + e] = live ? s[j][2 + e] * scale_log2 : -INFINITY;
        mx_a = fmaxf(mx_a, s[j][e]);
        mx_b = fmaxf(mx_b, s[j][2 + e]);
      }
#pragma unroll
    for (int x = 1; x <= 2; x <<= 1) {  // the 4 lanes of a row
      mx_a = fmaxf(mx_a, __shfl_xor_sync(kFullMask, mx_a, x));
      mx_b = fmaxf(mx_b, __shfl_xor_sync(kFullMask, mx_b, x));
    }
    // Finite: position `base` is live. exp2(-inf) = 0 rescales nothing on the first tile.
    const float mn_a = fmaxf(m_a, mx_a), mn_b = fmaxf(m_b, mx_b);
    const float alpha_a = exp2f(m_a - mn_a), alpha_b = exp2f(m_b - mn_b);
    m_a = mn_a;
    m_b = mn_b;
    // Probabilities rounded to bf16 once: the same values multiply V and sum into l.
    uint32_t p[ST][2];
    float sum_a = 0.0f, sum_b = 0.0f;
#pragma unroll
    for (int j = 0; j < ST; ++j) {
      const __nv_bfloat162 pa = __floats2bfloat162_rn(exp2f(s[j][0] - mn_a), exp2f(s[j][1] - mn_a));
      const __nv_bfloat162 pb = __floats2bfloat162_rn(exp2f(s[j][2] - mn_b), exp2f(s[j][3] - mn_b));
      const float2 fa = __bfloat1622float2(pa), fb = __bfloat1622float2(pb);
      sum_a += fa.x + fa.y;
      sum_b += fb.x + fb.y;
      p[j][0] = *reinterpret_cast<const uint32_t*>(&pa);
      p[j][1] = *reinterpret_cast<const uint32_t*>(&pb);
    }
    l_a = l_a * alpha_a + sum_a;  // this lane's columns; the row's 4 lanes are added at the end
    l_b = l_b * alpha_b + sum_b;
#pragma unroll
    for (int n = 0; n < NT; ++n) {
      o[n][0] *= alpha_a;
      o[n][1] *= alpha_a;
      o[n][2] *= alpha_b;
      o[n][3] *= alpha_b;
    }
    if constexpr (VB == 1) {  // V(t): its group is the older of the (at most) two pending
      if (next)
        cp_async_wait<1>();
      else
        cp_async_wait<0>();
      __syncwarp();
    }
    // O += P V: P's A fragment of k-step kk is the score tiles 2 kk and 2 kk + 1.
#pragma unroll
    for (int kk = 0; kk < TILE / 16; ++kk) {
      const uint32_t pa[4] = {p[2 * kk][0], p[2 * kk][1], p[2 * kk + 1][0], p[2 * kk + 1][1]};
      const int vrow = 16 * kk + ((lane >> 3) & 1) * 8 + (lane & 7);
#pragma unroll
      for (int n = 0; n < NT; n += 2) {
        uint32_t b0, b1, b2, b3;
        ldmatrix_x4_trans(smem_u32(&vs[vbuf][vrow][8 * n + (lane >> 4) * 8]), b0, b1, b2, b3);
        mma_bf16(o[n], pa, b0, b1);
        mma_bf16(o[n + 1], pa, b2, b3);
      }
    }
    if constexpr (VB == 1) {
      if (next) {  // the single V buffer is free once every lane has read it
        __syncwarp();
        load(begin + (t + 1) * TILE, -1, 0);
      }
    }
  }
#pragma unroll
  for (int x = 1; x <= 2; x <<= 1) {
    l_a += __shfl_xor_sync(kFullMask, l_a, x);
    l_b += __shfl_xor_sync(kFullMask, l_b, x);
  }
  if (partial) {
    if (row_a) write_partial(r0, m_a, l_a, o, 0);
    if (row_b) write_partial(r0 + 8, m_b, l_b, o, 1);
    return;
  }
  // o / l, divided as the combine kernel divides: one range merged gives these same bits.
  __nv_bfloat16* og = out + first_row * HEAD_DIM;
#pragma unroll
  for (int n = 0; n < NT; ++n) {
    if (row_a)
      *reinterpret_cast<uint32_t*>(og + size_t(r0) * HEAD_DIM + 8 * n + c0) =
          pack_bf16x2(o[n][0] / l_a, o[n][1] / l_a);
    if (row_b)
      *reinterpret_cast<uint32_t*>(og + size_t(r0 + 8) * HEAD_DIM + 8 * n + c0) =
          pack_bf16x2(o[n][2] / l_b, o[n][3] / l_b);
  }
}

// The splits of one (sequence, head) merged: weights 2^(m_s - max m), output sum of the weighted
// partial outputs over the weighted sums. A block per (sequence, head), a thread per dimension.
// The maximum is a block reduction (exact in any order); the sums run over the splits in order,
// four splits' loads at a time (a loop of one split at a time waits on L2 for each of them).
template <int HEAD_DIM>
__global__ void __launch_bounds__(HEAD_DIM) paged_decode_attention_combine_kernel(
    const float* __restrict__ partial, int splits, int total_rows, __nv_bfloat16* __restrict__ out) {
  pdl_begin();
  static_assert(HEAD_DIM % 32 == 0 && HEAD_DIM <= 1024, "a thread per dimension, whole warps");
  __shared__ float warp_mx[HEAD_DIM / 32];
  const int row = blockIdx.x, d = threadIdx.x;
  const float* ml = partial + size_t(total_rows) * splits * HEAD_DIM + size_t(row) * splits * 2;
  float mx = -INFINITY;
  for (int s = d; s < splits; s += HEAD_DIM) mx = fmaxf(mx, ml[2 * s]);
  mx = warp_max(mx);
  if (d % 32 == 0) warp_mx[d / 32] = mx;
  __syncthreads();
#pragma unroll
  for (int w = 0; w < HEAD_DIM / 32; ++w) mx = fmaxf(mx, warp_mx[w]);  // finite: split 0 is never empty
  float sum = 0.0f, acc = 0.0f;
  const float* p = partial + size_t(row) * splits * HEAD_DIM + d;
#pragma unroll 4
  for (int s = 0; s < splits; ++s) {
    const float w = exp2f(ml[2 * s] - mx);
    sum += ml[2 * s + 1] * w;
    acc += p[size_t(s) * HEAD_DIM] * w;
  }
  out[size_t(row) * HEAD_DIM + d] = __float2bfloat16(acc / sum);
}

}  // namespace eep::kernels::detail
