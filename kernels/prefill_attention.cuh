// Paged prefill attention (chunked prefill), causal, GQA, flash-attention style on tensor cores.
//
// One CTA takes a tile of kPrefillM query vectors of one (sequence, kv head): the vectors of a
// sequence's chunk are numbered i = row * group + g (row of the chunk, query head g of the kv
// head's group), so the query heads that share a kv head sit in one tile and read each K/V row
// once. The CTA streams the positions 0 .. (last position of its tile) through shared memory in
// tiles of kPrefillN positions; per KV tile each of its 4 warps owns 16 query vectors:
//   S = Q K^T (wmma bf16 16x16x16, fp32 accumulate) -> shared memory,
//   online softmax per row in fp32 (running max m, running sum l, causal mask pos <= qpos),
//   P (bf16) -> shared memory, O (fp32, shared memory) = O * corr + P V (wmma, fp32 accumulate;
//   a row's O is rescaled only when its running maximum grew).
// After the last tile out = O / l. Only the K/V loads are shared by the warps, so the only block
// barriers are around them.
#pragma once

#include <mma.h>

#include "common.cuh"

namespace eep::kernels::detail {

constexpr int kPrefillM = 64;  // query vectors per CTA (4 warps x 16)
constexpr int kPrefillN = 64;  // positions per KV tile
constexpr int kPrefillWarps = 4;

template <int D>
struct PrefillSmem {
  static constexpr int kLdh = D + 8;          // bf16 rows of Q, K, V (pad: bank spread)
  static constexpr int kLdS = kPrefillN + 4;  // fp32 rows of S
  static constexpr int kLdP = kPrefillN + 8;  // bf16 rows of P
  static constexpr int kLdO = D + 4;          // fp32 rows of O
  static constexpr size_t kQ = 0;
  static constexpr size_t kK = kQ + size_t(kPrefillM) * kLdh * 2;
  static constexpr size_t kV = kK + size_t(kPrefillN) * kLdh * 2;
  static constexpr size_t kS = kV + size_t(kPrefillN) * kLdh * 2;
  static constexpr size_t kP = kS + size_t(kPrefillM) * kLdS * 4;
  static constexpr size_t kO = kP + size_t(kPrefillM) * kLdP * 2;
  static constexpr size_t kBytes = kO + size_t(kPrefillM) * kLdO * 4;
};

template <int D>
__global__ void __launch_bounds__(kPrefillWarps * 32)
    paged_prefill_attention_kernel(const __nv_bfloat16* __restrict__ q,
                                   const __nv_bfloat16* __restrict__ k_cache,
                                   const __nv_bfloat16* __restrict__ v_cache,
                                   const int32_t* __restrict__ block_tables,
                                   const int32_t* __restrict__ q_starts,
                                   const int32_t* __restrict__ num_rows,
                                   const int32_t* __restrict__ starts,
                                   __nv_bfloat16* __restrict__ out, int num_heads,
                                   int num_kv_heads, int block_size, int max_blocks_per_seq,
                                   float scale) {
  using namespace nvcuda;
  using L = PrefillSmem<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  __nv_bfloat16* sQ = reinterpret_cast<__nv_bfloat16*>(smem + L::kQ);
  __nv_bfloat16* sK = reinterpret_cast<__nv_bfloat16*>(smem + L::kK);
  __nv_bfloat16* sV = reinterpret_cast<__nv_bfloat16*>(smem + L::kV);
  float* sS = reinterpret_cast<float*>(smem + L::kS);
  __nv_bfloat16* sP = reinterpret_cast<__nv_bfloat16*>(smem + L::kP);
  float* sO = reinterpret_cast<float*>(smem + L::kO);

  const int seq = blockIdx.z;
  const int kv_head = blockIdx.y;
  const int tile = gridDim.x - 1 - blockIdx.x;  // later tiles (longer contexts) start first
  const int group = num_heads / num_kv_heads;
  const int rows = num_rows[seq];
  const int total = rows * group;  // query vectors of this (sequence, kv head)
  const int i0 = tile * kPrefillM;
  if (i0 >= total) return;
  const int q0 = q_starts[seq];
  const int start = starts[seq];
  const int32_t* table = block_tables + size_t(seq) * max_blocks_per_seq;
  const int last_vec = min(i0 + kPrefillM, total) - 1;
  const int ctx_end = start + last_vec / group + 1;  // positions 0 .. ctx_end-1 are attended

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  constexpr int kChunks = D / 8;  // 16-byte chunks per head row
  const uint4 zero = make_uint4(0, 0, 0, 0);

  // Q tile (vectors past the chunk are zero) and O = 0.
  for (int c = tid; c < kPrefillM * kChunks; c += blockDim.x) {
    const int v = c / kChunks, ch = c % kChunks;
    const int i = i0 + v;
    uint4 val = zero;
    if (i < total) {
      const int row = i / group, g = i % group;
      const size_t off =
          (size_t(q0 + row) * num_heads + size_t(kv_head) * group + g) * D + size_t(ch) * 8;
      val = *reinterpret_cast<const uint4*>(q + off);
    }
    *reinterpret_cast<uint4*>(sQ + v * L::kLdh + ch * 8) = val;
  }
  for (int c = tid; c < kPrefillM * D; c += blockDim.x) sO[(c / D) * L::kLdO + c % D] = 0.0f;

  // Per-warp row state: this warp owns vectors warp*16 .. warp*16+15; every lane keeps all 16.
  constexpr int kRows = 16;
  float m_run[kRows], l_run[kRows];
  int qpos[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    m_run[r] = -INFINITY;
    l_run[r] = 0.0f;
    const int i = i0 + warp * kRows + r;
    qpos[r] = i < total ? start + i / group : -1;  // -1: padding vector, attends nothing
  }

  const size_t token_stride = size_t(num_kv_heads) * D;
  for (int kv0 = 0; kv0 < ctx_end; kv0 += kPrefillN) {
    __syncthreads();  // previous tile's K/V reads done (and, first time, Q/O written)
    for (int c = tid; c < kPrefillN * kChunks; c += blockDim.x) {
      const int n = c / kChunks, ch = c % kChunks;
      const int pos = kv0 + n;
      uint4 kval = zero, vval = zero;  // positions past the context: zeros (never NaN * 0)
      if (pos < ctx_end) {
        const int block = table[pos / block_size];
        const size_t off = (size_t(block) * block_size + pos % block_size) * token_stride +
                           size_t(kv_head) * D + size_t(ch) * 8;
        kval = *reinterpret_cast<const uint4*>(k_cache + off);
        vval = *reinterpret_cast<const uint4*>(v_cache + off);
      }
      *reinterpret_cast<uint4*>(sK + n * L::kLdh + ch * 8) = kval;
      *reinterpret_cast<uint4*>(sV + n * L::kLdh + ch * 8) = vval;
    }
    __syncthreads();

    // S = Q K^T for this warp's 16 rows, all kPrefillN columns.
    {
      constexpr int kNT = kPrefillN / 16;
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kNT];
#pragma unroll
      for (int t = 0; t < kNT; ++t) wmma::fill_fragment(acc[t], 0.0f);
#pragma unroll
      for (int k = 0; k < D; k += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
        wmma::load_matrix_sync(a, sQ + warp * 16 * L::kLdh + k, L::kLdh);
#pragma unroll
        for (int t = 0; t < kNT; ++t) {
          // K^T as a col-major [D][N] matrix is K row-major [N][D].
          wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b;
          wmma::load_matrix_sync(b, sK + t * 16 * L::kLdh + k, L::kLdh);
          wmma::mma_sync(acc[t], a, b, acc[t]);
        }
      }
#pragma unroll
      for (int t = 0; t < kNT; ++t)
        wmma::store_matrix_sync(sS + warp * 16 * L::kLdS + t * 16, acc[t], L::kLdS,
                                wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax, one row at a time across the warp (lane: columns lane, lane + 32).
    static_assert(kPrefillN == 64, "softmax below assumes two columns per lane");
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int row = warp * 16 + r;
      const float* srow = sS + row * L::kLdS;
      const int c0 = lane, c1 = lane + 32;
      const float s0 = kv0 + c0 <= qpos[r] ? srow[c0] * scale : -INFINITY;
      const float s1 = kv0 + c1 <= qpos[r] ? srow[c1] * scale : -INFINITY;
      const float m_new = fmaxf(m_run[r], warp_max(fmaxf(s0, s1)));
      // The row's O and l are rescaled only when its maximum grew and it had attended something
      // (O is still zero before): after the first tiles most rows skip the O pass entirely.
      const bool rescale = m_new > m_run[r] && m_run[r] != -INFINITY;  // warp-uniform
      const float corr = rescale ? __expf(m_run[r] - m_new) : 1.0f;
      float p0 = 0.0f, p1 = 0.0f;
      if (m_new != -INFINITY) {  // else nothing attended yet (padding row): all stay zero
        p0 = __expf(s0 - m_new);
        p1 = __expf(s1 - m_new);
      }
      const __nv_bfloat16 b0 = __float2bfloat16(p0), b1 = __float2bfloat16(p1);
      // l sums the rounded probabilities that P V uses, so the weights sum to exactly 1.
      l_run[r] = l_run[r] * corr + warp_sum(__bfloat162float(b0) + __bfloat162float(b1));
      m_run[r] = m_new;
      sP[row * L::kLdP + c0] = b0;
      sP[row * L::kLdP + c1] = b1;
      if (rescale) {
        float* orow = sO + row * L::kLdO;
#pragma unroll
        for (int d = lane; d < D; d += 32) orow[d] *= corr;
      }
    }
    __syncwarp();

    // O += P V for this warp's 16 rows, D columns in groups of 4 fragments.
    {
      constexpr int kGroup = 4;
#pragma unroll
      for (int d0 = 0; d0 < D; d0 += 16 * kGroup) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kGroup];
#pragma unroll
        for (int t = 0; t < kGroup; ++t)
          wmma::load_matrix_sync(acc[t], sO + warp * 16 * L::kLdO + d0 + t * 16, L::kLdO,
                                 wmma::mem_row_major);
#pragma unroll
        for (int k = 0; k < kPrefillN; k += 16) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
          wmma::load_matrix_sync(a, sP + warp * 16 * L::kLdP + k, L::kLdP);
#pragma unroll
          for (int t = 0; t < kGroup; ++t) {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> b;
            wmma::load_matrix_sync(b, sV + k * L::kLdh + d0 + t * 16, L::kLdh);
            wmma::mma_sync(acc[t], a, b, acc[t]);
          }
        }
#pragma unroll
        for (int t = 0; t < kGroup; ++t)
          wmma::store_matrix_sync(sO + warp * 16 * L::kLdO + d0 + t * 16, acc[t], L::kLdO,
                                  wmma::mem_row_major);
      }
    }
    __syncwarp();
  }

  // out = O / l for this warp's valid rows.
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int i = i0 + warp * 16 + r;
    if (i >= total) break;
    const int row = i / group, g = i % group;
    const float inv = 1.0f / l_run[r];
    const float* orow = sO + (warp * 16 + r) * L::kLdO;
    __nv_bfloat16* o = out + (size_t(q0 + row) * num_heads + size_t(kv_head) * group + g) * D;
    for (int d = lane * 2; d < D; d += 64)
      *reinterpret_cast<__nv_bfloat162*>(o + d) =
          __floats2bfloat162_rn(orow[d] * inv, orow[d + 1] * inv);
  }
}

}  // namespace eep::kernels::detail
