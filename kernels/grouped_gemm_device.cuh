// Expert grouped GEMM with the per-expert row offsets on the device (see grouped_gemm_device in
// eep_kernels.h). Tensor cores through mma.sync m16n8k16 (bf16 in, fp32 accumulate), operands
// streamed into shared memory by a multi-stage cp.async pipeline.
//
// Roles are swapped against the usual GEMM: the MMA's M dimension is the weight rows (outputs
// n) and its N dimension the tokens, so that one expert's few decode rows fill an n8 slice
// instead of wasting most of an m16 one. A (16 weight rows x 16 k) and B (16 k x 8 tokens, k
// contiguous per token = "col") both load straight from their row-major [rows][k] tiles with
// ldmatrix (no transpose).
//
// Work: a tile is (expert e, m-tile of BM of e's rows, n-block of BN weight rows). The grid is
// persistent (a host-side fixed size); every CTA reads the offsets, scans the m-tile counts of
// all experts in shared memory and walks the tiles t = blockIdx.x, blockIdx.x + gridDim.x, ...
// of the non-empty experts only (an empty expert owns no tile). Tile order: the n-blocks of one
// (expert, m-tile) are consecutive, so the m-tiles of one expert run close in time and share its
// weights through L2.
//
// Shared-memory tiles are [rows][BK] bf16 with the 16-byte chunk index XOR-swizzled by
// (row & 7): ldmatrix's 8 rows at one logical chunk land in 8 distinct bank groups.
//
// Epilogue: each warp's fp32 accumulators go to shared memory (WK warps that split one stage's
// k add up there), then 16-byte bf16 stores of whole 8-column chunks; the SwiGLU variant pairs
// column c of the gate half with column c of the up half of the same CTA (its weight tile holds
// BN/2 gate rows and the matching BN/2 up rows) and writes silu(g) * u with g and u rounded to
// bf16 first, as silu_mul_fused computes from a stored gate|up output.
#pragma once

#include <cstdint>

#include <cub/block/block_scan.cuh>

#include "common.cuh"

namespace eep::kernels::detail::ggd {

constexpr int kMaxExperts = 1024;

template <int BN_, int BM_, int BK_, int STAGES_, int WN_, int WM_, int WK_, int MIN_BLOCKS_>
struct Config {
  static constexpr int BN = BN_;          // weight rows (outputs) per tile
  static constexpr int BM = BM_;          // tokens per tile
  static constexpr int BK = BK_;          // k per pipeline stage
  static constexpr int STAGES = STAGES_;  // cp.async stages
  static constexpr int WN = WN_, WM = WM_, WK = WK_;  // warps along weight rows, tokens, k
  static constexpr int MIN_BLOCKS = MIN_BLOCKS_;
  static constexpr int WARPS = WN * WM * WK;
  static constexpr int THREADS = WARPS * 32;
  static constexpr int WTN = BN / WN;      // weight rows per warp
  static constexpr int WTM = BM / WM;      // tokens per warp
  static constexpr int WTK = BK / WK;      // k per warp per stage
  static constexpr int MI = WTN / 16;      // m16 tiles per warp
  static constexpr int NI = WTM / 8;       // n8 tiles per warp
  static constexpr int CPR = BK / 8;       // 16-byte chunks per smem row
  static constexpr int STAGE_ELEMS = (BN + BM) * BK;
  static constexpr int PIPE_BYTES = STAGES * STAGE_ELEMS * 2;
  static constexpr int RED_LD = BN + 4;    // fp32 epilogue row stride (bank spread)
  static constexpr int RED_BYTES = WK * BM * RED_LD * 4;
  static constexpr int SMEM_BYTES = PIPE_BYTES > RED_BYTES ? PIPE_BYTES : RED_BYTES;
  static_assert(BK % 64 == 0, "swizzle needs >= 8 chunks per row");
  static_assert(WTN % 16 == 0 && WTM % 16 == 0 && WTK % 16 == 0, "warp tile");
  static_assert(BN % 16 == 0, "fused split");
};

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Byte offset of (row, chunk) in a [rows][BK] bf16 tile.
template <int CPR>
__device__ __forceinline__ int swz(int row, int chunk) {
  return row * CPR * 16 + ((chunk ^ (row & 7)) << 4);
}

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool full) {
  const int n = full ? 16 : 0;  // 0: zero-fill, nothing read
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t addr, uint32_t& r0, uint32_t& r1,
                                            uint32_t& r2, uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ float silu_mul_bf16(float g, float u) {
  g = __bfloat162float(__float2bfloat16(g));
  u = __bfloat162float(__float2bfloat16(u));
  return g / (1.0f + expf(-g)) * u;
}

// SWIGLU: w is [E][2*inter][k] (n = 2*inter), y is act [rows][inter]; otherwise y [rows][n].
template <class C, bool SWIGLU>
__global__ void __launch_bounds__(C::THREADS, C::MIN_BLOCKS)
    grouped_gemm_device_kernel(const __nv_bfloat16* __restrict__ x,
                               const __nv_bfloat16* __restrict__ w,
                               __nv_bfloat16* __restrict__ y, const int32_t* __restrict__ offsets,
                               int num_experts, int n, int k) {
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ int s_off[kMaxExperts + 1];
  __shared__ int s_mt_end[kMaxExperts];  // inclusive prefix of m-tiles per expert
  using Scan = cub::BlockScan<int, C::THREADS>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ int s_carry;

  const int tid = threadIdx.x;
  for (int i = tid; i <= num_experts; i += C::THREADS) s_off[i] = offsets[i];
  if (tid == 0) s_carry = 0;
  __syncthreads();
  for (int base = 0; base < num_experts; base += C::THREADS) {
    const int e = base + tid;
    int mt = 0;
    if (e < num_experts) {
      const int m = s_off[e + 1] - s_off[e];
      mt = m > 0 ? (m + C::BM - 1) / C::BM : 0;
    }
    int incl, total;
    Scan(scan_tmp).InclusiveSum(mt, incl, total);
    const int carry = s_carry;
    if (e < num_experts) s_mt_end[e] = carry + incl;
    __syncthreads();
    if (tid == 0) s_carry = carry + total;
    __syncthreads();
  }
  const int total_mt = s_carry;
  const int nb_count = SWIGLU ? (n / 2) / (C::BN / 2) : (n + C::BN - 1) / C::BN;
  const long long total_tiles = (long long)total_mt * nb_count;

  const int warp = tid >> 5, lane = tid & 31;
  // warp -> (wn, wm, wk)
  const int wk = warp % C::WK;
  const int wm = (warp / C::WK) % C::WM;
  const int wn = warp / (C::WK * C::WM);
  const uint32_t smem_base = smem_u32(smem);
  const int ktiles = (k + C::BK - 1) / C::BK;
  const int inter = n / 2;

  for (long long t = blockIdx.x; t < total_tiles; t += gridDim.x) {
    const int mtg = int(t / nb_count), nb = int(t % nb_count);
    // expert = first e with s_mt_end[e] > mtg
    int lo = 0, hi = num_experts - 1;
    while (lo < hi) {
      const int mid = (lo + hi) >> 1;
      if (s_mt_end[mid] > mtg) hi = mid; else lo = mid + 1;
    }
    const int e = lo;
    const int mt_local = mtg - (e ? s_mt_end[e - 1] : 0);
    const int row0 = s_off[e] + mt_local * C::BM;
    const int m_valid = min(C::BM, s_off[e + 1] - row0);
    const __nv_bfloat16* we = w + size_t(e) * size_t(n) * size_t(k);
    const __nv_bfloat16* xe = x + size_t(row0) * size_t(k);

    // Global weight row of smem row r.
    auto wrow = [&](int r) -> int {
      if (SWIGLU) return r < C::BN / 2 ? nb * (C::BN / 2) + r : inter + nb * (C::BN / 2) + r - C::BN / 2;
      return nb * C::BN + r;
    };

    auto load_stage = [&](int kt) {
      const int slot = kt % C::STAGES;
      const uint32_t ws = smem_base + slot * C::STAGE_ELEMS * 2;
      const uint32_t xs = ws + C::BN * C::BK * 2;
      const int k0 = kt * C::BK;
#pragma unroll
      for (int i = tid; i < C::BN * C::CPR; i += C::THREADS) {
        const int r = i / C::CPR, c = i % C::CPR;
        const int gr = wrow(r);
        if (SWIGLU || gr < n) {
          const bool full = k0 + c * 8 < k;
          cp_async16(ws + swz<C::CPR>(r, c), we + size_t(gr) * k + (full ? k0 + c * 8 : 0), full);
        }
      }
#pragma unroll
      for (int i = tid; i < C::BM * C::CPR; i += C::THREADS) {
        const int r = i / C::CPR, c = i % C::CPR;
        if (r < m_valid) {
          const bool full = k0 + c * 8 < k;
          cp_async16(xs + swz<C::CPR>(r, c), xe + size_t(r) * k + (full ? k0 + c * 8 : 0), full);
        }
      }
    };

    float acc[C::MI][C::NI][4];
#pragma unroll
    for (int i = 0; i < C::MI; ++i)
#pragma unroll
      for (int j = 0; j < C::NI; ++j)
#pragma unroll
        for (int q = 0; q < 4; ++q) acc[i][j][q] = 0.0f;

#pragma unroll
    for (int s = 0; s < C::STAGES - 1; ++s) {
      if (s < ktiles) load_stage(s);
      cp_async_commit();
    }
    for (int kt = 0; kt < ktiles; ++kt) {
      cp_async_wait<C::STAGES - 2>();
      __syncthreads();
      if (kt + C::STAGES - 1 < ktiles) load_stage(kt + C::STAGES - 1);
      cp_async_commit();
      const int slot = kt % C::STAGES;
      const uint32_t ws = smem_base + slot * C::STAGE_ELEMS * 2;
      const uint32_t xs = ws + C::BN * C::BK * 2;
#pragma unroll
      for (int kk = 0; kk < C::WTK; kk += 16) {
        const int kc = (wk * C::WTK + kk) / 8;  // chunk of this k16 step's first half
        uint32_t a[C::MI][4];
#pragma unroll
        for (int i = 0; i < C::MI; ++i) {
          const int r = wn * C::WTN + i * 16 + (lane & 15);
          ldmatrix_x4(ws + swz<C::CPR>(r, kc + (lane >> 4)), a[i][0], a[i][1], a[i][2], a[i][3]);
        }
        uint32_t b[C::NI][2];
#pragma unroll
        for (int j = 0; j < C::NI; j += 2) {
          const int q = lane >> 3;
          const int r = wm * C::WTM + j * 8 + (q >> 1) * 8 + (lane & 7);
          ldmatrix_x4(xs + swz<C::CPR>(r, kc + (q & 1)), b[j][0], b[j][1], b[j + 1][0],
                      b[j + 1][1]);
        }
#pragma unroll
        for (int i = 0; i < C::MI; ++i)
#pragma unroll
          for (int j = 0; j < C::NI; ++j) mma_bf16(acc[i][j], a[i], b[j][0], b[j][1]);
      }
    }
    cp_async_wait<0>();
    __syncthreads();  // pipeline buffers are free: reuse them for the epilogue

    float* red = reinterpret_cast<float*>(smem);
    {
      const int g = lane >> 2, t4 = lane & 3;
      float* rw = red + size_t(wk) * C::BM * C::RED_LD;
#pragma unroll
      for (int i = 0; i < C::MI; ++i)
#pragma unroll
        for (int j = 0; j < C::NI; ++j) {
          const int col = wn * C::WTN + i * 16 + g;          // weight row in tile
          const int tok = wm * C::WTM + j * 8 + 2 * t4;      // token in tile
          rw[tok * C::RED_LD + col] = acc[i][j][0];
          rw[(tok + 1) * C::RED_LD + col] = acc[i][j][1];
          rw[tok * C::RED_LD + col + 8] = acc[i][j][2];
          rw[(tok + 1) * C::RED_LD + col + 8] = acc[i][j][3];
        }
    }
    __syncthreads();
    if (SWIGLU) {
      constexpr int CH = C::BN / 16;  // 8-column output chunks per token
      for (int i = tid; i < C::BM * CH; i += C::THREADS) {
        const int tok = i / CH, c = (i % CH) * 8;
        if (tok >= m_valid) continue;
        float gv[8], uv[8];
#pragma unroll
        for (int q = 0; q < 8; ++q) gv[q] = uv[q] = 0.0f;
#pragma unroll
        for (int s = 0; s < C::WK; ++s) {
          const float* rr = red + size_t(s) * C::BM * C::RED_LD + tok * C::RED_LD;
          const float4 g0 = *reinterpret_cast<const float4*>(rr + c);
          const float4 g1 = *reinterpret_cast<const float4*>(rr + c + 4);
          const float4 u0 = *reinterpret_cast<const float4*>(rr + C::BN / 2 + c);
          const float4 u1 = *reinterpret_cast<const float4*>(rr + C::BN / 2 + c + 4);
          gv[0] += g0.x; gv[1] += g0.y; gv[2] += g0.z; gv[3] += g0.w;
          gv[4] += g1.x; gv[5] += g1.y; gv[6] += g1.z; gv[7] += g1.w;
          uv[0] += u0.x; uv[1] += u0.y; uv[2] += u0.z; uv[3] += u0.w;
          uv[4] += u1.x; uv[5] += u1.y; uv[6] += u1.z; uv[7] += u1.w;
        }
        alignas(16) __nv_bfloat16 o[8];
#pragma unroll
        for (int q = 0; q < 8; ++q) o[q] = __float2bfloat16(silu_mul_bf16(gv[q], uv[q]));
        *reinterpret_cast<uint4*>(y + size_t(row0 + tok) * inter + nb * (C::BN / 2) + c) =
            *reinterpret_cast<const uint4*>(o);
      }
    } else {
      constexpr int CH = C::BN / 8;
      for (int i = tid; i < C::BM * CH; i += C::THREADS) {
        const int tok = i / CH, c = (i % CH) * 8;
        const int col = nb * C::BN + c;
        if (tok >= m_valid || col >= n) continue;
        float v[8];
#pragma unroll
        for (int q = 0; q < 8; ++q) v[q] = 0.0f;
#pragma unroll
        for (int s = 0; s < C::WK; ++s) {
          const float* rr = red + size_t(s) * C::BM * C::RED_LD + tok * C::RED_LD + c;
          const float4 v0 = *reinterpret_cast<const float4*>(rr);
          const float4 v1 = *reinterpret_cast<const float4*>(rr + 4);
          v[0] += v0.x; v[1] += v0.y; v[2] += v0.z; v[3] += v0.w;
          v[4] += v1.x; v[5] += v1.y; v[6] += v1.z; v[7] += v1.w;
        }
        alignas(16) __nv_bfloat16 o[8];
#pragma unroll
        for (int q = 0; q < 8; ++q) o[q] = __float2bfloat16(v[q]);
        *reinterpret_cast<uint4*>(y + size_t(row0 + tok) * n + col) =
            *reinterpret_cast<const uint4*>(o);
      }
    }
    __syncthreads();  // epilogue reads done before the next tile's loads overwrite smem
  }
}

}  // namespace eep::kernels::detail::ggd
