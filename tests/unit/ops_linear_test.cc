// matmul_nt, rmsnorm, silu_mul, rope against double-precision references, and batch invariance.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "eep/ops.h"
#include "random_inputs.h"

namespace {

using eep::testing::random_vec;

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(OpsLinear, MatmulMatchesDoubleReference) {
  for (int in : {1, 7, 8, 9, 16, 64, 67, 256}) {
    for (int rows : {1, 3, 4, 5, 13}) {
      const int out = 11;
      auto x = random_vec(size_t(rows) * in, 1 + in + rows);
      auto w = random_vec(size_t(out) * in, 100 + in);
      std::vector<float> y(size_t(rows) * out);
      eep::ops::matmul_nt(x.data(), w.data(), y.data(), rows, in, out);
      double max_err = 0, max_abs = 0;
      for (int r = 0; r < rows; ++r) {
        for (int o = 0; o < out; ++o) {
          double ref = 0, mag = 0;
          for (int i = 0; i < in; ++i) {
            ref += double(x[r * in + i]) * w[o * in + i];
            mag += std::fabs(double(x[r * in + i]) * w[o * in + i]);
          }
          max_err = std::max(max_err, std::fabs(ref - y[r * out + o]) / (mag + 1e-30));
          max_abs = std::max(max_abs, std::fabs(double(y[r * out + o])));
        }
      }
      EXPECT_LT(max_err, 1e-6) << "in=" << in << " rows=" << rows;
      EXPECT_GT(max_abs, 0.0);
    }
  }
}

TEST(OpsLinear, MatmulIsBatchInvariant) {
  const int rows = 11, in = 67, out = 19;
  auto x = random_vec(size_t(rows) * in, 7);
  auto w = random_vec(size_t(out) * in, 8);
  std::vector<float> all(size_t(rows) * out), one(size_t(rows) * out);
  eep::ops::matmul_nt(x.data(), w.data(), all.data(), rows, in, out);
  for (int r = 0; r < rows; ++r)
    eep::ops::matmul_nt(x.data() + r * in, w.data(), one.data() + r * out, 1, in, out);
  EXPECT_TRUE(bitwise_equal(all, one));
  // A batch starting at another row (so rows fall into different blocks of the kernel).
  std::vector<float> part(size_t(rows - 3) * out);
  eep::ops::matmul_nt(x.data() + 3 * in, w.data(), part.data(), rows - 3, in, out);
  EXPECT_EQ(0, std::memcmp(part.data(), all.data() + 3 * out, part.size() * sizeof(float)));
}

TEST(OpsNorm, RmsnormMatchesDoubleReference) {
  const int rows = 5, dim = 37;
  const float eps = 1e-6f;
  auto x = random_vec(size_t(rows) * dim, 3, -3.0f, 3.0f);
  auto w = random_vec(dim, 4, 0.5f, 1.5f);
  std::vector<float> y(x.size());
  eep::ops::rmsnorm(x.data(), w.data(), y.data(), rows, dim, eps);
  for (int r = 0; r < rows; ++r) {
    double ss = 0;
    for (int i = 0; i < dim; ++i) ss += double(x[r * dim + i]) * x[r * dim + i];
    double inv = 1.0 / std::sqrt(ss / dim + eps);
    for (int i = 0; i < dim; ++i) {
      double ref = x[r * dim + i] * inv * w[i];
      EXPECT_NEAR(y[r * dim + i], ref, 1e-5 * (std::fabs(ref) + 1e-3));
    }
  }
  // Batch invariance.
  std::vector<float> one(x.size());
  for (int r = 0; r < rows; ++r)
    eep::ops::rmsnorm(x.data() + r * dim, w.data(), one.data() + r * dim, 1, dim, eps);
  EXPECT_TRUE(bitwise_equal(y, one));
}

TEST(OpsNorm, RmsnormInPlace) {
  const int dim = 16;
  auto x = random_vec(dim, 5);
  auto w = random_vec(dim, 6);
  std::vector<float> expect(dim);
  eep::ops::rmsnorm(x.data(), w.data(), expect.data(), 1, dim, 1e-6f);
  eep::ops::rmsnorm(x.data(), w.data(), x.data(), 1, dim, 1e-6f);
  EXPECT_TRUE(bitwise_equal(x, expect));
}

TEST(OpsLinear, SiluMulMatchesReference) {
  const int n = 100;
  auto g = random_vec(n, 9, -8.0f, 8.0f);
  auto u = random_vec(n, 10);
  std::vector<float> y(n);
  eep::ops::silu_mul(g.data(), u.data(), y.data(), n);
  for (int i = 0; i < n; ++i) {
    double ref = double(g[i]) / (1.0 + std::exp(-double(g[i]))) * u[i];
    EXPECT_NEAR(y[i], ref, 1e-6 * (std::fabs(ref) + 1e-3));
  }
}

TEST(OpsRope, KnownAngles) {
  // head_dim 4, theta 10000: frequencies 1 and 0.01; element i pairs with i + 2.
  const int hd = 4, heads = 2;
  std::vector<float> x = {1, 2, 3, 4, -1, 0.5f, 2, -3};
  auto orig = x;
  int32_t pos = 3;
  eep::ops::rope(x.data(), &pos, 1, heads, hd, 10000.0f);
  for (int h = 0; h < heads; ++h) {
    const float* o = orig.data() + h * hd;
    const float* v = x.data() + h * hd;
    for (int i = 0; i < 2; ++i) {
      double angle = pos * (i == 0 ? 1.0 : 0.01);
      double a = o[i], b = o[i + 2];
      EXPECT_NEAR(v[i], a * std::cos(angle) - b * std::sin(angle), 1e-6);
      EXPECT_NEAR(v[i + 2], b * std::cos(angle) + a * std::sin(angle), 1e-6);
    }
  }
  // Position 0 is the identity.
  auto y = orig;
  int32_t zero = 0;
  eep::ops::rope(y.data(), &zero, 1, heads, hd, 10000.0f);
  EXPECT_TRUE(bitwise_equal(y, orig));
}

TEST(OpsRope, BatchInvariantAndMatchesReference) {
  const int rows = 6, heads = 3, hd = 32;
  const float theta = 1e6f;
  auto x = random_vec(size_t(rows) * heads * hd, 11);
  std::vector<int32_t> pos = {0, 1, 17, 900, 40000, 5};
  auto all = x;
  eep::ops::rope(all.data(), pos.data(), rows, heads, hd, theta);
  auto one = x;
  for (int r = 0; r < rows; ++r)
    eep::ops::rope(one.data() + r * heads * hd, &pos[r], 1, heads, hd, theta);
  EXPECT_TRUE(bitwise_equal(all, one));
  for (int r = 0; r < rows; ++r) {
    for (int h = 0; h < heads; ++h) {
      for (int i = 0; i < hd / 2; ++i) {
        size_t base = (size_t(r) * heads + h) * hd;
        double angle = double(pos[r]) * std::pow(double(theta), -2.0 * i / hd);
        double a = x[base + i], b = x[base + i + hd / 2];
        EXPECT_NEAR(all[base + i], a * std::cos(angle) - b * std::sin(angle), 1e-5);
        EXPECT_NEAR(all[base + i + hd / 2], b * std::cos(angle) + a * std::sin(angle), 1e-5);
      }
    }
  }
}

}  // namespace
