// Residual stream, embedding, conversions, KV-cache writes and greedy argmax: the small glue
// kernels of one forward pass. All are memory-bound. The norms' thread blocks handle whole rows
// so their reductions stay in one block; the argmax splits a row over blocks and merges their
// keys in a second launch. No atomics: results do not depend on timing.

#include "check.cuh"
#include "combine.cuh"
#include "common.cuh"
#include "launch.cuh"

namespace eep::kernels {

namespace detail {

constexpr int kRowThreads = 256;

__device__ __forceinline__ float block_sum(float v, float* shared) {
  v = warp_sum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  const int warps = blockDim.x / 32;
  v = lane < warps ? shared[lane] : 0.0f;
  v = warp_sum(v);
  __syncthreads();  // shared is reused by the caller's next reduction
  return v;
}

__global__ void embedding_gather_kernel(const bf16* table, const int32_t* ids, int dim, int vocab,
                                        float* out) {
  pdl_begin();  // launch.cuh: before any global memory access
  const int r = blockIdx.x;
  const int id = ids[r];
  float* o = out + size_t(r) * dim;
  if (id < 0 || id >= vocab) {
    for (int c = threadIdx.x; c < dim; c += blockDim.x) o[c] = 0.0f;
    return;
  }
  const bf16* t = table + size_t(id) * dim;
  for (int c = threadIdx.x; c < dim; c += blockDim.x) o[c] = __bfloat162float(t[c]);
}

__global__ void add_rmsnorm_kernel(float* residual, const bf16* delta, const bf16* w, bf16* out,
                                   float* out_f32, int dim, float eps) {
  pdl_begin();  // launch.cuh: before any global memory access
  __shared__ float shared[32];
  const int r = blockIdx.x;
  float* x = residual + size_t(r) * dim;
  const bf16* d = delta ? delta + size_t(r) * dim : nullptr;
  float ss = 0.0f;
  for (int c = threadIdx.x; c < dim; c += blockDim.x) {
    float v = x[c];
    if (d) {
      v += __bfloat162float(d[c]);
      x[c] = v;
    }
    ss += v * v;
  }
  const float inv = rsqrtf(block_sum(ss, shared) / float(dim) + eps);
  bf16* o = out + size_t(r) * dim;
  float* of = out_f32 ? out_f32 + size_t(r) * dim : nullptr;
  for (int c = threadIdx.x; c < dim; c += blockDim.x) {
    const float v = __bfloat162float(w[c]) * (x[c] * inv);
    o[c] = __float2bfloat16(v);
    if (of) of[c] = v;
  }
}

// add_rmsnorm with 8 columns per thread and one thread per 8 columns of the row (dim % 8 == 0,
// dim / 8 <= 1024): the row's x, delta and w are each read once in 16- or 32-byte pieces and x
// stays in registers between the sum of squares and the output, instead of a 256-thread block
// walking the row twice.
__global__ void add_rmsnorm_vec8_kernel(float* residual, const bf16* delta,
                                        const MoeCombine comb,
                                        const bf16* w, bf16* out, float* out_f32, int dim,
                                        float eps) {
  pdl_begin();  // launch.cuh: before any global memory access
  __shared__ float shared[32];
  const int r = blockIdx.x;
  const int c = threadIdx.x * 8;
  const bool active = c < dim;
  float v[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  float ss = 0.0f;
  float* x = residual + size_t(r) * dim + c;
  if (active) {
    const float4 x0 = reinterpret_cast<const float4*>(x)[0];
    const float4 x1 = reinterpret_cast<const float4*>(x)[1];
    v[0] = x0.x, v[1] = x0.y, v[2] = x0.z, v[3] = x0.w;
    v[4] = x1.x, v[5] = x1.y, v[6] = x1.z, v[7] = x1.w;
    if (delta || comb.y) {
      // The delta as stored bf16, or the MoE combine computed here (the same bits).
      const uint4 raw =
          comb.y ? combine8(comb.y, comb.slot_rows + size_t(r) * comb.k,
                            comb.weights + size_t(r) * comb.k, comb.k, dim, c)
                 : *reinterpret_cast<const uint4*>(delta + size_t(r) * dim + c);
      const __nv_bfloat162* d2 = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 f = __bfloat1622float2(d2[e]);
        v[2 * e] += f.x;
        v[2 * e + 1] += f.y;
      }
      reinterpret_cast<float4*>(x)[0] = make_float4(v[0], v[1], v[2], v[3]);
      reinterpret_cast<float4*>(x)[1] = make_float4(v[4], v[5], v[6], v[7]);
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) ss += v[e] * v[e];
  }
  const float inv = rsqrtf(block_sum(ss, shared) / float(dim) + eps);
  if (!active) return;
  const uint4 wraw = *reinterpret_cast<const uint4*>(w + c);
  const __nv_bfloat162* w2 = reinterpret_cast<const __nv_bfloat162*>(&wraw);
  float o[8];
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const float2 wf = __bfloat1622float2(w2[e]);
    o[2 * e] = wf.x * (v[2 * e] * inv);
    o[2 * e + 1] = wf.y * (v[2 * e + 1] * inv);
  }
  uint4 packed;
  __nv_bfloat162* p2 = reinterpret_cast<__nv_bfloat162*>(&packed);
#pragma unroll
  for (int e = 0; e < 4; ++e) p2[e] = __floats2bfloat162_rn(o[2 * e], o[2 * e + 1]);
  *reinterpret_cast<uint4*>(out + size_t(r) * dim + c) = packed;
  if (out_f32) {
    float* of = out_f32 + size_t(r) * dim + c;
    reinterpret_cast<float4*>(of)[0] = make_float4(o[0], o[1], o[2], o[3]);
    reinterpret_cast<float4*>(of)[1] = make_float4(o[4], o[5], o[6], o[7]);
  }
}

template <typename T>
__global__ void gather_rows_kernel(const T* src, const int32_t* idx, int dim, T* dst) {
  pdl_begin();  // launch.cuh: before any global memory access
  const int r = blockIdx.x;
  const T* s = src + size_t(idx[r]) * dim;
  T* d = dst + size_t(r) * dim;
  for (int c = threadIdx.x; c < dim; c += blockDim.x) d[c] = s[c];
}

__global__ void f32_to_bf16_kernel(const float* in, bf16* out, int64_t n) {
  pdl_begin();  // launch.cuh: before any global memory access
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16(in[i]);
}

__global__ void bf16_to_f32_kernel(const bf16* in, float* out, int64_t n) {
  pdl_begin();  // launch.cuh: before any global memory access
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = __bfloat162float(in[i]);
}

__global__ void kv_write_kernel(const bf16* k, const bf16* v, const int32_t* slots, int kv_dim,
                                bf16* k_cache, bf16* v_cache) {
  pdl_begin();  // launch.cuh: before any global memory access
  const int r = blockIdx.x;
  const size_t dst = size_t(slots[r]) * kv_dim;
  const size_t src = size_t(r) * kv_dim;
  for (int c = threadIdx.x; c < kv_dim; c += blockDim.x) {
    k_cache[dst + c] = k[src + c];
    v_cache[dst + c] = v[src + c];
  }
}

// Greedy argmax in two launches. A row's logits are read by many blocks (one block reading a
// 151936-logit row took 57 us at batch 1, kernel trace of device run 65); each block keeps its
// best as one 64-bit key and a warp per row takes the largest key. The key orders by value, then
// by lower id, so the maximum of keys is the host sampler's rule in any reduction order: NaN
// counts as -inf, -0 as +0, ties go to the lower id.
constexpr int kArgmaxThreads = 256;
constexpr int kArgmaxPerThread = 16;
constexpr int kArgmaxChunk = kArgmaxThreads * kArgmaxPerThread;

__device__ __forceinline__ unsigned long long argmax_key(float v, int id) {
  if (v != v) v = -INFINITY;    // NaN never wins (sampling.cc's clean())
  if (v == 0.0f) v = 0.0f;      // -0 ties with +0
  const unsigned u = __float_as_uint(v);
  const unsigned ordered = (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // monotone in v
  return (static_cast<unsigned long long>(ordered) << 32) | (0xFFFFFFFFu - unsigned(id));
}

__device__ __forceinline__ unsigned long long warp_max_u64(unsigned long long v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const unsigned long long other = __shfl_xor_sync(kFullMask, v, o);
    v = other > v ? other : v;
  }
  return v;
}

// Block b covers row b / chunks, logits [chunk * kArgmaxChunk, + kArgmaxChunk): every thread's
// loads are issued before any comparison.
__global__ void __launch_bounds__(kArgmaxThreads)
    argmax_partial_kernel(const float* __restrict__ logits, int vocab, int chunks,
                          unsigned long long* __restrict__ keys) {
  pdl_begin();  // launch.cuh: before any global memory access
  __shared__ unsigned long long warp_best[kArgmaxThreads / 32];
  const int r = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
  const float* x = logits + size_t(r) * vocab;
  const int first = chunk * kArgmaxChunk + threadIdx.x;
  float v[kArgmaxPerThread];
#pragma unroll
  for (int i = 0; i < kArgmaxPerThread; ++i) {
    const int c = first + i * kArgmaxThreads;
    v[i] = c < vocab ? x[c] : -INFINITY;
  }
  unsigned long long best = 0;  // below every key (a key's value half is never 0)
#pragma unroll
  for (int i = 0; i < kArgmaxPerThread; ++i) {
    const int c = first + i * kArgmaxThreads;
    if (c < vocab) {
      const unsigned long long key = argmax_key(v[i], c);
      best = key > best ? key : best;
    }
  }
  best = warp_max_u64(best);
  if (threadIdx.x % 32 == 0) warp_best[threadIdx.x / 32] = best;
  __syncthreads();
  if (threadIdx.x < 32) {
    best = threadIdx.x < kArgmaxThreads / 32 ? warp_best[threadIdx.x] : 0;
    best = warp_max_u64(best);
    if (threadIdx.x == 0) keys[blockIdx.x] = best;
  }
}

// One warp per row: the largest of the row's chunk keys, back to an id.
__global__ void argmax_finish_kernel(const unsigned long long* __restrict__ keys, int chunks,
                                     int32_t* __restrict__ ids) {
  pdl_begin();  // launch.cuh: before any global memory access
  const int r = blockIdx.x;
  unsigned long long best = 0;
  for (int c = threadIdx.x; c < chunks; c += 32) {
    const unsigned long long key = keys[size_t(r) * chunks + c];
    best = key > best ? key : best;
  }
  best = warp_max_u64(best);
  if (threadIdx.x == 0) ids[r] = best ? int32_t(0xFFFFFFFFu - unsigned(best & 0xFFFFFFFFu)) : 0;
}

int elementwise_blocks(int64_t n) {
  const int64_t b = (n + kRowThreads - 1) / kRowThreads;
  return int(b < 4096 ? (b > 0 ? b : 1) : 4096);
}

}  // namespace detail

void embedding_gather(const bf16* table, const int32_t* ids, int rows, int dim, int vocab,
                      float* out, cudaStream_t stream) {
  EEP_REQUIRE(rows >= 0 && dim > 0 && vocab > 0, "embedding_gather: rows >= 0, dim, vocab > 0");
  if (rows == 0) return;
  detail::launch_kernel(detail::embedding_gather_kernel, rows, detail::kRowThreads, 0, stream,
                        table, ids, dim, vocab, out);
}

void add_rmsnorm(float* residual, const bf16* delta, const bf16* w, bf16* out, int rows, int dim,
                 float eps, cudaStream_t stream) {
  add_rmsnorm(residual, delta, w, out, nullptr, rows, dim, eps, stream);
}

void add_rmsnorm(float* residual, const bf16* delta, const bf16* w, bf16* out, float* out_f32,
                 int rows, int dim, float eps, cudaStream_t stream) {
  EEP_REQUIRE(rows >= 0 && dim > 0, "add_rmsnorm: rows >= 0 and dim > 0");
  if (rows == 0) return;
  if (dim % 8 == 0 && dim / 8 <= 1024) {
    const int threads = (dim / 8 + 31) / 32 * 32;
    detail::launch_kernel(detail::add_rmsnorm_vec8_kernel, rows, threads, 0, stream, residual,
                          delta, MoeCombine{}, w, out, out_f32, dim, eps);
  } else {
    detail::launch_kernel(detail::add_rmsnorm_kernel, rows, detail::kRowThreads, 0, stream,
                          residual, delta, w, out, out_f32, dim, eps);
  }
}

bool add_combine_rmsnorm_supported(int dim) { return dim > 0 && dim % 8 == 0 && dim / 8 <= 1024; }

void add_combine_rmsnorm(float* residual, const MoeCombine& combine, const bf16* w, bf16* out,
                         float* out_f32, int rows, int dim, float eps, cudaStream_t stream) {
  EEP_REQUIRE(rows >= 0 && add_combine_rmsnorm_supported(dim),
              "add_combine_rmsnorm: rows >= 0, dim % 8 == 0 and dim <= 8192");
  EEP_REQUIRE(combine.y && combine.slot_rows && combine.weights && combine.k > 0,
              "add_combine_rmsnorm: y, slot_rows, weights and k > 0");
  if (rows == 0) return;
  const int threads = (dim / 8 + 31) / 32 * 32;
  detail::launch_kernel(detail::add_rmsnorm_vec8_kernel, rows, threads, 0, stream, residual,
                        static_cast<const bf16*>(nullptr), combine, w, out, out_f32, dim, eps);
}

void gather_rows(const bf16* src, const int32_t* idx, int rows, int dim, bf16* dst,
                 cudaStream_t stream) {
  EEP_REQUIRE(rows >= 0 && dim > 0, "gather_rows: rows >= 0 and dim > 0");
  if (rows == 0) return;
  detail::launch_kernel(detail::gather_rows_kernel<bf16>, rows, detail::kRowThreads, 0, stream, src,
                        idx, dim, dst);
}

void gather_rows_f32(const float* src, const int32_t* idx, int rows, int dim, float* dst,
                     cudaStream_t stream) {
  EEP_REQUIRE(rows >= 0 && dim > 0, "gather_rows_f32: rows >= 0 and dim > 0");
  if (rows == 0) return;
  detail::launch_kernel(detail::gather_rows_kernel<float>, rows, detail::kRowThreads, 0, stream,
                        src, idx, dim, dst);
}

void f32_to_bf16(const float* in, bf16* out, int64_t n, cudaStream_t stream) {
  EEP_REQUIRE(n >= 0, "f32_to_bf16: n >= 0");
  if (n == 0) return;
  detail::launch_kernel(detail::f32_to_bf16_kernel, detail::elementwise_blocks(n),
                        detail::kRowThreads, 0, stream, in, out, n);
}

void bf16_to_f32(const bf16* in, float* out, int64_t n, cudaStream_t stream) {
  EEP_REQUIRE(n >= 0, "bf16_to_f32: n >= 0");
  if (n == 0) return;
  detail::launch_kernel(detail::bf16_to_f32_kernel, detail::elementwise_blocks(n),
                        detail::kRowThreads, 0, stream, in, out, n);
}

void kv_write(const bf16* k, const bf16* v, const int32_t* slots, int rows, int kv_dim,
              bf16* k_cache, bf16* v_cache, cudaStream_t stream) {
  EEP_REQUIRE(rows >= 0 && kv_dim > 0, "kv_write: rows >= 0 and kv_dim > 0");
  if (rows == 0) return;
  detail::launch_kernel(detail::kv_write_kernel, rows, 128, 0, stream, k, v, slots, kv_dim, k_cache,
                        v_cache);
}

size_t argmax_rows_workspace_bytes(int rows, int vocab) {
  if (rows <= 0 || vocab <= 0) return 0;
  const size_t chunks = (size_t(vocab) + detail::kArgmaxChunk - 1) / detail::kArgmaxChunk;
  return size_t(rows) * chunks * sizeof(unsigned long long);
}

void argmax_rows(const float* logits, int rows, int vocab, int32_t* ids, void* workspace,
                 size_t workspace_bytes, cudaStream_t stream) {
  EEP_REQUIRE(rows >= 0 && vocab > 0, "argmax_rows: rows >= 0 and vocab > 0");
  if (rows == 0) return;
  EEP_REQUIRE(workspace && workspace_bytes >= argmax_rows_workspace_bytes(rows, vocab),
              "argmax_rows: workspace smaller than argmax_rows_workspace_bytes(rows, vocab)");
  const int chunks = (vocab + detail::kArgmaxChunk - 1) / detail::kArgmaxChunk;
  EEP_REQUIRE(int64_t(rows) * chunks <= 0x7FFFFFFF, "argmax_rows: rows * chunks over the grid limit");
  auto* keys = static_cast<unsigned long long*>(workspace);
  detail::launch_kernel(detail::argmax_partial_kernel, rows * chunks, detail::kArgmaxThreads, 0,
                        stream, logits, vocab, chunks, keys);
  detail::launch_kernel(detail::argmax_finish_kernel, rows, 32, 0, stream,
                        static_cast<const unsigned long long*>(keys), chunks, ids);
}

}  // namespace eep::kernels
