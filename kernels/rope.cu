#include <cmath>

#include "check.cuh"
#include "rope.cuh"

namespace eep::kernels {

void rope(bf16* x, const int32_t* positions, int rows, int num_heads, int head_dim, float theta,
          cudaStream_t stream) {
  EEP_REQUIRE(rows >= 0 && num_heads > 0 && head_dim > 0 && head_dim % 2 == 0,
              "rope: rows >= 0, num_heads > 0, head_dim even and > 0");
  EEP_REQUIRE(theta > 0.0f, "rope: theta > 0");
  if (rows == 0) return;
  const long long threads = (long long)rows * (head_dim / 2);
  detail::rope_kernel<<<detail::ceil_div(threads, 256), 256, 0, stream>>>(
      x, positions, rows, num_heads, head_dim, std::log(double(theta)));
  EEP_LAUNCH_CHECK();
}

}  // namespace eep::kernels
