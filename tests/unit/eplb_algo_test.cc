// eplb: conformance with the published DeepSeek algorithm (its documented example and the cases
// of vLLM's tests/distributed/test_eplb_algo.py), properties of every algorithm on random loads,
// and the default algorithm against the DeepSeek modes.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>

#include "eep/common.h"
#include "eep/eplb.h"
#include "eplb/internal.h"

using eep::eplb::Algo;
using eep::eplb::Options;
using eep::eplb::Plan;
using Matrix = std::vector<std::vector<double>>;

namespace {

Options opts(int slots, int groups, int nodes, int gpus, Algo algo = Algo::kDeepseek) {
  Options o;
  o.num_slots = slots;
  o.num_groups = groups;
  o.num_nodes = nodes;
  o.num_gpus = gpus;
  o.algo = algo;
  return o;
}

// Properties every plan must have.
void expect_sound(const Plan& p, const Matrix& load, int slots, int gpus) {
  ASSERT_EQ(p.num_layers, static_cast<int>(load.size()));
  ASSERT_EQ(p.num_logical, static_cast<int>(load[0].size()));
  ASSERT_EQ(p.num_slots, slots);
  ASSERT_EQ(p.num_gpus, gpus);
  EXPECT_NO_THROW(p.validate());
  for (int l = 0; l < p.num_layers; ++l) {
    ASSERT_EQ(static_cast<int>(p.phy2log[l].size()), slots);
    int sum = 0;
    for (int e = 0; e < p.num_logical; ++e) {
      EXPECT_GE(p.logcnt[l][e], 1) << "layer " << l << " expert " << e;
      sum += p.logcnt[l][e];
      auto reps = p.log2phy[l][e];
      ASSERT_EQ(static_cast<int>(reps.size()), p.logcnt[l][e]);
      for (int s : reps) {
        ASSERT_GE(s, 0);
        EXPECT_EQ(p.phy2log[l][s], e);
      }
    }
    EXPECT_EQ(sum, slots);
  }
}

Matrix random_load(std::mt19937& rng, int layers, int experts, int kind) {
  Matrix m(layers, std::vector<double>(experts));
  std::lognormal_distribution<double> logn(0.0, kind == 0 ? 0.5 : 1.5);
  std::uniform_int_distribution<int> ints(0, 1000);
  for (auto& row : m)
    for (auto& v : row) v = kind == 2 ? ints(rng) : std::round(logn(rng) * 1000.0);
  return m;
}

int64_t layer_dups(const Plan& p, int l) {
  Plan one = p;
  one.phy2log = {p.phy2log[l]};
  one.num_layers = 1;
  one.finalize();
  return eep::eplb::duplicate_replicas(one);
}

}  // namespace

TEST(EplbDeepseek, PublishedExample) {
  Matrix w = {{90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86},
              {20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27}};
  auto p = eep::eplb::rebalance(w, opts(16, 4, 2, 8));
  std::vector<std::vector<int>> phy2log = {{5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1},
                                           {7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1}};
  std::vector<std::vector<int>> logcnt = {{1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1},
                                          {1, 2, 1, 1, 1, 2, 2, 1, 2, 1, 1, 1}};
  EXPECT_EQ(p.phy2log, phy2log);
  EXPECT_EQ(p.logcnt, logcnt);
  expect_sound(p, w, 16, 8);
  auto d = eep::eplb::rebalance(w, opts(16, 4, 2, 8, Algo::kDefault));
  EXPECT_EQ(eep::eplb::duplicate_replicas(d), 0);
  EXPECT_GE(eep::eplb::balancedness(w, d), eep::eplb::balancedness(w, p));
}

// The cases of vLLM's test_eplb_algo.py (shapes and the properties it asserts).
TEST(EplbDeepseek, VllmSingleGpu) {
  Matrix w = {{10, 20, 30, 40}};
  auto p = eep::eplb::rebalance(w, opts(4, 1, 1, 1));
  expect_sound(p, w, 4, 1);
  EXPECT_EQ(std::set<int>(p.phy2log[0].begin(), p.phy2log[0].end()), (std::set<int>{0, 1, 2, 3}));
}

TEST(EplbDeepseek, VllmEqualWeights) {
  Matrix w = {{50, 50, 50, 50, 50, 50, 50, 50}};
  auto p = eep::eplb::rebalance(w, opts(8, 2, 2, 4));
  expect_sound(p, w, 8, 4);
  for (int c : p.logcnt[0]) EXPECT_EQ(c, 1);
}

TEST(EplbDeepseek, VllmExtremeImbalance) {
  Matrix w = {{1000, 1, 1, 1, 1, 1, 1, 1}};
  auto p = eep::eplb::rebalance(w, opts(12, 2, 2, 4));
  expect_sound(p, w, 12, 4);
  EXPECT_GT(p.logcnt[0][0], p.logcnt[0][1]);
}

TEST(EplbDeepseek, VllmMultipleLayers) {
  Matrix w = {{10, 20, 30, 40, 50, 60}, {60, 50, 40, 30, 20, 10}, {25, 25, 25, 25, 25, 25}};
  auto p = eep::eplb::rebalance(w, opts(8, 2, 2, 4));
  expect_sound(p, w, 8, 4);
}

TEST(EplbDeepseek, VllmParameterValidation) {
  Matrix w = {{10, 20, 30, 40}};
  // groups % nodes != 0: global fallback, not an error.
  auto p = eep::eplb::rebalance(w, opts(8, 1, 2, 4));
  expect_sound(p, w, 8, 4);
  // 7 slots on 4 GPUs.
  try {
    eep::eplb::rebalance(w, opts(7, 2, 2, 4));
    FAIL() << "no error";
  } catch (const eep::Error& e) {
    EXPECT_EQ(e.code(), eep::ErrorCode::kInvalidArgument);
  }
}

TEST(EplbDeepseek, VllmSmallScaleHierarchical) {
  Matrix w = {{100, 50, 200, 75, 150, 25, 300, 80}};
  auto p = eep::eplb::rebalance(w, opts(12, 4, 2, 4));
  expect_sound(p, w, 12, 4);
  EXPECT_GE(p.logcnt[0][6], 2);
}

TEST(EplbDeepseek, VllmGlobalFallback) {
  Matrix w = {{10, 20, 30, 40, 50, 60}};
  auto p = eep::eplb::rebalance(w, opts(8, 3, 2, 4));
  expect_sound(p, w, 8, 4);
}

TEST(EplbDeepseek, VllmDeviceCompatibilityShape) {
  Matrix w = {{10, 20, 30, 40}};
  auto p = eep::eplb::rebalance(w, opts(6, 2, 1, 2));
  expect_sound(p, w, 6, 2);
}

TEST(EplbDeepseek, VllmAdditionalCases) {
  Matrix w1 = {{50, 100, 75, 120, 90, 60, 80, 110, 40, 70, 95, 85, 65, 55, 45, 35}};
  auto p1 = eep::eplb::rebalance(w1, opts(24, 8, 4, 8));
  expect_sound(p1, w1, 24, 8);
  Matrix w2 = {{200, 150, 100, 50, 25, 12}, {12, 25, 50, 100, 150, 200}};
  auto p2 = eep::eplb::rebalance(w2, opts(10, 3, 1, 2));
  expect_sound(p2, w2, 10, 2);
  EXPECT_GE(p2.logcnt[0][0], 2);
  EXPECT_GE(p2.logcnt[1][5], 2);
}

TEST(EplbDeepseek, HierarchicalKeepsGroupsOnOneNode) {
  std::mt19937 rng(7);
  auto w = random_load(rng, 6, 64, 1);
  auto p = eep::eplb::rebalance(w, opts(96, 8, 4, 16));
  int per_node = 96 / 4, group_size = 64 / 8;
  for (const auto& row : p.phy2log) {
    std::vector<int> node_of(8, -1);
    for (int s = 0; s < 96; ++s) {
      int g = row[s] / group_size, n = s / per_node;
      if (node_of[g] < 0) node_of[g] = n;
      EXPECT_EQ(node_of[g], n);
    }
  }
}

struct Shape {
  int layers, experts, slots, gpus, nodes, groups;
};

class EplbRandom : public ::testing::TestWithParam<Shape> {};

TEST_P(EplbRandom, PropertiesAndDefaultBeatsDeepseek) {
  Shape sh = GetParam();
  std::mt19937 rng(1234 + sh.experts * 7 + sh.slots);
  for (int trial = 0; trial < 6; ++trial) {
    auto w = random_load(rng, sh.layers, sh.experts, trial % 3);
    auto ds = eep::eplb::rebalance(w, opts(sh.slots, sh.groups, sh.nodes, sh.gpus));
    auto df = eep::eplb::rebalance(w, opts(sh.slots, sh.groups, sh.nodes, sh.gpus, Algo::kDefault));
    expect_sound(ds, w, sh.slots, sh.gpus);
    expect_sound(df, w, sh.slots, sh.gpus);
    if (sh.slots / sh.gpus <= sh.experts) {
      EXPECT_EQ(eep::eplb::duplicate_replicas(df), 0);
    }
    std::vector<double> per_df;
    double b_df = eep::eplb::balancedness(w, df, &per_df);
    auto glob = eep::eplb::deepseek_plan(w, sh.slots, sh.groups, sh.nodes, sh.gpus, false);
    for (const Plan* ref : {&ds, &glob}) {
      std::vector<double> per_ref;
      double b_ref = eep::eplb::balancedness(w, *ref, &per_ref);
      for (int l = 0; l < sh.layers; ++l) {
        // Per layer: never below a DeepSeek layout without duplicates (those are candidates the
        // default refines). A DeepSeek layer with two replicas of one expert on one GPU is not a
        // legal default layout; against those the default may lose a little (docs/eplb.md).
        if (layer_dups(*ref, l) == 0) {
          EXPECT_GE(per_df[l] + 1e-12, per_ref[l]) << "trial " << trial << " layer " << l;
        } else {
          EXPECT_GE(per_df[l], 0.85 * per_ref[l]) << "trial " << trial << " layer " << l;
        }
      }
      if (sh.experts >= 256) EXPECT_GE(b_df + 1e-12, b_ref) << "trial " << trial;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, EplbRandom,
    ::testing::Values(Shape{4, 12, 16, 8, 2, 4}, Shape{4, 16, 24, 8, 4, 8},
                      Shape{3, 64, 96, 16, 4, 8}, Shape{3, 64, 80, 16, 1, 1},
                      Shape{3, 60, 64, 8, 2, 3}, Shape{2, 8, 12, 4, 2, 2},
                      Shape{2, 8, 32, 4, 1, 1},  // more slots per GPU than... 8 each = all
                      Shape{4, 256, 288, 32, 4, 8}, Shape{2, 256, 320, 64, 8, 8},
                      Shape{2, 256, 288, 32, 1, 1}),
    [](const auto& info) {
      const Shape& s = info.param;
      return "E" + std::to_string(s.experts) + "_P" + std::to_string(s.slots) + "_R" +
             std::to_string(s.gpus) + "_N" + std::to_string(s.nodes) + "_G" +
             std::to_string(s.groups);
    });

// The refinement's AVX-512 swap search (refine.cc) must pick exactly the scalar search's swaps:
// the same plans on shapes with 1 to 36 slots per GPU, domains of 2 to 64 GPUs (node-local ones
// whose GPU count is not a multiple of the vector width), and loads with many ties (integers).
TEST(EplbDefault, VectorSwapSearchPicksTheScalarSwaps) {
  if (!eep::eplb::vector_swap_search_available())
    GTEST_SKIP() << "this CPU lacks AVX-512: only the scalar swap search runs here";
  struct S {
    int experts, slots, gpus, nodes, groups;
  };
  const S shapes[] = {{12, 16, 8, 2, 4},    {8, 12, 4, 2, 2},     {64, 80, 16, 1, 1},
                      {60, 64, 8, 2, 3},    {8, 32, 4, 1, 1},     {128, 160, 16, 2, 4},
                      {64, 96, 12, 3, 8},   {40, 72, 2, 1, 1},    {256, 288, 32, 4, 8},
                      {256, 320, 64, 8, 8}, {256, 288, 32, 1, 1}, {160, 200, 40, 5, 5}};
  std::mt19937 rng(77);
  int changed = 0;  // plans the refinement changed at all (so the comparison means something)
  for (const S& sh : shapes) {
    for (int kind = 0; kind < 3; ++kind) {
      auto w = random_load(rng, sh.experts >= 256 ? 3 : 12, sh.experts, kind);
      Options o = opts(sh.slots, sh.groups, sh.nodes, sh.gpus, Algo::kDefault);
      eep::eplb::force_scalar_swap_search(true);
      Plan scalar = eep::eplb::rebalance(w, o);
      eep::eplb::force_scalar_swap_search(false);
      Plan vector = eep::eplb::rebalance(w, o);
      EXPECT_EQ(vector.phy2log, scalar.phy2log)
          << sh.experts << "/" << sh.slots << "/" << sh.gpus << " load kind " << kind;
      Plan start = eep::eplb::deepseek_plan(w, sh.slots, 1, 1, sh.gpus, false);
      changed += start.phy2log != vector.phy2log;
    }
  }
  EXPECT_GT(changed, 20);
}

TEST(EplbDefault, SkewedLoadNeverDuplicates) {
  // One very hot expert: DeepSeek's greedy gives it more replicas than a node has GPUs.
  Matrix w = {{1000, 1, 1, 1, 1, 1, 1, 1}};
  auto ds = eep::eplb::rebalance(w, opts(12, 2, 2, 4));
  auto df = eep::eplb::rebalance(w, opts(12, 2, 2, 4, Algo::kDefault));
  EXPECT_GT(eep::eplb::duplicate_replicas(ds), 0);
  EXPECT_EQ(eep::eplb::duplicate_replicas(df), 0);
  EXPECT_GE(eep::eplb::balancedness(w, df), eep::eplb::balancedness(w, ds));
}

TEST(EplbDefault, ZeroLoadIsBalanced) {
  Matrix w(3, std::vector<double>(16, 0.0));
  auto p = eep::eplb::rebalance(w, opts(32, 4, 2, 8, Algo::kDefault));
  expect_sound(p, w, 32, 8);
  EXPECT_DOUBLE_EQ(eep::eplb::balancedness(w, p), 1.0);
}

TEST(EplbUniform, RoundRobinWithoutDuplicates) {
  auto p = eep::eplb::uniform_plan(3, 256, 288, 32);
  Matrix w(3, std::vector<double>(256, 1.0));
  expect_sound(p, w, 288, 32);
  EXPECT_EQ(eep::eplb::duplicate_replicas(p), 0);
  auto q = eep::eplb::uniform_plan(1, 4, 16, 2);  // 8 slots per GPU, 4 experts: unavoidable
  EXPECT_NO_THROW(q.validate());
}

// Randomized, many small shapes (where DeepSeek's duplicates matter most), per layer against
// both DeepSeek modes: never less balanced than a DeepSeek layout without duplicates (those are
// candidates the default refines); against a layout with two replicas of one expert on one GPU
// (not a legal default layout) at most 25% less (measured worst over 12,000 layers of 12
// experts / 16 slots / 8 GPUs / 2 nodes: 0.760; see docs/eplb.md).
TEST(EplbDefault, RandomizedAgainstBothDeepseekModes) {
  struct S {
    int experts, slots, gpus, nodes, groups;
  };
  const S shapes[] = {{12, 16, 8, 2, 4}, {16, 24, 8, 4, 8}, {8, 12, 4, 2, 2}, {12, 16, 4, 1, 1},
                      {16, 20, 4, 2, 4}, {16, 32, 8, 1, 1}, {32, 48, 8, 2, 4}, {64, 80, 16, 1, 1}};
  uint32_t seed = std::random_device{}();
  std::mt19937 rng(seed);
  SCOPED_TRACE("seed " + std::to_string(seed));
  int dup_free = 0;
  for (const S& sh : shapes) {
    for (int trial = 0; trial < 40; ++trial) {
      auto w = random_load(rng, 1, sh.experts, trial % 3);
      auto df = eep::eplb::rebalance(w, opts(sh.slots, sh.groups, sh.nodes, sh.gpus, Algo::kDefault));
      ASSERT_EQ(eep::eplb::duplicate_replicas(df), 0) << sh.experts << "/" << sh.slots << "/" << sh.gpus << " trial " << trial;
      double b_df = eep::eplb::balancedness(w, df);
      for (bool hier : {true, false}) {
        if (hier && sh.groups % sh.nodes != 0) continue;
        auto ds = eep::eplb::deepseek_plan(w, sh.slots, sh.groups, sh.nodes, sh.gpus, hier);
        double b_ds = eep::eplb::balancedness(w, ds);
        if (eep::eplb::duplicate_replicas(ds) == 0) {
          ++dup_free;
          EXPECT_GE(b_df + 1e-12, b_ds) << sh.experts << "/" << sh.slots << " trial " << trial;
        } else {
          EXPECT_GE(b_df, 0.75 * b_ds) << sh.experts << "/" << sh.slots << " trial " << trial;
        }
      }
    }
  }
  EXPECT_GT(dup_free, 0);
}

// The replica-count search on small shapes (default_algo.cc, step 6 in docs/eplb.md): DeepSeek
// layouts with duplicates beat the default on far fewer layers than without it (fixed seed;
// before the search 71 of these 1,200 comparisons were lost, with it 28).
TEST(EplbDefault, CountSearchLosesRarelyToDuplicateLayouts) {
  struct S {
    int experts, slots, gpus, nodes, groups;
  };
  const S shapes[] = {{12, 16, 8, 2, 4}, {8, 12, 4, 2, 2}, {12, 16, 4, 1, 1}};
  std::mt19937 rng(7);
  int lost = 0, compared = 0;
  for (const S& sh : shapes) {
    for (int trial = 0; trial < 200; ++trial) {
      auto w = random_load(rng, 1, sh.experts, trial % 3);
      auto df = eep::eplb::rebalance(w, opts(sh.slots, sh.groups, sh.nodes, sh.gpus, Algo::kDefault));
      double b_df = eep::eplb::balancedness(w, df);
      for (bool hier : {true, false}) {
        if (hier && sh.groups % sh.nodes != 0) continue;
        auto ds = eep::eplb::deepseek_plan(w, sh.slots, sh.groups, sh.nodes, sh.gpus, hier);
        ++compared;
        lost += eep::eplb::balancedness(w, ds) > b_df + 1e-12;
      }
    }
  }
  EXPECT_LE(lost, 45) << "of " << compared;
}
