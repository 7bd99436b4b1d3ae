// Paged KV cache writes and causal GQA attention over it.
#include <cmath>
#include <cstring>
#include <vector>

#include "eep/ops.h"
#include "ops/dot.h"

namespace eep::ops {

namespace {

inline size_t slot_offset(const KvLayerView& kv, const int32_t* block_table, int32_t pos) {
  const int32_t block = block_table[pos / kv.block_size];
  const size_t token = size_t(block) * kv.block_size + size_t(pos % kv.block_size);
  return token * size_t(kv.num_kv_heads) * kv.head_dim;
}

}  // namespace

void kv_write(const KvLayerView& kv, const int32_t* block_table, const int32_t* positions, int rows,
              const float* k, const float* v) {
  const size_t width = size_t(kv.num_kv_heads) * kv.head_dim;
  for (int r = 0; r < rows; ++r) {
    const size_t off = slot_offset(kv, block_table, positions[r]);
    std::memcpy(kv.k + off, k + r * width, width * sizeof(float));
    std::memcpy(kv.v + off, v + r * width, width * sizeof(float));
  }
}

void paged_attention(const KvLayerView& kv, const int32_t* block_table, const int32_t* positions,
                     int rows, const float* q, int num_heads, float* out) {
  const int hd = kv.head_dim;
  const int group = num_heads / kv.num_kv_heads;  // query heads per KV head
  const float scale = 1.0f / std::sqrt(float(hd));
  thread_local std::vector<float> scores;  // [group][ctx]
  thread_local std::vector<float> acc;     // [group][hd]

  for (int r = 0; r < rows; ++r) {
    const int ctx = positions[r] + 1;
    if (scores.size() < size_t(group) * ctx) scores.resize(size_t(group) * ctx);
    acc.resize(size_t(group) * hd);
    const float* qr = q + size_t(r) * num_heads * hd;
    float* outr = out + size_t(r) * num_heads * hd;

    for (int g = 0; g < kv.num_kv_heads; ++g) {
      const int h0 = g * group;
      // Scores: the query heads of this KV head share each K row while it is in cache.
      for (int p = 0; p < ctx; ++p) {
        const float* kp = kv.k + slot_offset(kv, block_table, p) + size_t(g) * hd;
        for (int j = 0; j < group; ++j)
          scores[size_t(j) * ctx + p] = detail::dot(qr + size_t(h0 + j) * hd, kp, hd) * scale;
      }
      // Softmax per head, positions in ascending order (fixed whatever the batch).
      for (int j = 0; j < group; ++j) {
        float* s = scores.data() + size_t(j) * ctx;
        float mx = s[0];
        for (int p = 1; p < ctx; ++p) mx = s[p] > mx ? s[p] : mx;
        float sum = 0.0f;
        for (int p = 0; p < ctx; ++p) {
          s[p] = std::exp(s[p] - mx);
          sum += s[p];
        }
        const float inv = 1.0f / sum;
        for (int p = 0; p < ctx; ++p) s[p] *= inv;
      }
      // Weighted sum of V rows, positions in ascending order.
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int p = 0; p < ctx; ++p) {
        const float* vp = kv.v + slot_offset(kv, block_table, p) + size_t(g) * hd;
        for (int j = 0; j < group; ++j) {
          const float w = scores[size_t(j) * ctx + p];
          float* a = acc.data() + size_t(j) * hd;
          for (int d = 0; d < hd; ++d) a[d] += w * vp[d];
        }
      }
      for (int j = 0; j < group; ++j)
        std::memcpy(outr + size_t(h0 + j) * hd, acc.data() + size_t(j) * hd, hd * sizeof(float));
    }
  }
}

}  // namespace eep::ops
