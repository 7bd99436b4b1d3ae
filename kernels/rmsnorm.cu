#include "check.cuh"
#include "rmsnorm.cuh"

namespace eep::kernels {

void rmsnorm(const bf16* x, const bf16* w, bf16* out, int rows, int dim, float eps,
             cudaStream_t stream) {
  EEP_REQUIRE(rows >= 0 && dim > 0, "rmsnorm: rows >= 0 and dim > 0");
  if (rows == 0) return;
  const int blocks = detail::ceil_div(rows, detail::kRmsnormWarps);
  detail::rmsnorm_kernel<<<blocks, 32 * detail::kRmsnormWarps, 0, stream>>>(x, w, out, rows, dim,
                                                                           eps);
  EEP_LAUNCH_CHECK();
}

}  // namespace eep::kernels
