// Internal: the one dot product of the CPU ops. Fixed summation order: element i is added to
// partial sum i % 8, the 8 partial sums are reduced in one fixed tree. The order depends only on
// the length, never on how many rows a call holds, which is what makes the ops batch-invariant.
#pragma once

#include <cstring>

// Keep a*b+c as two roundings everywhere (no FMA contraction on targets that have FMA), so the
// single-row and multi-row kernels below round identically whatever the compiler decides.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace eep::ops::detail {

// 8 fp32 lanes held as two 4-lane vectors (lanes 0-3, 4-7): native SSE on plain x86-64 and NEON
// on arm64, with no ABI questions. Element-wise vector arithmetic is exactly lane-by-lane IEEE
// arithmetic, so this is the same order as 8 scalar partial sums.
typedef float F4 __attribute__((vector_size(16)));

struct Acc8 {
  F4 lo = {0, 0, 0, 0};
  F4 hi = {0, 0, 0, 0};
};

inline F4 load4(const float* p) {
  F4 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// Adds the tail (n % 8 elements, from index i) into lanes 0.. and reduces the lanes in a fixed
// tree.
inline float finish_dot(const Acc8& acc, const float* a, const float* b, int i, int n) {
  float lanes[8];
  std::memcpy(lanes, &acc.lo, sizeof(acc.lo));
  std::memcpy(lanes + 4, &acc.hi, sizeof(acc.hi));
  for (int j = 0; i < n; ++i, ++j) lanes[j] += a[i] * b[i];
  return ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) +
         ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
}

inline float dot(const float* a, const float* b, int n) {
  Acc8 acc;
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    acc.lo += load4(a + i) * load4(b + i);
    acc.hi += load4(a + i + 4) * load4(b + i + 4);
  }
  return finish_dot(acc, a, b, i, n);
}

// Four rows of x against one row of w: each result is bit-identical to dot(x_r, w, n), but w is
// read once for the four rows and the eight accumulators (written out so that they stay in
// registers) hide the add latency.
inline void dot4(const float* x0, const float* x1, const float* x2, const float* x3,
                 const float* w, int n, float* out) {
  Acc8 a0, a1, a2, a3;
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const F4 wlo = load4(w + i), whi = load4(w + i + 4);
    a0.lo += load4(x0 + i) * wlo;
    a0.hi += load4(x0 + i + 4) * whi;
    a1.lo += load4(x1 + i) * wlo;
    a1.hi += load4(x1 + i + 4) * whi;
    a2.lo += load4(x2 + i) * wlo;
    a2.hi += load4(x2 + i + 4) * whi;
    a3.lo += load4(x3 + i) * wlo;
    a3.hi += load4(x3 + i + 4) * whi;
  }
  out[0] = finish_dot(a0, x0, w, i, n);
  out[1] = finish_dot(a1, x1, w, i, n);
  out[2] = finish_dot(a2, x2, w, i, n);
  out[3] = finish_dot(a3, x3, w, i, n);
}

// One row of x against four rows of w (w0..w3): bit-identical to four dot() calls; x is read
// once and the eight independent accumulators hide the add latency when a call has one row.
inline void dot1x4(const float* x, const float* w0, const float* w1, const float* w2,
                   const float* w3, int n, float* out) {
  Acc8 a0, a1, a2, a3;
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const F4 xlo = load4(x + i), xhi = load4(x + i + 4);
    a0.lo += xlo * load4(w0 + i);
    a0.hi += xhi * load4(w0 + i + 4);
    a1.lo += xlo * load4(w1 + i);
    a1.hi += xhi * load4(w1 + i + 4);
    a2.lo += xlo * load4(w2 + i);
    a2.hi += xhi * load4(w2 + i + 4);
    a3.lo += xlo * load4(w3 + i);
    a3.hi += xhi * load4(w3 + i + 4);
  }
  out[0] = finish_dot(a0, x, w0, i, n);
  out[1] = finish_dot(a1, x, w1, i, n);
  out[2] = finish_dot(a2, x, w2, i, n);
  out[3] = finish_dot(a3, x, w3, i, n);
}

}  // namespace eep::ops::detail
