#include <cmath>

#include "check.cuh"
#include "paged_attention.cuh"
#include "launch.cuh"

namespace eep::kernels {

void paged_decode_attention(const bf16* q, const bf16* k_cache, const bf16* v_cache,
                            const int32_t* block_tables, const int32_t* seq_lens, bf16* out,
                            int num_seqs, int num_heads, int num_kv_heads, int head_dim,
                            int block_size, int max_blocks_per_seq, cudaStream_t stream) {
  EEP_REQUIRE(num_seqs >= 0 && num_heads > 0 && num_kv_heads > 0 &&
                  num_heads % num_kv_heads == 0,
              "paged_decode_attention: num_heads a positive multiple of num_kv_heads");
  EEP_REQUIRE(block_size > 0 && max_blocks_per_seq > 0,
              "paged_decode_attention: block_size > 0 and max_blocks_per_seq > 0");
  if (num_seqs == 0) return;
  const float scale = 1.0f / std::sqrt(float(head_dim));
  const dim3 grid(unsigned(num_seqs) * unsigned(num_heads));
  const int threads = 32 * detail::kAttnWarps;
  switch (head_dim) {
#define EEP_ATTN_CASE(D)                                                                     \
  case D:                                                                                    \
    detail::launch_kernel(detail::paged_decode_attention_kernel<D>, grid, threads, 0, stream, \
                          q, k_cache, v_cache, block_tables, seq_lens, out, num_heads,      \
                          num_kv_heads, block_size, max_blocks_per_seq, scale);             \
    break;
    EEP_ATTN_CASE(64)
    EEP_ATTN_CASE(128)
    EEP_ATTN_CASE(256)
#undef EEP_ATTN_CASE
    default:
      EEP_REQUIRE(false, "paged_decode_attention: head_dim must be 64, 128 or 256");
  }
}

}  // namespace eep::kernels
