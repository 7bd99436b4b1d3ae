#include <cmath>

#include "check.cuh"
#include "prefill_attention.cuh"

namespace eep::kernels {

namespace {

template <int D>
void launch_prefill(const bf16* q, const bf16* k_cache, const bf16* v_cache,
                    const int32_t* block_tables, const int32_t* q_starts, const int32_t* num_rows,
                    const int32_t* starts, bf16* out, int num_seqs, int max_rows, int num_heads,
                    int num_kv_heads, int block_size, int max_blocks_per_seq,
                    cudaStream_t stream) {
  constexpr size_t kSmem = detail::PrefillSmem<D>::kBytes;
  static const bool attr_set = [] {  // once per head_dim (thread-safe static init)
    EEP_CUDA_CHECK(cudaFuncSetAttribute(detail::paged_prefill_attention_kernel<D>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        int(kSmem)));
    return true;
  }();
  (void)attr_set;
  const int group = num_heads / num_kv_heads;
  const long long vectors = static_cast<long long>(max_rows) * group;
  const dim3 grid(unsigned(detail::ceil_div(vectors, detail::kPrefillM)), unsigned(num_kv_heads),
                  unsigned(num_seqs));
  const float scale = 1.0f / std::sqrt(float(D));
  detail::paged_prefill_attention_kernel<D><<<grid, detail::kPrefillWarps * 32, kSmem, stream>>>(
      q, k_cache, v_cache, block_tables, q_starts, num_rows, starts, out, num_heads, num_kv_heads,
      block_size, max_blocks_per_seq, scale);
  EEP_LAUNCH_CHECK();
}

}  // namespace

void paged_prefill_attention(const bf16* q, const bf16* k_cache, const bf16* v_cache,
                             const int32_t* block_tables, const int32_t* q_starts,
                             const int32_t* num_rows, const int32_t* starts, bf16* out,
                             int num_seqs, int max_rows, int num_heads, int num_kv_heads,
                             int head_dim, int block_size, int max_blocks_per_seq,
                             cudaStream_t stream) {
  EEP_REQUIRE(num_seqs >= 0 && max_rows >= 0,
              "paged_prefill_attention: num_seqs >= 0 and max_rows >= 0");
  EEP_REQUIRE(num_heads > 0 && num_kv_heads > 0 && num_heads % num_kv_heads == 0,
              "paged_prefill_attention: num_heads a positive multiple of num_kv_heads");
  EEP_REQUIRE(block_size > 0 && max_blocks_per_seq > 0,
              "paged_prefill_attention: block_size > 0 and max_blocks_per_seq > 0");
  EEP_REQUIRE(num_kv_heads <= 65535 && num_seqs <= 65535,
              "paged_prefill_attention: num_kv_heads and num_seqs <= 65535 (grid y/z)");
  if (num_seqs == 0 || max_rows == 0) return;
  switch (head_dim) {
#define EEP_PREFILL_CASE(D)                                                                   \
  case D:                                                                                     \
    launch_prefill<D>(q, k_cache, v_cache, block_tables, q_starts, num_rows, starts, out,     \
                      num_seqs, max_rows, num_heads, num_kv_heads, block_size,                \
                      max_blocks_per_seq, stream);                                            \
    break;
    EEP_PREFILL_CASE(64)
    EEP_PREFILL_CASE(128)
    EEP_PREFILL_CASE(256)
#undef EEP_PREFILL_CASE
    default:
      EEP_REQUIRE(false, "paged_prefill_attention: head_dim must be 64, 128 or 256");
  }
}

}  // namespace eep::kernels
