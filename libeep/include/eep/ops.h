// CPU reference operators of the Qwen3-MoE forward pass, fp32. Batch-invariant by construction:
// every output row depends only on its own input row(s) and is computed with one fixed
// summation order, whatever the number of rows in the call (design.md §3, Determinism).
#pragma once

#include <cstdint>

namespace eep::ops {

// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w, for rows of `dim`.
void rmsnorm(const float* x, const float* w, float* out, int rows, int dim, float eps);
// y[r][o] = sum_i x[r][i] * w[o][i]   (w is [out][in], Hugging Face's Linear layout)
void matmul_nt(const float* x, const float* w, float* y, int rows, int in, int out);
// Rotary embedding, Hugging Face "rotate_half" (NeoX) layout, in place on rows of
// num_heads * head_dim; positions[r] is the position of row r.
void rope(float* x, const int32_t* positions, int rows, int num_heads, int head_dim, float theta);
// y = silu(g) * u element-wise over n values.
void silu_mul(const float* g, const float* u, float* y, int n);
// One SwiGLU expert on rows: out[r] = down(silu(gate x) * up x). gate/up are [inter][hidden],
// down is [hidden][inter].
void swiglu_expert(const float* x, int rows, const float* gate, const float* up, const float* down,
                   int hidden, int inter, float* out);
// Router: softmax over num_experts logits per row, then top-k (ties to the lower expert id),
// weights renormalised to sum 1 when renorm. ids/weights are [rows][k], in descending weight.
void router_topk(const float* logits, int rows, int num_experts, int k, bool renorm, int32_t* ids,
                 float* weights);

// Paged KV cache layout of one layer: k and v are [num_blocks][block_size][num_kv_heads][head_dim].
struct KvLayerView {
  float* k = nullptr;
  float* v = nullptr;
  int block_size = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
};
// Writes the k/v rows of tokens at `positions` into their slots (block_table maps
// position / block_size to a block).
void kv_write(const KvLayerView& kv, const int32_t* block_table, const int32_t* positions, int rows,
              const float* k, const float* v);
// Causal GQA attention for the rows of one sequence: row r (a query at positions[r]) attends to
// positions 0..positions[r] read from the cache. q is [rows][num_heads][head_dim]; out likewise.
// Scale 1/sqrt(head_dim). The KV of every attended position must already be written.
void paged_attention(const KvLayerView& kv, const int32_t* block_table, const int32_t* positions,
                     int rows, const float* q, int num_heads, float* out);

}  // namespace eep::ops
