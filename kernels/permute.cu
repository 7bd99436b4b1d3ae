#include <algorithm>

#include "check.cuh"
#include "permute.cuh"
#include "launch.cuh"

namespace eep::kernels {

namespace {

// The plan (with the rows copied in its block when they are few), then the copy kernel if not;
// the plan alone when permuted is null.
void plan_and_copy(const bf16* x, const int32_t* topk_ids, int num_tokens, int k, int hidden,
                   int num_buckets, const detail::LocalRoute& rt, int32_t* offsets,
                   int32_t* slot_rows, bf16* permuted, cudaStream_t stream) {
  EEP_REQUIRE(num_tokens >= 0 && k > 0 && hidden > 0, "permute_tokens: k > 0 and hidden > 0");
  EEP_REQUIRE(num_buckets > 0 && num_buckets <= 1024, "permute_tokens: 0 < num_experts <= 1024");
  const long long pairs = (long long)num_tokens * k;
  EEP_REQUIRE(pairs < (1LL << 31), "permute_tokens: num_tokens * k < 2^31");
  // Shared memory: (warps + 1) * num_buckets ints, kept under the default 48 KiB. A warp per 32
  // pairs up to that, at least 8 (the inline copy's width): the plan's scans grow with warps.
  const int max_warps = std::max(1, std::min(32, 12288 / num_buckets - 1));
  const int warps = int(std::min<long long>(max_warps, std::max<long long>(8, (pairs + 31) / 32)));
  size_t smem = sizeof(int) * size_t(warps + 1) * num_buckets;
  // The pairs' buckets cached too where they fit (decode batches: 2048 pairs at batch 256).
  const bool cache = smem + sizeof(int) * size_t(pairs) <= 48 * 1024;
  if (cache) smem += sizeof(int) * size_t(pairs);
  // With a route, its table and the load counters too where they fit (read before the PDL
  // wait): a pad to 8 bytes, the counters, the table.
  const size_t route_bytes =
      rt.route ? sizeof(int) + sizeof(unsigned long long) * size_t(num_buckets) +
                     sizeof(int32_t) * size_t(detail::route_table_ints(rt.num_experts,
                                                                       rt.max_replicas, rt.spr))
               : 0;
  const bool route_in_smem = rt.route && smem + route_bytes <= 48 * 1024;
  if (route_in_smem) smem += route_bytes;
  const bool inline_copy = hidden % 8 == 0 && pairs * hidden <= detail::kInlineCopyElements;
  detail::launch_kernel(detail::permute_plan_kernel, 1, 32 * warps, smem, stream, topk_ids,
                        int(pairs), num_buckets, rt, offsets, slot_rows, x, k, hidden,
                        inline_copy ? permuted : nullptr, cache, route_in_smem);
  if (pairs == 0 || inline_copy || permuted == nullptr) return;
  detail::launch_kernel(detail::permute_copy_kernel, unsigned(pairs), 128, 0, stream, x, slot_rows,
                        k, hidden, permuted);
}

}  // namespace

void permute_tokens(const bf16* x, const int32_t* topk_ids, int num_tokens, int k, int hidden,
                    int num_experts, int32_t* expert_offsets, int32_t* slot_rows, bf16* permuted,
                    cudaStream_t stream) {
  plan_and_copy(x, topk_ids, num_tokens, k, hidden, num_experts, detail::LocalRoute{},
                expert_offsets, slot_rows, permuted, stream);
}

void route_permute_tokens(const bf16* x, const int32_t* topk_ids, int num_tokens, int k,
                          int hidden, const int32_t* route, int num_experts, int max_replicas,
                          int first_slot, int slots_per_rank, int layer, unsigned long long* load,
                          int32_t* error, int32_t* slot_offsets, int32_t* slot_rows,
                          bf16* permuted, cudaStream_t stream) {
  EEP_REQUIRE(route && load && error && num_experts > 0 && max_replicas > 0,
              "route_permute_tokens: route, load, error, num_experts > 0, max_replicas > 0");
  const detail::LocalRoute rt{route, max_replicas, first_slot, slots_per_rank,
                              layer, num_experts, load, error};
  plan_and_copy(x, topk_ids, num_tokens, k, hidden, slots_per_rank, rt, slot_offsets, slot_rows,
                permuted, stream);
}

void route_to_slots(const int32_t* topk_ids, int num_tokens, int k, const int32_t* route_all,
                    int num_experts, int max_replicas, int num_slots, int layer, int32_t* error,
                    int32_t* slot_offsets, int32_t* slot_rows, cudaStream_t stream) {
  EEP_REQUIRE(route_all && error && num_experts > 0 && max_replicas > 0 && num_slots > 0,
              "route_to_slots: route, error, num_experts > 0, max_replicas > 0, num_slots > 0");
  const detail::LocalRoute rt{route_all, max_replicas, 0, num_slots,
                              layer, num_experts, nullptr, error};
  plan_and_copy(nullptr, topk_ids, num_tokens, k, 1, num_slots, rt, slot_offsets, slot_rows,
                nullptr, stream);
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
}

}  // namespace eep::kernels
