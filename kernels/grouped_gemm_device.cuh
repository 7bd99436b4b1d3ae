// Expert grouped GEMM with the per-expert row offsets on the device (see grouped_gemm_device in
// eep_kernels.h). Three kernel families share the tile walk, the shared-memory layout and the
// epilogue rules: mma.sync m16n8k16 fed by a multi-stage cp.async pipeline (decode tiles; the
// portable prefill fallback), wgmma fed by the same cp.async pipeline, and wgmma fed by TMA with
// a producer warp (the prefill tiles on sm_90a). All take bf16 in and accumulate in fp32. The
// notes below describe the first; the other two sections say what they change.
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
#include <cuda.h>  // CUtensorMap

#include "common.cuh"
#include "launch.cuh"
#include "mma.cuh"

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

// Byte offset of (row, chunk) in a [rows][BK] bf16 tile.
template <int CPR>
__device__ __forceinline__ int swz(int row, int chunk) {
  return row * CPR * 16 + ((chunk ^ (row & 7)) << 4);
}

__device__ __forceinline__ float silu_mul_bf16(float g, float u) {
  g = __bfloat162float(__float2bfloat16(g));
  u = __bfloat162float(__float2bfloat16(u));
  return g / (1.0f + expf(-g)) * u;
}

// Per CTA: the experts' row offsets and the inclusive prefix of their m-tile counts (tiles of
// bm rows; an empty expert has none), from which a global m-tile index finds its expert.
template <int THREADS>
struct TileTable {
  int off[kMaxExperts + 1];
  int mt_end[kMaxExperts];
  typename cub::BlockScan<int, THREADS>::TempStorage scan;
  int carry;

  // Returns the number of m-tiles of all experts. Call with all threads of the CTA.
  __device__ int build(const int32_t* __restrict__ offsets, int num_experts, int bm) {
    const int tid = threadIdx.x;
    for (int i = tid; i <= num_experts; i += THREADS) off[i] = offsets[i];
    if (tid == 0) carry = 0;
    __syncthreads();
    for (int base = 0; base < num_experts; base += THREADS) {
      const int e = base + tid;
      int mt = 0;
      if (e < num_experts) {
        const int m = off[e + 1] - off[e];
        mt = m > 0 ? (m + bm - 1) / bm : 0;
      }
      int incl, total;
      cub::BlockScan<int, THREADS>(scan).InclusiveSum(mt, incl, total);
      const int c = carry;
      if (e < num_experts) mt_end[e] = c + incl;
      __syncthreads();
      if (tid == 0) carry = c + total;
      __syncthreads();
    }
    return carry;
  }
  // Global m-tile mtg (< the total) -> its expert, first row and number of valid rows.
  __device__ void locate(int mtg, int num_experts, int bm, int& e, int& row0, int& m_valid) const {
    int lo = 0, hi = num_experts - 1;  // first e with mt_end[e] > mtg
    while (lo < hi) {
      const int mid = (lo + hi) >> 1;
      if (mt_end[mid] > mtg) hi = mid; else lo = mid + 1;
    }
    e = lo;
    row0 = off[e] + (mtg - (e ? mt_end[e - 1] : 0)) * bm;
    m_valid = min(bm, off[e + 1] - row0);
  }
};

// Global weight row of tile row r (n-block nb of BN rows; SwiGLU: BN/2 gate rows, then the
// matching BN/2 up rows).
template <int BN, bool SWIGLU>
__device__ __forceinline__ int weight_row(int r, int nb, int inter) {
  if (SWIGLU) return r < BN / 2 ? nb * (BN / 2) + r : inter + nb * (BN / 2) + r - BN / 2;
  return nb * BN + r;
}

// One pipeline stage: the weight tile [BN][BK] at ws and the token tile [BM][BK] at xs
// (swizzled), k from k0. Weight rows past n and token rows past m_valid are not loaded (they
// only feed outputs that are never stored); chunks past k are zero-filled.
template <int BN, int BM, int BK, int THREADS, bool SWIGLU>
__device__ __forceinline__ void load_stage(uint32_t ws, uint32_t xs,
                                           const __nv_bfloat16* __restrict__ we,
                                           const __nv_bfloat16* __restrict__ xe, int nb, int n,
                                           int k, int k0, int m_valid, int tid) {
  constexpr int CPR = BK / 8;
#pragma unroll
  for (int i = tid; i < BN * CPR; i += THREADS) {
    const int r = i / CPR, c = i % CPR;
    const int gr = weight_row<BN, SWIGLU>(r, nb, n / 2);
    if (SWIGLU || gr < n) {
      const bool full = k0 + c * 8 < k;
      cp_async16(ws + swz<CPR>(r, c), we + size_t(gr) * k + (full ? k0 + c * 8 : 0), full);
    }
  }
#pragma unroll
  for (int i = tid; i < BM * CPR; i += THREADS) {
    const int r = i / CPR, c = i % CPR;
    if (r < m_valid) {
      const bool full = k0 + c * 8 < k;
      cp_async16(xs + swz<CPR>(r, c), xe + size_t(r) * k + (full ? k0 + c * 8 : 0), full);
    }
  }
}

// Epilogue from shared memory: red holds WK partial tiles [BM][RED_LD] fp32 (token, weight row
// in the tile); sums them and writes 16-byte bf16 chunks of the valid rows.
template <int BN, int BM, int WK, int RED_LD, int THREADS, bool SWIGLU>
__device__ __forceinline__ void store_tile(const float* red, __nv_bfloat16* __restrict__ y,
                                           int row0, int m_valid, int nb, int n, int tid) {
  const int inter = n / 2;
  if (SWIGLU) {
    constexpr int CH = BN / 16;  // 8-column output chunks per token
    for (int i = tid; i < BM * CH; i += THREADS) {
      const int tok = i / CH, c = (i % CH) * 8;
      if (tok >= m_valid) continue;
      float gv[8], uv[8];
#pragma unroll
      for (int q = 0; q < 8; ++q) gv[q] = uv[q] = 0.0f;
#pragma unroll
      for (int s = 0; s < WK; ++s) {
        const float* rr = red + size_t(s) * BM * RED_LD + tok * RED_LD;
        const float4 g0 = *reinterpret_cast<const float4*>(rr + c);
        const float4 g1 = *reinterpret_cast<const float4*>(rr + c + 4);
        const float4 u0 = *reinterpret_cast<const float4*>(rr + BN / 2 + c);
        const float4 u1 = *reinterpret_cast<const float4*>(rr + BN / 2 + c + 4);
        gv[0] += g0.x; gv[1] += g0.y; gv[2] += g0.z; gv[3] += g0.w;
        gv[4] += g1.x; gv[5] += g1.y; gv[6] += g1.z; gv[7] += g1.w;
        uv[0] += u0.x; uv[1] += u0.y; uv[2] += u0.z; uv[3] += u0.w;
        uv[4] += u1.x; uv[5] += u1.y; uv[6] += u1.z; uv[7] += u1.w;
      }
      alignas(16) __nv_bfloat16 o[8];
#pragma unroll
      for (int q = 0; q < 8; ++q) o[q] = __float2bfloat16(silu_mul_bf16(gv[q], uv[q]));
      *reinterpret_cast<uint4*>(y + size_t(row0 + tok) * inter + nb * (BN / 2) + c) =
          *reinterpret_cast<const uint4*>(o);
    }
  } else {
    constexpr int CH = BN / 8;
    for (int i = tid; i < BM * CH; i += THREADS) {
      const int tok = i / CH, c = (i % CH) * 8;
      const int col = nb * BN + c;
      if (tok >= m_valid || col >= n) continue;
      float v[8];
#pragma unroll
      for (int q = 0; q < 8; ++q) v[q] = 0.0f;
#pragma unroll
      for (int s = 0; s < WK; ++s) {
        const float* rr = red + size_t(s) * BM * RED_LD + tok * RED_LD + c;
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
}

// SWIGLU: w is [E][2*inter][k] (n = 2*inter), y is act [rows][inter]; otherwise y [rows][n].
template <class C, bool SWIGLU>
__global__ void __launch_bounds__(C::THREADS, C::MIN_BLOCKS)
    grouped_gemm_device_kernel(const __nv_bfloat16* __restrict__ x,
                               const __nv_bfloat16* __restrict__ w,
                               __nv_bfloat16* __restrict__ y, const int32_t* __restrict__ offsets,
                               int num_experts, int n, int k) {
  pdl_begin();  // launch.cuh: before any global memory access
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ TileTable<C::THREADS> tt;
  const int tid = threadIdx.x;
  const int total_mt = tt.build(offsets, num_experts, C::BM);
  const int nb_count = SWIGLU ? (n / 2) / (C::BN / 2) : (n + C::BN - 1) / C::BN;
  const long long total_tiles = (long long)total_mt * nb_count;

  const int warp = tid >> 5, lane = tid & 31;
  // warp -> (wn, wm, wk)
  const int wk = warp % C::WK;
  const int wm = (warp / C::WK) % C::WM;
  const int wn = warp / (C::WK * C::WM);
  const uint32_t smem_base = smem_u32(smem);
  const int ktiles = (k + C::BK - 1) / C::BK;

  for (long long t = blockIdx.x; t < total_tiles; t += gridDim.x) {
    const int nb = int(t % nb_count);
    int e, row0, m_valid;
    tt.locate(int(t / nb_count), num_experts, C::BM, e, row0, m_valid);
    const __nv_bfloat16* we = w + size_t(e) * size_t(n) * size_t(k);
    const __nv_bfloat16* xe = x + size_t(row0) * size_t(k);

    auto load = [&](int kt) {
      const uint32_t ws = smem_base + (kt % C::STAGES) * C::STAGE_ELEMS * 2;
      load_stage<C::BN, C::BM, C::BK, C::THREADS, SWIGLU>(ws, ws + C::BN * C::BK * 2, we, xe, nb,
                                                          n, k, kt * C::BK, m_valid, tid);
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
      if (s < ktiles) load(s);
      cp_async_commit();
    }
    for (int kt = 0; kt < ktiles; ++kt) {
      cp_async_wait<C::STAGES - 2>();
      __syncthreads();
      if (kt + C::STAGES - 1 < ktiles) load(kt + C::STAGES - 1);
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
    store_tile<C::BN, C::BM, C::WK, C::RED_LD, C::THREADS, SWIGLU>(red, y, row0, m_valid, nb, n,
                                                                   tid);
    __syncthreads();  // epilogue reads done before the next tile's loads overwrite smem
  }
}


// ---- Hopper path: wgmma (sm_90a) -------------------------------------------------------------
// Same tiles, loader (cp.async, 128-byte rows XOR-swizzled by row & 7 = the wgmma 128B swizzle
// when a tile starts 1024-byte aligned) and epilogue; the math is wgmma.mma_async with both
// operands K-major in shared memory: A = 64 weight rows per warpgroup (two warpgroups: BN = 128),
// B = the BM tokens (N = BM), fp32 accumulators in registers. One wgmma group (a 64-wide k
// stage) stays in flight while the next is issued, so a stage is refilled only two iterations
// after it was read: loads run STAGES - 2 stages ahead.

__device__ __forceinline__ uint64_t wgmma_desc(uint32_t addr) {
  // start address >> 4, leading byte offset 16 (unused for swizzled K-major), stride byte offset
  // 1024 (8 rows of 128 bytes), swizzle mode 1 = 128B.
  return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t(1) << 16) | (uint64_t(1024 >> 4) << 32) |
         (uint64_t(1) << 62);
}
__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// Keeps the compiler from moving accumulator registers across the asynchronous wgmma.
template <int R>
__device__ __forceinline__ void fence_regs(float (&d)[R]) {
#pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define EEP_GGD_WGMMA 1
#endif

#ifdef EEP_GGD_WGMMA
// wgmma.mma_async m64nNk16, bf16 x bf16 -> f32, A and B K-major in shared memory (descriptors),
// D += A * B (scale-d = 1). Generated (one operand per fp32 accumulator) for the N the tiles use.
template <int N>
__device__ __forceinline__ void wgmma_bf16(float (&d)[N / 2], uint64_t da, uint64_t db);

template <>
__device__ __forceinline__ void wgmma_bf16<128>(float (&d)[64], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
      "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db));
}

template <>
__device__ __forceinline__ void wgmma_bf16<192>(float (&d)[96], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n192k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63,"
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79,"
      "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95"
      "}, %96, %97, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
        "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
        "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
        "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95])
      : "l"(da), "l"(db));
}

template <>
__device__ __forceinline__ void wgmma_bf16<256>(float (&d)[128], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63,"
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79,"
      "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95,"
      "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111,"
      "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
      "}, %128, %129, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
        "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
        "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
        "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
        "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
        "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
        "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
        "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(da), "l"(db));
}

#endif

template <int BM_, int STAGES_, int MIN_BLOCKS_>
struct WgConfig {
  static constexpr int BN = 128, BM = BM_, BK = 64, STAGES = STAGES_, MIN_BLOCKS = MIN_BLOCKS_;
  static constexpr int THREADS = 256;  // two warpgroups, 64 weight rows each
  static constexpr int STAGE_BYTES = (BN + BM) * BK * 2;
  static constexpr int PIPE_BYTES = STAGES * STAGE_BYTES;
  static constexpr int RED_LD = BN + 4;
  static constexpr int RED_BYTES = BM * RED_LD * 4;
  static constexpr int SMEM_BYTES = (PIPE_BYTES > RED_BYTES ? PIPE_BYTES : RED_BYTES) + 1024;
  static_assert(STAGES >= 3 && BM % 16 == 0, "wgmma config");
};

template <class C, bool SWIGLU>
__global__ void __launch_bounds__(C::THREADS, C::MIN_BLOCKS)
    grouped_gemm_wgmma_kernel(const __nv_bfloat16* __restrict__ x,
                              const __nv_bfloat16* __restrict__ w,
                              __nv_bfloat16* __restrict__ y, const int32_t* __restrict__ offsets,
                              int num_experts, int n, int k) {
  pdl_begin();  // launch.cuh: before any global memory access
#ifdef EEP_GGD_WGMMA
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __shared__ TileTable<C::THREADS> tt;
  const int tid = threadIdx.x;
  const int total_mt = tt.build(offsets, num_experts, C::BM);
  const int nb_count = SWIGLU ? (n / 2) / (C::BN / 2) : (n + C::BN - 1) / C::BN;
  const long long total_tiles = (long long)total_mt * nb_count;
  const int warp = tid >> 5, lane = tid & 31;
  const int wg = warp >> 2, wq = warp & 3;
  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t base = (raw + 1023) & ~1023u;  // swizzle pattern anchored at 1024 bytes
  float* red = reinterpret_cast<float*>(smem_raw + (base - raw));
  const int ktiles = (k + C::BK - 1) / C::BK;

  for (long long t = blockIdx.x; t < total_tiles; t += gridDim.x) {
    const int nb = int(t % nb_count);
    int e, row0, m_valid;
    tt.locate(int(t / nb_count), num_experts, C::BM, e, row0, m_valid);
    const __nv_bfloat16* we = w + size_t(e) * size_t(n) * size_t(k);
    const __nv_bfloat16* xe = x + size_t(row0) * size_t(k);
    auto load = [&](int kt) {
      const uint32_t ws = base + (kt % C::STAGES) * C::STAGE_BYTES;
      load_stage<C::BN, C::BM, C::BK, C::THREADS, SWIGLU>(ws, ws + C::BN * C::BK * 2, we, xe, nb,
                                                          n, k, kt * C::BK, m_valid, tid);
    };
    float acc[C::BM / 2];
#pragma unroll
    for (int i = 0; i < C::BM / 2; ++i) acc[i] = 0.0f;
#pragma unroll
    for (int s = 0; s < C::STAGES - 2; ++s) {
      if (s < ktiles) load(s);
      cp_async_commit();
    }
    for (int kt = 0; kt < ktiles; ++kt) {
      cp_async_wait<C::STAGES - 3>();  // this thread's copies of stage kt landed
      fence_proxy_async();             // ... and are visible to the async proxy (wgmma)
      __syncthreads();                 // everyone's; and wgmma kt-2 is done in both warpgroups
      if (kt + C::STAGES - 2 < ktiles) load(kt + C::STAGES - 2);
      cp_async_commit();
      const uint32_t ws = base + (kt % C::STAGES) * C::STAGE_BYTES;
      const uint32_t xs = ws + C::BN * C::BK * 2;
      fence_regs(acc);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < C::BK / 16; ++kk)
        wgmma_bf16<C::BM>(acc, wgmma_desc(ws + wg * 64 * C::BK * 2 + kk * 32),
                          wgmma_desc(xs + kk * 32));
      wgmma_commit();
      wgmma_wait<1>();
      fence_regs(acc);
    }
    wgmma_wait<0>();
    fence_regs(acc);
    cp_async_wait<0>();
    __syncthreads();  // pipeline buffers are free: reuse them for the epilogue
    {
      const int g = lane >> 2, t4 = lane & 3;
      const int col = wg * 64 + wq * 16 + g;  // weight row in the tile
#pragma unroll
      for (int j = 0; j < C::BM / 8; ++j) {
        const int tok = j * 8 + 2 * t4;
        red[tok * C::RED_LD + col] = acc[4 * j + 0];
        red[(tok + 1) * C::RED_LD + col] = acc[4 * j + 1];
        red[tok * C::RED_LD + col + 8] = acc[4 * j + 2];
        red[(tok + 1) * C::RED_LD + col + 8] = acc[4 * j + 3];
      }
    }
    __syncthreads();
    store_tile<C::BN, C::BM, 1, C::RED_LD, C::THREADS, SWIGLU>(red, y, row0, m_valid, nb, n, tid);
    __syncthreads();  // epilogue reads done before the next tile's loads overwrite smem
  }
#else
  __trap();  // built for sm_90a only; the launcher uses it only where that image runs
#endif
}


// ---- Hopper path with TMA and a producer warp (sm_90a) -----------------------------------------
// Warp-specialized and persistent: warpgroup 0 is the producer (one thread issues bulk tensor
// copies, cp.async.bulk.tensor, of the weight tile and the token tile into a STAGES-deep ring,
// completing on a "full" mbarrier per stage), warpgroups 1 and 2 are consumers (64 weight rows
// each, wgmma on the staged tiles; each consumer warp arrives on the stage's "empty" mbarrier
// once the wgmma group that read it has retired). The producer runs ahead across tiles, so the
// next tile's loads overlap a tile's epilogue, which stores straight from registers (adjacent
// columns paired through one shuffle, 4-byte stores). Tokens past the expert's rows are loaded
// too (the next expert's rows, or zeros past max_rows) and only feed outputs never stored.
// SwiGLU: the weight tile interleaves 8 gate rows and the matching 8 up rows per 16 (sixteen
// 8-row boxes per stage), so one thread holds gate and up of the same output and applies
// silu(g) * u in registers. Ping-pong form (TmaConfig PP): each consumer owns every other tile
// (all 128 weight rows) and the two take turns in the MMA through a pair of named barriers, so
// one's register epilogue runs while the other's wgmma keep the tensor cores busy (see
// TmaConfig).
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap* map, int c0, int c1,
                                            uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}
__device__ __forceinline__ void tma_load_3d(uint32_t dst, const CUtensorMap* map, int c0, int c1,
                                            int c2, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(bar)
      : "memory");
}

// Thread-block clusters of two (TmaConfig MC): the CTA's rank in its cluster, a barrier of every
// thread of the cluster, an arrival on the other CTA's copy of a barrier, and a TMA load that
// lands at the same shared-memory offset in every CTA of `mask` and signals each one's barrier
// there.
__device__ __forceinline__ uint32_t cluster_rank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return r;
}
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::
                   : "memory");
}
__device__ __forceinline__ void mbar_arrive_remote(uint32_t bar, uint32_t cta) {
  uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(bar), "r"(cta));
  asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];\n" ::"r"(remote)
               : "memory");
}
__device__ __forceinline__ void tma_load_2d_multicast(uint32_t dst, const CUtensorMap* map, int c0,
                                                      int c1, uint32_t bar, uint16_t mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      ".multicast::cluster [%0], [%1, {%2, %3}], [%4], %5;\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar), "h"(mask)
      : "memory");
}

// PP ("ping-pong"): each consumer warpgroup owns every other tile of the CTA (all 128 weight
// rows: two m64 wgmma per k16 step, BM accumulators per thread, registers moved over from the
// producer warpgroup with setmaxnreg), and the two take turns in the MMA, so that one's
// epilogue overlaps the other's main loop. Otherwise both consumers share each tile (64 weight
// rows each) and the tensor cores idle during the epilogue.
//
// MC ("multicast"): CTAs run in clusters of two that take the two n-blocks 2q and 2q + 1 of the
// same (expert, m-tile): each loads its own weight tile and half of the shared token tile, and
// multicasts that half to both, so the token tile crosses from L2 once for two CTAs (at k = 768
// and BM = 192, 60% of a tile's bytes). A stage is free again only when the consumers of both
// CTAs have released it (each consumer warp arrives on both CTAs' empty barrier), since the
// other CTA's half lands in it too. Status (session 14, run 80, H200): correct (kernels_test, every
// device-offset case with the shape forced) but 1.5-2x slower than the single-CTA ping-pong
// kernel at 256-8192 tokens, cause not yet found; not chosen automatically (docs/cuda.md,
// "One H200").
template <int BM_, int STAGES_, bool PP_ = false, bool MC_ = false>
struct TmaConfig {
  static constexpr int BN = 128, BM = BM_, BK = 64, STAGES = STAGES_;
  static constexpr bool PP = PP_;
  static constexpr bool MC = MC_;
  static constexpr int CLUSTER = MC ? 2 : 1;
  static constexpr int X_PART_BYTES = BM / CLUSTER * BK * 2;  // the token rows a CTA loads
  static constexpr int THREADS = 384;  // producer warpgroup + two consumer warpgroups
  static constexpr int W_BYTES = BN * BK * 2;
  static constexpr int STAGE_BYTES = (BN + BM) * BK * 2;
  static constexpr int SMEM_BYTES = STAGES * STAGE_BYTES + 1024;
  static_assert(BM % 16 == 0 && BM <= 256, "tma config");
  static_assert(!PP || BM <= 192, "ping-pong: BM accumulators per thread (of 232 registers)");
  static_assert(!MC || X_PART_BYTES % 1024 == 0, "multicast half: whole 128B-swizzle atoms");
};

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

__device__ __forceinline__ void named_bar_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_bar_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// tmap_w: [E][n][k] as 3D (k, n, E), box (64, 128 | 8, 1); tmap_x: [max_rows][k] as 2D (k, rows),
// box (64, BM / CLUSTER); both 128B-swizzled. MC: launched in clusters of two, an even number of
// n-blocks, no SwiGLU.
template <class C, bool SWIGLU>
__global__ void __launch_bounds__(C::THREADS, 1)
    grouped_gemm_tma_kernel(const __grid_constant__ CUtensorMap tmap_w,
                            const __grid_constant__ CUtensorMap tmap_x,
                            __nv_bfloat16* __restrict__ y, const int32_t* __restrict__ offsets,
                            int num_experts, int n, int k) {
#ifdef EEP_GGD_WGMMA
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __shared__ TileTable<C::THREADS> tt;
  __shared__ __align__(8) uint64_t full_bar[C::STAGES], empty_bar[C::STAGES];
  const int tid = threadIdx.x;
  const int total_mt = tt.build(offsets, num_experts, C::BM);
  const int nb_count = SWIGLU ? (n / 2) / (C::BN / 2) : (n + C::BN - 1) / C::BN;
  // Units of work: tiles, or with MC pairs of n-blocks of one m-tile, one per cluster.
  const int rank = C::MC ? int(cluster_rank()) : 0;
  const int nb_per_unit = C::CLUSTER;
  const long long units = (long long)total_mt * (nb_count / nb_per_unit);
  const long long unit0 = blockIdx.x / C::CLUSTER, unit_step = gridDim.x / C::CLUSTER;
  auto unit_tile = [&](long long u, int& nb, int& mtg) {
    const int per_mt = nb_count / nb_per_unit;
    nb = int(u % per_mt) * nb_per_unit + rank;
    mtg = int(u / per_mt);
  };
  const int warp = tid >> 5, lane = tid & 31;
  const int wg = warp >> 2;
  const uint32_t base = (smem_u32(smem_raw) + 1023) & ~1023u;
  const int ktiles = (k + C::BK - 1) / C::BK;
  const int inter = n / 2;
  if (tid == 0) {
    for (int s = 0; s < C::STAGES; ++s) {
      mbar_init(smem_u32(&full_bar[s]), 1);
      // One arrival per consumer warp, of each CTA of the cluster.
      mbar_init(smem_u32(&empty_bar[s]), (C::PP ? 4 : 8) * C::CLUSTER);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  // MC: the other CTA's barriers are initialised before anything arrives on them or lands.
  if (C::MC)
    cluster_sync();
  else
    __syncthreads();

  if (wg == 0) {
    // PP: the producer warpgroup gives registers to the consumers (BM accumulators each).
    if (C::PP) asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
    if (tid == 0) {
      int stage = 0;
      uint32_t phase = 0;
      for (long long u = unit0; u < units; u += unit_step) {
        int nb, mtg;
        unit_tile(u, nb, mtg);
        int e, row0, m_valid;
        tt.locate(mtg, num_experts, C::BM, e, row0, m_valid);
        for (int kt = 0; kt < ktiles; ++kt) {
          mbar_wait(smem_u32(&empty_bar[stage]), phase ^ 1);
          const uint32_t fb = smem_u32(&full_bar[stage]);
          mbar_expect_tx(fb, C::STAGE_BYTES);
          const uint32_t ws = base + stage * C::STAGE_BYTES;
          const int k0 = kt * C::BK;
          if (SWIGLU) {
#pragma unroll
            for (int G = 0; G < 8; ++G) {
              tma_load_3d(ws + G * 2048, &tmap_w, k0, nb * 64 + G * 8, e, fb);
              tma_load_3d(ws + G * 2048 + 1024, &tmap_w, k0, inter + nb * 64 + G * 8, e, fb);
            }
          } else {
            tma_load_3d(ws, &tmap_w, k0, nb * C::BN, e, fb);
          }
          if (C::MC)  // this CTA's half of the token rows, into both CTAs' stage
            tma_load_2d_multicast(ws + C::W_BYTES + rank * C::X_PART_BYTES, &tmap_x, k0,
                                  row0 + rank * (C::BM / 2), fb, uint16_t(0x3));
          else
            tma_load_2d(ws + C::W_BYTES, &tmap_x, k0, row0, fb);
          if (++stage == C::STAGES) {
            stage = 0;
            phase ^= 1;
          }
        }
      }
    }
  } else {
    if (C::PP) asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
    const int cw = wg - 1, wq = warp & 3;
    const int g = lane >> 2, t4 = lane & 3;
    constexpr int NACC = C::PP ? 2 : 1;  // m64 accumulator blocks per thread
    // A stage read: free for this CTA's producer and, with MC, the other CTA's (its half of the
    // token rows lands here too).
    auto release = [&](int stage) {
      mbar_arrive(smem_u32(&empty_bar[stage]));
      if (C::MC) mbar_arrive_remote(smem_u32(&empty_bar[stage]), uint32_t(rank ^ 1));
    };
    uint32_t it = 0;  // ring stages consumed so far (by both consumers under PP)
    long long i = 0;
    for (long long u = unit0; u < units; u += unit_step, ++i) {
      if (C::PP && int(i & 1) != cw) {  // the other consumer's tile
        it += ktiles;
        continue;
      }
      int nb, mtg;
      unit_tile(u, nb, mtg);
      int e, row0, m_valid;
      tt.locate(mtg, num_experts, C::BM, e, row0, m_valid);
      float acc[NACC][C::BM / 2];
#pragma unroll
      for (int h = 0; h < NACC; ++h)
#pragma unroll
        for (int q = 0; q < C::BM / 2; ++q) acc[h][q] = 0.0f;
      // PP: a full barrier's parity names its phase only if the phase one lap earlier is known
      // complete: start this tile's waits once the other consumer has seen all of its tile's
      // stages full (which also takes turns in the MMA: its epilogue overlaps ours).
      if (C::PP && i > 0) named_bar_sync(3 + cw, 256);
      int prev = -1;
      for (int kt = 0; kt < ktiles; ++kt, ++it) {
        const int stage = int(it % C::STAGES);
        const uint32_t phase = (it / C::STAGES) & 1;
        mbar_wait(smem_u32(&full_bar[stage]), phase);
        if (C::PP && kt == ktiles - 1 && u + unit_step < units)
          named_bar_arrive(4 - cw, 256);  // the next tile's consumer may wait now
        const uint32_t ws = base + stage * C::STAGE_BYTES;
        const uint32_t xs = ws + C::W_BYTES;
#pragma unroll
        for (int h = 0; h < NACC; ++h) fence_regs(acc[h]);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < C::BK / 16; ++kk)
#pragma unroll
          for (int h = 0; h < NACC; ++h)
            wgmma_bf16<C::BM>(acc[h],
                              wgmma_desc(ws + (C::PP ? h : cw) * 64 * C::BK * 2 + kk * 32),
                              wgmma_desc(xs + kk * 32));
        wgmma_commit();
        wgmma_wait<1>();
#pragma unroll
        for (int h = 0; h < NACC; ++h) fence_regs(acc[h]);
        if (prev >= 0) {
          __syncwarp();
          if (lane == 0) release(prev);
        }
        prev = stage;
      }
      wgmma_wait<0>();
#pragma unroll
      for (int h = 0; h < NACC; ++h) fence_regs(acc[h]);
      __syncwarp();
      if (lane == 0) release(prev);

      {
        // Epilogue from registers: row g / g + 8 of this warp's 16 weight rows, tokens 8j + 2t4
        // (+1). Lanes g and g ^ 1 swap one value so that each stores two adjacent columns.
        const bool odd = g & 1;
#pragma unroll
        for (int h = 0; h < NACC; ++h) {
          const int half = C::PP ? h : cw;  // which 64 weight rows of the tile
#pragma unroll
          for (int j = 0; j < C::BM / 8; ++j) {
            const int ta = j * 8 + 2 * t4;
            const int tok = odd ? ta + 1 : ta;
            if (SWIGLU) {
              const float a0 = silu_mul_bf16(acc[h][4 * j + 0], acc[h][4 * j + 2]);  // token ta
              const float a1 = silu_mul_bf16(acc[h][4 * j + 1], acc[h][4 * j + 3]);  // ta + 1
              const float r = __shfl_xor_sync(0xffffffffu, odd ? a0 : a1, 4);
              const int col = nb * 64 + (half * 4 + wq) * 8 + (g & ~1);
              if (tok < m_valid)
                *reinterpret_cast<uint32_t*>(y + size_t(row0 + tok) * inter + col) =
                    odd ? pack_bf16x2(r, a1) : pack_bf16x2(a0, r);
            } else {
              const int col = nb * C::BN + half * 64 + wq * 16 + (g & ~1);
#pragma unroll
              for (int hh = 0; hh < 2; ++hh) {  // rows g, g + 8
                const float v0 = acc[h][4 * j + 2 * hh], v1 = acc[h][4 * j + 2 * hh + 1];
                const float r = __shfl_xor_sync(0xffffffffu, odd ? v0 : v1, 4);
                if (tok < m_valid && col + 8 * hh < n)
                  *reinterpret_cast<uint32_t*>(y + size_t(row0 + tok) * n + col + 8 * hh) =
                      odd ? pack_bf16x2(r, v1) : pack_bf16x2(v0, r);
              }
            }
          }
        }
      }
    }
  }
  // MC: neither CTA leaves while the other may still multicast into it or arrive on its
  // barriers.
  if (C::MC) {
    __syncwarp();
    cluster_sync();
  }
#else
  __trap();  // built for sm_90a only; the launcher uses it only where that image runs
#endif
}

}  // namespace eep::kernels::detail::ggd
