#include "check.cuh"
#include "router_topk.cuh"
#include "launch.cuh"

namespace eep::kernels {

void router_topk(const float* logits, int rows, int num_experts, int k, bool renorm,
                 int32_t* ids, float* weights, cudaStream_t stream) {
  EEP_REQUIRE(rows >= 0 && num_experts > 0 && num_experts <= 1024,
              "router_topk: 0 < num_experts <= 1024");
  EEP_REQUIRE(k > 0 && k <= 32 && k <= num_experts, "router_topk: 0 < k <= min(32, num_experts)");
  if (rows == 0) return;
  const size_t smem = sizeof(float) * detail::kRouterWarps * num_experts;  // <= 16 KiB
  detail::launch_kernel(detail::router_topk_kernel, detail::ceil_div(rows, detail::kRouterWarps),
                        32 * detail::kRouterWarps, smem, stream, logits, rows, num_experts, k,
                        renorm, ids, weights);
}

void router_fused(const float* x, const float* w, int rows, int hidden, int num_experts, int k,
                  bool renorm, float* logits, unsigned* counters, int32_t* ids, float* weights,
                  cudaStream_t stream) {
  EEP_REQUIRE(rows >= 0 && hidden > 0 && num_experts > 0 && num_experts <= 1024,
              "router_fused: hidden > 0, 0 < num_experts <= 1024");
  EEP_REQUIRE(k > 0 && k <= 32 && k <= num_experts, "router_fused: 0 < k <= min(32, num_experts)");
  const size_t smem = sizeof(float) * (size_t(hidden) + size_t(num_experts));
  EEP_REQUIRE(smem <= 48 * 1024, "router_fused: hidden + num_experts floats fit in 48 KiB");
  if (rows == 0) return;
  const dim3 grid(rows, detail::ceil_div(num_experts, detail::kRouterExpertsPerBlock));
  detail::launch_kernel(detail::router_fused_kernel, grid, 32 * detail::kRouterExpertsPerBlock,
                        smem, stream, x, w, hidden, num_experts, k, renorm, logits, counters, ids,
                        weights);
}

}  // namespace eep::kernels
