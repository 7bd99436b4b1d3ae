#include <algorithm>

#include "check.cuh"
#include "permute.cuh"
#include "launch.cuh"

namespace eep::kernels {

void permute_tokens(const bf16* x, const int32_t* topk_ids, int num_tokens, int k, int hidden,
                    int num_experts, int32_t* expert_offsets, int32_t* slot_rows, bf16* permuted,
                    cudaStream_t stream) {
  EEP_REQUIRE(num_tokens >= 0 && k > 0 && hidden > 0, "permute_tokens: k > 0 and hidden > 0");
  EEP_REQUIRE(num_experts > 0 && num_experts <= 1024, "permute_tokens: 0 < num_experts <= 1024");
  const long long pairs = (long long)num_tokens * k;
  EEP_REQUIRE(pairs < (1LL << 31), "permute_tokens: num_tokens * k < 2^31");
  // Shared memory: (warps + 1) * num_experts ints, kept under the default 48 KiB.
  const int warps = std::max(1, std::min(32, 12288 / num_experts - 1));
  const size_t smem = sizeof(int) * size_t(warps + 1) * num_experts;
  detail::launch_kernel(detail::permute_plan_kernel, 1, 32 * warps, smem, stream, topk_ids,
                        int(pairs), num_experts, expert_offsets, slot_rows);
  EEP_LAUNCH_CHECK();
  if (pairs == 0) return;
  detail::launch_kernel(detail::permute_copy_kernel, unsigned(pairs), 128, 0, stream, x, slot_rows,
                        k, hidden, permuted);
  EEP_LAUNCH_CHECK();
}

void unpermute_tokens(const bf16* y, const int32_t* slot_rows, const float* weights,
                      int num_tokens, int k, int hidden, bf16* out, cudaStream_t stream) {
  EEP_REQUIRE(num_tokens >= 0 && k > 0 && hidden > 0, "unpermute_tokens: k > 0 and hidden > 0");
  if (num_tokens == 0) return;
  if (hidden % 8 == 0) {
    const long long threads = (long long)num_tokens * (hidden / 8);
    detail::launch_kernel(detail::unpermute_vec8_kernel, detail::ceil_div(threads, 128), 128, 0,
                          stream, y, slot_rows, weights, num_tokens, k, hidden, out);
  } else {
    detail::launch_kernel(detail::unpermute_kernel, num_tokens, 256, 0, stream, y, slot_rows,
                          weights, k, hidden, out);
  }
  EEP_LAUNCH_CHECK();
}

}  // namespace eep::kernels
