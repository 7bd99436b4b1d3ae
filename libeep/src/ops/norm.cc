// RMSNorm, as Hugging Face's Qwen3RMSNorm computes it in fp32: w * (x * rsqrt(mean(x^2) + eps)).
#include <cmath>

#include "eep/ops.h"
#include "ops/dot.h"

namespace eep::ops {

void rmsnorm(const float* x, const float* w, float* out, int rows, int dim, float eps) {
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + size_t(r) * dim;
    float* outr = out + size_t(r) * dim;
    float ss = detail::dot(xr, xr, dim);
    float inv = 1.0f / std::sqrt(ss / float(dim) + eps);
    for (int i = 0; i < dim; ++i) outr[i] = w[i] * (xr[i] * inv);
  }
}

}  // namespace eep::ops
