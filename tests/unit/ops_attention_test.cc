// kv_write + paged_attention against a dense causal GQA reference, with a shuffled block table.
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

struct AttnCase {
  int seq = 37, heads = 4, kv_heads = 2, hd = 16, block_size = 4, num_blocks = 16;
  std::vector<float> q, k, v, kcache, vcache;
  std::vector<int32_t> table, positions;
  eep::ops::KvLayerView view() {
    eep::ops::KvLayerView kv;
    kv.k = kcache.data();
    kv.v = vcache.data();
    kv.block_size = block_size;
    kv.num_kv_heads = kv_heads;
    kv.head_dim = hd;
    return kv;
  }
  AttnCase() {
    q = random_vec(size_t(seq) * heads * hd, 1, -2.0f, 2.0f);
    k = random_vec(size_t(seq) * kv_heads * hd, 2, -2.0f, 2.0f);
    v = random_vec(size_t(seq) * kv_heads * hd, 3);
    // NaN-filled cache: any read of an unwritten slot poisons the result.
    kcache.assign(size_t(num_blocks) * block_size * kv_heads * hd, std::nanf(""));
    vcache = kcache;
    table.resize(num_blocks);
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), std::mt19937(4));
    positions.resize(seq);
    std::iota(positions.begin(), positions.end(), 0);
  }
};

TEST(OpsAttention, PagedMatchesDenseCausalReference) {
  AttnCase s;
  auto kv = s.view();
  eep::ops::kv_write(kv, s.table.data(), s.positions.data(), s.seq, s.k.data(), s.v.data());
  std::vector<float> out(s.q.size());
  eep::ops::paged_attention(kv, s.table.data(), s.positions.data(), s.seq, s.q.data(), s.heads,
                            out.data());
  const int group = s.heads / s.kv_heads;
  for (int t = 0; t < s.seq; ++t) {
    for (int h = 0; h < s.heads; ++h) {
      const int g = h / group;
      const float* qv = s.q.data() + (size_t(t) * s.heads + h) * s.hd;
      std::vector<double> sc(t + 1);
      double mx = -1e300;
      for (int p = 0; p <= t; ++p) {
        const float* kp = s.k.data() + (size_t(p) * s.kv_heads + g) * s.hd;
        double d = 0;
        for (int i = 0; i < s.hd; ++i) d += double(qv[i]) * kp[i];
        sc[p] = d / std::sqrt(double(s.hd));
        mx = std::max(mx, sc[p]);
      }
      double sum = 0;
      for (auto& x : sc) sum += (x = std::exp(x - mx));
      for (int i = 0; i < s.hd; ++i) {
        double ref = 0;
        for (int p = 0; p <= t; ++p)
          ref += sc[p] / sum * s.v[(size_t(p) * s.kv_heads + g) * s.hd + i];
        EXPECT_NEAR(out[(size_t(t) * s.heads + h) * s.hd + i], ref, 1e-5)
            << "t=" << t << " h=" << h << " i=" << i;
      }
    }
  }
}

TEST(OpsAttention, BatchInvariantAcrossChunking) {
  AttnCase s;
  auto kv = s.view();
  eep::ops::kv_write(kv, s.table.data(), s.positions.data(), s.seq, s.k.data(), s.v.data());
  std::vector<float> all(s.q.size()), one(s.q.size());
  eep::ops::paged_attention(kv, s.table.data(), s.positions.data(), s.seq, s.q.data(), s.heads,
                            all.data());
  const size_t width = size_t(s.heads) * s.hd;
  for (int t = 0; t < s.seq; ++t)
    eep::ops::paged_attention(kv, s.table.data(), &s.positions[t], 1, s.q.data() + t * width,
                              s.heads, one.data() + t * width);
  EXPECT_EQ(0, std::memcmp(all.data(), one.data(), all.size() * sizeof(float)));
}

TEST(OpsAttention, KvWriteOneByOneEqualsAllAtOnce) {
  AttnCase a, b;
  auto kva = a.view(), kvb = b.view();
  eep::ops::kv_write(kva, a.table.data(), a.positions.data(), a.seq, a.k.data(), a.v.data());
  const size_t width = size_t(b.kv_heads) * b.hd;
  for (int t = b.seq - 1; t >= 0; --t)
    eep::ops::kv_write(kvb, b.table.data(), &b.positions[t], 1, b.k.data() + t * width,
                       b.v.data() + t * width);
  EXPECT_EQ(0, std::memcmp(a.kcache.data(), b.kcache.data(), a.kcache.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(a.vcache.data(), b.vcache.data(), a.vcache.size() * sizeof(float)));
}

}  // namespace
