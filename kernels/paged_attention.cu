#include <cmath>
#include <type_traits>

#include "check.cuh"
#include "paged_attention.cuh"
#include "launch.cuh"

namespace eep::kernels {

namespace {
// fn(std::integral_constant<int, D>) for the head dimensions the kernels are built for.
template <typename Fn>
void dispatch_head_dim(int head_dim, Fn&& fn) {
  switch (head_dim) {
    case 64: return fn(std::integral_constant<int, 64>{});
    case 128: return fn(std::integral_constant<int, 128>{});
    case 256: return fn(std::integral_constant<int, 256>{});
    default: EEP_REQUIRE(false, "paged_decode_attention: head_dim must be 64, 128 or 256");
  }
}
}  // namespace

void paged_decode_attention(const bf16* q, const bf16* k_cache, const bf16* v_cache,
                            const int32_t* block_tables, const int32_t* seq_lens, bf16* out,
                            int num_seqs, int num_heads, int num_kv_heads, int head_dim,
                            int block_size, int max_blocks_per_seq, cudaStream_t stream,
                            DecodeAttention impl) {
  EEP_REQUIRE(num_seqs >= 0 && num_heads > 0 && num_kv_heads > 0 &&
                  num_heads % num_kv_heads == 0,
              "paged_decode_attention: num_heads a positive multiple of num_kv_heads");
  EEP_REQUIRE(block_size > 0 && max_blocks_per_seq > 0,
              "paged_decode_attention: block_size > 0 and max_blocks_per_seq > 0");
  if (num_seqs == 0) return;
  const float scale = 1.0f / std::sqrt(float(head_dim));
  const int group = num_heads / num_kv_heads;
  const bool per_kv_head_ok = group <= detail::kGqaMaxGroup;
  EEP_REQUIRE(impl != DecodeAttention::kPerKvHead || per_kv_head_ok,
              "paged_decode_attention: the per-KV-head kernel takes at most 8 query heads per KV head");
  // Per KV head when there are blocks enough to fill the GPU that way (it loads each K/V row
  // once for the group); per query head for few sequences, where its 8x the blocks spread the
  // reads better.
  const bool per_kv_head = impl == DecodeAttention::kPerKvHead ||
                           (impl == DecodeAttention::kAuto && per_kv_head_ok &&
                            num_seqs * num_kv_heads >= kDecodeAttentionPerKvHeadBlocks);
  dispatch_head_dim(head_dim, [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    if (per_kv_head)
      detail::launch_kernel(detail::paged_decode_attention_gqa_kernel<D>,
                            dim3(unsigned(num_seqs) * unsigned(num_kv_heads)), D, 0, stream, q,
                            k_cache, v_cache, block_tables, seq_lens, out, num_heads,
                            num_kv_heads, block_size, max_blocks_per_seq, scale);
    else
      detail::launch_kernel(detail::paged_decode_attention_kernel<D>,
                            dim3(unsigned(num_seqs) * unsigned(num_heads)),
                            32 * detail::kAttnWarps, 0, stream, q, k_cache, v_cache,
                            block_tables, seq_lens, out, num_heads, num_kv_heads, block_size,
                            max_blocks_per_seq, scale);
  });
}

}  // namespace eep::kernels
