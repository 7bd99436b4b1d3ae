// matmul_nt and the element-wise SwiGLU activation.
#include <cmath>

#include "eep/ops.h"
#include "ops/dot.h"

namespace eep::ops {

void matmul_nt(const float* x, const float* w, float* y, int rows, int in, int out) {
  // Blocks of 4 rows share each weight row while it is in L1; every y[r][o] is still the one
  // fixed-order dot product of x[r] and w[o] (see dot.h), so blocking cannot change a result.
  constexpr int kRowBlock = 4;
  int r = 0;
  for (; r + kRowBlock <= rows; r += kRowBlock) {
    const float* x0 = x + size_t(r) * in;
    float* y0 = y + size_t(r) * out;
    for (int o = 0; o < out; ++o) {
      float res[kRowBlock];
      detail::dot4(x0, x0 + in, x0 + 2 * size_t(in), x0 + 3 * size_t(in), w + size_t(o) * in, in,
                   res);
      for (int b = 0; b < kRowBlock; ++b) y0[size_t(b) * out + o] = res[b];
    }
  }
  for (; r < rows; ++r) {
    const float* xr = x + size_t(r) * in;
    float* yr = y + size_t(r) * out;
    int o = 0;
    for (; o + 4 <= out; o += 4) {
      const float* w0 = w + size_t(o) * in;
      detail::dot1x4(xr, w0, w0 + in, w0 + 2 * size_t(in), w0 + 3 * size_t(in), in, yr + o);
    }
    for (; o < out; ++o) yr[o] = detail::dot(xr, w + size_t(o) * in, in);
  }
}

void silu_mul(const float* g, const float* u, float* y, int n) {
  for (int i = 0; i < n; ++i) y[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

}  // namespace eep::ops
