// Token sampling on the device, the same function of (logits, params, position) as the host
// sampler eep::sample_token (libeep/src/sched/sampling.cc), step for step and in double:
//   1. sample_keys_kernel: scaled = clean(logit) / temperature (NaN -> -inf), turned into a
//      64-bit key whose ascending order is descending scaled value; a stable segmented radix sort
//      (cub) of (key, id) per row then gives the host's candidate order (value descending, lower
//      id first on ties).
//   2. sample_pick_kernel, one block per row: greedy rows take the arg-max (lowest id on ties);
//      otherwise the block computes the kept candidates' weights exp(scaled - max) in parallel,
//      and one thread sums them, applies top-p and walks the inverse CDF in sorted order, one
//      addition at a time in the host's order, so every partial sum rounds as on the host.
// The only difference left is exp(): CUDA's double exp and the host's libm may differ in the
// last bit for some arguments, which changes a draw only when u falls within ~1e-16 of a
// boundary between two candidates.
#pragma once

#include <cmath>
#include <cstdint>

#include "common.cuh"
#include "eep_kernels.h"

namespace eep::kernels::detail {

constexpr int kSampleThreads = 256;

// NaN logits never win; they count as -inf (the host's clean()).
__device__ __forceinline__ double clean_logit(float x) {
  return isnan(x) ? -INFINITY : static_cast<double>(x);
}

__device__ __forceinline__ uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Counter-based uniform in [0, 1): the host's uniform(seed, position).
__device__ __forceinline__ double uniform01(uint64_t seed, int64_t position) {
  const uint64_t bits = splitmix64(seed ^ splitmix64(static_cast<uint64_t>(position)));
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

// Ascending key order = descending value. -0 and +0 compare equal on the host, so they share a
// key (the stable sort then orders them by id, as the host's tie-break does).
__device__ __forceinline__ uint64_t descending_key(double v) {
  if (v == 0.0) v = 0.0;
  const uint64_t b = static_cast<uint64_t>(__double_as_longlong(v));
  const uint64_t ordered = (b >> 63) ? ~b : (b | 0x8000000000000000ULL);
  return ~ordered;
}

__global__ void sample_keys_kernel(const float* __restrict__ logits,
                                   const SamplingRow* __restrict__ params, int rows, int vocab,
                                   uint64_t* __restrict__ keys, int32_t* __restrict__ ids,
                                   int* __restrict__ offsets) {
  const int r = blockIdx.y;
  const double t = params[r].temperature;
  const size_t base = size_t(r) * vocab;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < vocab; i += gridDim.x * blockDim.x) {
    keys[base + i] = t > 0 ? descending_key(clean_logit(logits[base + i]) / t) : 0;  // greedy: unused
    ids[base + i] = i;
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    offsets[r] = r * vocab;
    if (r == rows - 1) offsets[rows] = rows * vocab;
  }
}

__global__ void __launch_bounds__(kSampleThreads)
    sample_pick_kernel(const float* __restrict__ logits, const SamplingRow* __restrict__ params,
                       int vocab, const int32_t* __restrict__ sorted_ids,
                       double* __restrict__ weights, int32_t* __restrict__ out) {
  const int r = blockIdx.x;
  const int tid = threadIdx.x;
  const SamplingRow p = params[r];
  const float* x = logits + size_t(r) * vocab;

  if (p.temperature == 0) {  // greedy: arg-max, lowest id on ties
    __shared__ double s_v[kSampleThreads / 32];
    __shared__ int s_i[kSampleThreads / 32];
    double bv = -INFINITY;
    int bi = vocab;
    for (int c = tid; c < vocab; c += blockDim.x) {
      const double v = clean_logit(x[c]);
      if (v > bv || (v == bv && c < bi)) {
        bv = v;
        bi = c;
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      const double ov = __shfl_xor_sync(kFullMask, bv, o);
      const int oi = __shfl_xor_sync(kFullMask, bi, o);
      if (ov > bv || (ov == bv && oi < bi)) {
        bv = ov;
        bi = oi;
      }
    }
    if ((tid & 31) == 0) {
      s_v[tid >> 5] = bv;
      s_i[tid >> 5] = bi;
    }
    __syncthreads();
    if (tid == 0) {
      for (int w = 1; w < kSampleThreads / 32; ++w)
        if (s_v[w] > bv || (s_v[w] == bv && s_i[w] < bi)) {
          bv = s_v[w];
          bi = s_i[w];
        }
      out[r] = bi < vocab ? bi : 0;
    }
    return;
  }

  const int32_t* order = sorted_ids + size_t(r) * vocab;
  double* w = weights + size_t(r) * vocab;
  const int kept = (p.top_k > 0 && p.top_k < vocab) ? p.top_k : vocab;
  const double max_v = clean_logit(x[order[0]]) / p.temperature;
  if (max_v == -INFINITY) {  // all -inf: the first candidate, as greedy would pick
    if (tid == 0) out[r] = order[0];
    return;
  }
  const bool inf_max = isinf(max_v);  // +inf tokens share the mass equally
  for (int i = tid; i < kept; i += blockDim.x) {
    const double v = clean_logit(x[order[i]]) / p.temperature;
    w[i] = inf_max ? (v == max_v ? 1.0 : 0.0) : exp(v - max_v);
  }
  __syncthreads();
  if (tid != 0) return;

  // From here on, the host's loops in its order: every partial sum rounds the same way.
  double total = 0;
  for (int i = 0; i < kept; ++i) total += w[i];
  int num_kept = kept;
  if (p.top_p < 1) {
    const double target = p.top_p * total;
    double cum = 0;
    int n = 0;
    while (n < num_kept) {
      cum += w[n++];
      if (cum >= target) break;
    }
    num_kept = n;
    total = cum;
  }
  const double u = uniform01(p.seed, p.position) * total;
  double cum = 0;
  for (int i = 0; i < num_kept; ++i) {
    cum += w[i];
    if (u < cum) {
      out[r] = order[i];
      return;
    }
  }
  for (int i = num_kept - 1; i > 0; --i) {
    if (w[i] > 0) {
      out[r] = order[i];
      return;
    }
  }
  out[r] = order[0];
}

}  // namespace eep::kernels::detail
