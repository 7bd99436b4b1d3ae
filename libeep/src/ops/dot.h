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

// R rows of x against one row of w: each result is bit-identical to dot(x_r, w, n), but w is read
// once for all R rows.
template <int R>
inline void dot_rows(const float* const* x, const float* w, int n, float* out) {
  Acc8 acc[R];
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    F4 wlo = load4(w + i), whi = load4(w + i + 4);
    for (int r = 0; r < R; ++r) {
      acc[r].lo += load4(x[r] + i) * wlo;
      acc[r].hi += load4(x[r] + i + 4) * whi;
    }
  }
  for (int r = 0; r < R; ++r) out[r] = finish_dot(acc[r], x[r], w, i, n);
}

}  // namespace eep::ops::detail
