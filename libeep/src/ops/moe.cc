// MoE pieces: the router (softmax, top-k, renormalisation) and one SwiGLU expert.
#include <algorithm>
#include <cmath>
#include <vector>

#include "eep/ops.h"

namespace eep::ops {

void swiglu_expert(const float* x, int rows, const float* gate, const float* up, const float* down,
                   int hidden, int inter, float* out) {
  // Scratch reused across calls: experts run once per (layer, expert) per step, allocation would
  // show up on small models.
  thread_local std::vector<float> g, u;
  const size_t n = size_t(rows) * inter;
  if (g.size() < n) {
    g.resize(n);
    u.resize(n);
  }
  matmul_nt(x, gate, g.data(), rows, hidden, inter);
  matmul_nt(x, up, u.data(), rows, hidden, inter);
  silu_mul(g.data(), u.data(), g.data(), int(n));
  matmul_nt(g.data(), down, out, rows, inter, hidden);
}

void router_topk(const float* logits, int rows, int num_experts, int k, bool renorm, int32_t* ids,
                 float* weights) {
  thread_local std::vector<float> probs;
  thread_local std::vector<char> taken;
  probs.resize(num_experts);
  taken.resize(num_experts);
  for (int r = 0; r < rows; ++r) {
    const float* lr = logits + size_t(r) * num_experts;
    // Softmax in fp32 with a sequential sum: fixed order per row.
    float mx = lr[0];
    for (int e = 1; e < num_experts; ++e) mx = lr[e] > mx ? lr[e] : mx;
    float sum = 0.0f;
    for (int e = 0; e < num_experts; ++e) {
      probs[e] = std::exp(lr[e] - mx);
      sum += probs[e];
    }
    const float inv = 1.0f / sum;
    for (int e = 0; e < num_experts; ++e) probs[e] *= inv;

    // Top-k by repeated selection (k is small): strict '>' keeps the lowest id among equals.
    int32_t* ir = ids + size_t(r) * k;
    float* wr = weights + size_t(r) * k;
    std::fill(taken.begin(), taken.end(), 0);
    for (int j = 0; j < k; ++j) {
      int best = -1;
      for (int e = 0; e < num_experts; ++e) {
        if (taken[e]) continue;
        if (best < 0 || probs[e] > probs[best]) best = e;
      }
      taken[best] = 1;
      ir[j] = best;
      wr[j] = probs[best];
    }
    if (renorm) {
      float s = 0.0f;
      for (int j = 0; j < k; ++j) s += wr[j];
      for (int j = 0; j < k; ++j) wr[j] /= s;
    }
  }
}

}  // namespace eep::ops
