// Paged attention for small heads (head_dim <= 32: the tiny and small presets that tests and
// the CPU demo use). One warp per (query row, head), lane c holding element c of the head; the
// positions are walked in order with an online softmax. Not tuned: real models use
// paged_decode_attention (head_dim 64/128/256).
#include <cmath>

#include "check.cuh"
#include "common.cuh"
#include "launch.cuh"

namespace eep::kernels {

namespace detail {

__global__ void paged_attention_small_head_kernel(const bf16* q, const bf16* k_cache,
                                                  const bf16* v_cache, const int32_t* block_tables,
                                                  const int32_t* seq_lens, bf16* out,
                                                  int num_heads, int num_kv_heads, int head_dim,
                                                  int block_size, int max_blocks, float scale) {
  pdl_begin();  // launch.cuh: before any global memory access
  const int row = blockIdx.x / num_heads, head = blockIdx.x % num_heads;
  const int kv_head = head / (num_heads / num_kv_heads);
  const int c = threadIdx.x;
  const bool active = c < head_dim;
  const float qv =
      active ? __bfloat162float(q[(size_t(row) * num_heads + head) * head_dim + c]) * scale : 0.0f;
  const int32_t* table = block_tables + size_t(row) * max_blocks;
  const size_t token_stride = size_t(num_kv_heads) * head_dim;
  float m = -INFINITY, l = 0.0f, acc = 0.0f;
  for (int pos = 0; pos < seq_lens[row]; ++pos) {
    const size_t off = (size_t(table[pos / block_size]) * block_size + pos % block_size) *
                           token_stride + size_t(kv_head) * head_dim + c;
    const float s = warp_sum(active ? qv * __bfloat162float(k_cache[off]) : 0.0f);
    const float m_new = fmaxf(m, s);
    const float corr = __expf(m - m_new), p = __expf(s - m_new);
    l = l * corr + p;
    acc = acc * corr + (active ? p * __bfloat162float(v_cache[off]) : 0.0f);
    m = m_new;
  }
  if (active) out[(size_t(row) * num_heads + head) * head_dim + c] = __float2bfloat16(acc / l);
}

}  // namespace detail

void paged_attention_small_head(const bf16* q, const bf16* k_cache, const bf16* v_cache,
                                const int32_t* block_tables, const int32_t* seq_lens, bf16* out,
                                int num_rows, int num_heads, int num_kv_heads, int head_dim,
                                int block_size, int max_blocks_per_row, cudaStream_t stream) {
  EEP_REQUIRE(num_rows >= 0 && num_heads > 0 && num_kv_heads > 0 &&
                  num_heads % num_kv_heads == 0 && head_dim > 0 && head_dim <= 32 &&
                  block_size > 0 && max_blocks_per_row > 0,
              "paged_attention_small_head: head_dim in 1..32, heads a multiple of kv heads");
  if (num_rows == 0) return;
  detail::launch_kernel(detail::paged_attention_small_head_kernel, num_rows * num_heads, 32, 0,
                        stream, q, k_cache, v_cache, block_tables, seq_lens, out, num_heads,
                        num_kv_heads, head_dim, block_size, max_blocks_per_row,
                        1.0f / std::sqrt(float(head_dim)));
}

}  // namespace eep::kernels
