#include <algorithm>

#include "check.cuh"
#include "silu_mul.cuh"
#include "launch.cuh"

namespace eep::kernels {

namespace {
int grid_for(long long n) { return int(std::min<long long>((n + 255) / 256, 132LL * 16)); }
}  // namespace

void silu_mul(const bf16* g, const bf16* u, bf16* y, int64_t n, cudaStream_t stream) {
  EEP_REQUIRE(n >= 0, "silu_mul: n >= 0");
  if (n == 0) return;
  detail::silu_mul_kernel<<<grid_for(n), 256, 0, stream>>>(g, u, y, n);
  EEP_LAUNCH_CHECK();
}

void silu_mul_fused(const bf16* gu, bf16* y, int rows, int inter, cudaStream_t stream) {
  EEP_REQUIRE(rows >= 0 && inter > 0, "silu_mul_fused: rows >= 0 and inter > 0");
  if (rows == 0) return;
  detail::launch_kernel(detail::silu_mul_fused_kernel, grid_for((long long)rows * inter), 256, 0,
                        stream, gu, y, rows, inter);
}

}  // namespace eep::kernels
