// Router (softmax, top-k, ties, renormalisation) and the SwiGLU expert.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "eep/ops.h"
#include "random_inputs.h"

namespace {

using eep::testing::random_vec;

TEST(OpsMoe, RouterMatchesReference) {
  const int rows = 7, experts = 16, k = 4;
  auto logits = random_vec(size_t(rows) * experts, 1, -4.0f, 4.0f);
  for (bool renorm : {false, true}) {
    std::vector<int32_t> ids(rows * k);
    std::vector<float> w(rows * k);
    eep::ops::router_topk(logits.data(), rows, experts, k, renorm, ids.data(), w.data());
    for (int r = 0; r < rows; ++r) {
      const float* l = logits.data() + r * experts;
      double mx = *std::max_element(l, l + experts), sum = 0;
      std::vector<double> p(experts);
      for (int e = 0; e < experts; ++e) sum += (p[e] = std::exp(l[e] - mx));
      for (auto& x : p) x /= sum;
      std::vector<int> order(experts);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
      double top_sum = 0;
      for (int j = 0; j < k; ++j) top_sum += p[order[j]];
      for (int j = 0; j < k; ++j) {
        EXPECT_EQ(ids[r * k + j], order[j]);
        double ref = p[order[j]] / (renorm ? top_sum : 1.0);
        EXPECT_NEAR(w[r * k + j], ref, 1e-6);
      }
      if (renorm) {
        double s = 0;
        for (int j = 0; j < k; ++j) s += w[r * k + j];
        EXPECT_NEAR(s, 1.0, 1e-6);
      }
    }
  }
}

TEST(OpsMoe, RouterTiesGoToLowerExpertId) {
  const int experts = 8, k = 3;
  // Experts 2, 5 and 6 tie at the top; 1 and 7 tie below them.
  std::vector<float> logits = {0, 1, 3, 0, 0, 3, 3, 1};
  std::vector<int32_t> ids(k);
  std::vector<float> w(k);
  eep::ops::router_topk(logits.data(), 1, experts, k, true, ids.data(), w.data());
  EXPECT_EQ(ids, (std::vector<int32_t>{2, 5, 6}));
  for (float x : w) EXPECT_FLOAT_EQ(x, 1.0f / 3.0f);
  // All equal: the first k experts.
  std::vector<float> flat(experts, 0.5f);
  eep::ops::router_topk(flat.data(), 1, experts, k, false, ids.data(), w.data());
  EXPECT_EQ(ids, (std::vector<int32_t>{0, 1, 2}));
  for (float x : w) EXPECT_FLOAT_EQ(x, 1.0f / experts);
  // Partial tie at the k-th place.
  std::vector<float> part = {0, 2, 0, 1, 1, 0, 0, 1};
  eep::ops::router_topk(part.data(), 1, experts, k, false, ids.data(), w.data());
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 3, 4}));
}

TEST(OpsMoe, SwigluExpertMatchesReferenceAndIsBatchInvariant) {
  const int rows = 6, hidden = 40, inter = 24;
  auto x = random_vec(size_t(rows) * hidden, 2);
  auto gate = random_vec(size_t(inter) * hidden, 3, -0.3f, 0.3f);
  auto up = random_vec(size_t(inter) * hidden, 4, -0.3f, 0.3f);
  auto down = random_vec(size_t(hidden) * inter, 5, -0.3f, 0.3f);
  std::vector<float> out(size_t(rows) * hidden);
  eep::ops::swiglu_expert(x.data(), rows, gate.data(), up.data(), down.data(), hidden, inter,
                          out.data());
  double max_abs = 0;
  for (int r = 0; r < rows; ++r) {
    std::vector<double> act(inter);
    for (int i = 0; i < inter; ++i) {
      double g = 0, u = 0;
      for (int h = 0; h < hidden; ++h) {
        g += double(x[r * hidden + h]) * gate[i * hidden + h];
        u += double(x[r * hidden + h]) * up[i * hidden + h];
      }
      act[i] = g / (1.0 + std::exp(-g)) * u;
    }
    for (int h = 0; h < hidden; ++h) {
      double ref = 0;
      for (int i = 0; i < inter; ++i) ref += act[i] * down[h * inter + i];
      EXPECT_NEAR(out[r * hidden + h], ref, 1e-5);
      max_abs = std::max(max_abs, std::fabs(ref));
    }
  }
  EXPECT_GT(max_abs, 1e-3);
  std::vector<float> one(out.size());
  for (int r = 0; r < rows; ++r)
    eep::ops::swiglu_expert(x.data() + r * hidden, 1, gate.data(), up.data(), down.data(), hidden,
                            inter, one.data() + r * hidden);
  EXPECT_EQ(0, std::memcmp(one.data(), out.data(), out.size() * sizeof(float)));
}

}  // namespace
