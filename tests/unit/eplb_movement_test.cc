// eplb: movement-aware mode on drifting loads and across GPU counts (elastic scaling), plan JSON
// round trip, load parsing, movement.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>

#include "eep/common.h"
#include "eep/eplb.h"

using eep::eplb::Algo;
using eep::eplb::Options;
using eep::eplb::Plan;
using Matrix = std::vector<std::vector<double>>;

namespace {

Matrix skewed(std::mt19937& rng, int layers, int experts) {
  std::lognormal_distribution<double> logn(0.0, 1.0);
  Matrix m(layers, std::vector<double>(experts));
  for (auto& row : m)
    for (auto& v : row) v = logn(rng) * 100.0;
  return m;
}

// Each load multiplied by a factor in [1 - drift, 1 + drift].
Matrix drift(std::mt19937& rng, const Matrix& m, double amount) {
  std::uniform_real_distribution<double> u(1 - amount, 1 + amount);
  Matrix out = m;
  for (auto& row : out)
    for (auto& v : row) v *= u(rng);
  return out;
}

Options opts(int slots, int groups, int nodes, int gpus, Algo algo) {
  Options o;
  o.num_slots = slots;
  o.num_groups = groups;
  o.num_nodes = nodes;
  o.num_gpus = gpus;
  o.algo = algo;
  return o;
}

// The movement-aware plan for loads w from `current`, checked: valid, and as balanced as `best`
// (the plan without --current on the same loads) within the tolerance.
Plan aware_plan(const Matrix& w, const Options& o, const Plan& current, const Plan& best) {
  Options aware = o;
  aware.current = &current;
  Plan next = eep::eplb::rebalance(w, aware);
  next.validate();
  EXPECT_GE(eep::eplb::balancedness(w, next),
            eep::eplb::balancedness(w, best) * (1 - o.tolerance) - 1e-9);
  return next;
}

// One 10% drift step of the movement-aware mode from `current` (checked by aware_plan, and
// without duplicates); `current` becomes the new plan. Returns the slots it moved and those a
// plain re-plan (without --current) would have moved.
struct DriftStep {
  int64_t moved, replan_moved;
};
DriftStep aware_drift_step(std::mt19937& rng, Matrix& w, const Options& o, Plan& current) {
  w = drift(rng, w, 0.1);
  Plan best = eep::eplb::rebalance(w, o);
  Plan next = aware_plan(w, o, current, best);
  EXPECT_EQ(eep::eplb::duplicate_replicas(next), 0);
  DriftStep step{eep::eplb::movement(current, next, 1).moved_slots,
                 eep::eplb::movement(current, best, 1).moved_slots};
  current = std::move(next);
  return step;
}

Plan make_plan(std::vector<std::vector<int>> rows, int logical, int gpus) {
  Plan p;
  p.num_layers = static_cast<int>(rows.size());
  p.num_slots = static_cast<int>(rows[0].size());
  p.num_logical = logical;
  p.num_gpus = gpus;
  p.phy2log = std::move(rows);
  p.finalize();
  return p;
}

}  // namespace

TEST(EplbMovement, SameLoadMovesNothing) {
  std::mt19937 rng(3);
  auto w = skewed(rng, 4, 64);
  auto o = opts(80, 8, 2, 16, Algo::kDefault);
  auto plan = eep::eplb::rebalance(w, o);
  o.current = &plan;
  auto again = eep::eplb::rebalance(w, o);
  EXPECT_EQ(eep::eplb::movement(plan, again, 1).moved_slots, 0);
}

TEST(EplbMovement, DriftingLoadsMoveLittleWithinTolerance) {
  std::mt19937 rng(11);
  const int layers = 8, experts = 256, slots = 288, gpus = 32, nodes = 4, groups = 8;
  auto w = skewed(rng, layers, experts);
  auto o = opts(slots, groups, nodes, gpus, Algo::kDefault);
  Plan current = eep::eplb::rebalance(w, o);
  Plan current_ds = eep::eplb::rebalance(w, opts(slots, groups, nodes, gpus, Algo::kDeepseek));
  int64_t aware_moves = 0, replan_moves = 0, ds_moves = 0, total = 0;
  for (int step = 0; step < 4; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    DriftStep moved = aware_drift_step(rng, w, o, current);
    aware_moves += moved.moved;
    replan_moves += moved.replan_moved;
    auto ds_next = eep::eplb::rebalance(w, opts(slots, groups, nodes, gpus, Algo::kDeepseek));
    ds_moves += eep::eplb::movement(current_ds, ds_next, 1).moved_slots;
    total += static_cast<int64_t>(layers) * slots;
    current_ds = ds_next;
  }
  EXPECT_LT(aware_moves * 4, replan_moves) << aware_moves << " vs " << replan_moves;
  EXPECT_LT(aware_moves * 4, ds_moves) << aware_moves << " vs " << ds_moves;
  EXPECT_LE(aware_moves * 10, total) << aware_moves << " of " << total;
}

// DeepSeek-V3's larger shape (320 slots on 64 GPUs, 5 per GPU), where one swap per overloaded GPU
// is costly: with swap chains and the pilot searches at each layer's allocated target the search
// moves 9.95% of the slots per 10% drift step on these loads (1528 slots; the searches before the
// pilot: 10.07%, before the chains and target searches: 10.62%), within the tolerance and without
// duplicates.
TEST(EplbMovement, ChainsAndTargetSearchesMoveLessAt320Slots) {
  std::mt19937 rng(5);
  const int layers = 16, experts = 256, slots = 320, gpus = 64;
  std::lognormal_distribution<double> noise(0.0, 0.5);
  Matrix w(layers, std::vector<double>(experts));
  std::vector<int> perm(experts);
  for (auto& row : w) {  // Zipf(0.9) popularity over a random permutation, lognormal noise
    for (int e = 0; e < experts; ++e) perm[e] = e;
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int r = 0; r < experts; ++r) row[perm[r]] = 1e5 / std::pow(r + 1.0, 0.9) * noise(rng);
  }
  auto o = opts(slots, 8, 8, gpus, Algo::kDefault);
  Plan current = eep::eplb::rebalance(w, o);
  int64_t moved = 0;
  for (int step = 0; step < 3; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    moved += aware_drift_step(rng, w, o, current).moved;
  }
  EXPECT_LE(moved, static_cast<int64_t>(0.104 * 3 * layers * slots)) << moved;
}

// From a current plan that holds duplicates (DeepSeek's hierarchical layout): the search then
// evaluates its candidates generically (its shortcut gains assume one replica per GPU and
// expert); the plan still meets the tolerance and moves fewer slots than a re-plan.
TEST(EplbMovement, FromPlanWithDuplicatesWithinTolerance) {
  std::mt19937 rng(5);
  const int layers = 6, experts = 64, slots = 80, gpus = 16, nodes = 2, groups = 8;
  auto w = skewed(rng, layers, experts);
  Plan current = eep::eplb::rebalance(w, opts(slots, groups, nodes, gpus, Algo::kDeepseek));
  ASSERT_GT(eep::eplb::duplicate_replicas(current), 0);
  w = drift(rng, w, 0.1);
  auto o = opts(slots, groups, nodes, gpus, Algo::kDefault);
  auto best = eep::eplb::rebalance(w, o);
  auto next = aware_plan(w, o, current, best);
  EXPECT_LT(eep::eplb::movement(current, next, 1).moved_slots,
            eep::eplb::movement(current, best, 1).moved_slots);
}

TEST(EplbMovement, ToleranceZeroStillMatchesBest) {
  std::mt19937 rng(5);
  auto w = skewed(rng, 3, 32);
  auto o = opts(48, 4, 2, 8, Algo::kDefault);
  auto current = eep::eplb::uniform_plan(3, 32, 48, 8);
  o.tolerance = 0.0;
  auto best = eep::eplb::rebalance(w, o);
  o.current = &current;
  auto next = eep::eplb::rebalance(w, o);
  EXPECT_GE(eep::eplb::balancedness(w, next), eep::eplb::balancedness(w, best) - 1e-9);
  EXPECT_LE(eep::eplb::movement(current, next, 1).moved_slots,
            eep::eplb::movement(current, best, 1).moved_slots);
}

TEST(EplbMovement, AlignKeepsBalanceAndCountsMoves) {
  std::mt19937 rng(9);
  auto w = skewed(rng, 2, 16);
  auto a = eep::eplb::rebalance(w, opts(24, 1, 1, 8, Algo::kDefault));
  // Same placement with GPUs relabelled: aligning recovers it with no moves.
  Plan shuffled = a;
  for (auto& row : shuffled.phy2log) std::rotate(row.begin(), row.begin() + 3, row.end());
  shuffled.finalize();
  auto aligned = eep::eplb::align_to(a, shuffled);
  EXPECT_EQ(eep::eplb::movement(a, aligned, 7).moved_slots, 0);
  auto m = eep::eplb::movement(a, shuffled, 7);
  EXPECT_GT(m.moved_slots, 0);
  EXPECT_EQ(m.moved_bytes, m.moved_slots * 7);
}

TEST(EplbPlan, JsonRoundTripAndValidation) {
  auto p = eep::eplb::uniform_plan(2, 6, 8, 4);
  auto q = Plan::from_json(p.to_json());
  EXPECT_EQ(q.phy2log, p.phy2log);
  EXPECT_EQ(q.logcnt, p.logcnt);
  EXPECT_EQ(q.log2phy, p.log2phy);
  auto j = p.to_json();
  // JSON log2phy: [layers][experts][max replicas], padded with -1.
  EXPECT_EQ(p.log2phy.max_replicas(), 2);
  EXPECT_EQ(j["log2phy"][1][0], nlohmann::json({0, 6}));
  EXPECT_EQ(j["log2phy"][1][5], nlohmann::json({5, -1}));
  j["phy2log"][0][0] = 99;
  EXPECT_THROW(Plan::from_json(j), eep::Error);
  j = p.to_json();
  j["phy2log"][1] = {0, 1, 2, 3, 4, 5, 0};  // ragged
  EXPECT_THROW(Plan::from_json(j), eep::Error);
  j = p.to_json();
  j["num_gpus"] = 3;  // 8 slots on 3 GPUs
  EXPECT_THROW(Plan::from_json(j), eep::Error);
  j = p.to_json();
  j["logcnt"][0][0] = 5;
  EXPECT_THROW(Plan::from_json(j), eep::Error);
}

TEST(EplbIo, ParsesJsonCsvAndRejectsBadInput) {
  auto a = eep::eplb::parse_load("{\"load\": [[1, 2], [3, 4.5]], \"num_slots\": 4}");
  EXPECT_EQ(a, (Matrix{{1, 2}, {3, 4.5}}));
  auto b = eep::eplb::parse_load("# stats\n1, 2\n\n3,4.5\n");
  EXPECT_EQ(b, (Matrix{{1, 2}, {3, 4.5}}));
  EXPECT_EQ(eep::eplb::parse_load("[[1,2]]"), (Matrix{{1, 2}}));
  EXPECT_THROW(eep::eplb::parse_load(""), eep::Error);
  EXPECT_THROW(eep::eplb::parse_load("{\"nope\": 1}"), eep::Error);
  EXPECT_THROW(eep::eplb::parse_load("1,a"), eep::Error);
  EXPECT_THROW(eep::eplb::parse_load("{\"load\": [[1, null]]}"), eep::Error);
  auto nan = eep::eplb::parse_load("1,nan");
  Options o;
  o.num_gpus = 1;
  o.num_slots = 2;
  EXPECT_THROW(eep::eplb::check_inputs(nan, o), eep::Error);
  EXPECT_THROW(eep::eplb::check_inputs(Matrix{{1, 2}, {1}}, o), eep::Error);
  EXPECT_THROW(eep::eplb::check_inputs(Matrix{{1, -2}}, o), eep::Error);
  EXPECT_THROW(eep::eplb::check_inputs(Matrix{}, o), eep::Error);
  EXPECT_NO_THROW(eep::eplb::check_inputs(Matrix{{1, 2}}, o));
}

// Elastic scaling: the current plan has another GPU (and slot) count. A GPU that remains keeps
// its experts where it can; the plan stays within the tolerance of the best plan for the new
// shape and moves far fewer slots than re-planning.
TEST(EplbMovement, ScalingKeepsExpertsOnRemainingGpus) {
  std::mt19937 rng(21);
  auto w = skewed(rng, 4, 64);
  const Plan cur = eep::eplb::rebalance(w, opts(80, 1, 1, 16, Algo::kDefault));  // 5 per GPU
  struct Shape {
    int slots, gpus;
  };
  for (Shape sh : {Shape{80, 8}, Shape{72, 8}, Shape{64, 16}, Shape{96, 24}, Shape{120, 24},
                   Shape{80, 20}}) {
    auto o = opts(sh.slots, 1, 1, sh.gpus, Algo::kDefault);
    auto best = eep::eplb::rebalance(w, o);
    o.current = &cur;
    auto next = eep::eplb::rebalance(w, o);
    SCOPED_TRACE(std::to_string(sh.slots) + " slots on " + std::to_string(sh.gpus) + " GPUs");
    ASSERT_NO_THROW(next.validate());
    EXPECT_EQ(next.num_gpus, sh.gpus);
    EXPECT_EQ(next.num_slots, sh.slots);
    EXPECT_EQ(eep::eplb::duplicate_replicas(next), 0);
    EXPECT_GE(eep::eplb::balancedness(w, next),
              eep::eplb::balancedness(w, best) * (1 - o.tolerance) - 1e-9);
    auto moved = eep::eplb::movement(cur, next, 1).moved_slots;
    auto replan = eep::eplb::movement(cur, best, 1).moved_slots;
    EXPECT_LT(moved, replan);
    // Slots of new GPUs (and new slot indices) always count as moved.
    int k_new = sh.slots / sh.gpus, k_old = 5;
    int64_t fresh = 0;
    for (int g = 0; g < sh.gpus; ++g) fresh += g < 16 ? std::max(0, k_new - k_old) : k_new;
    EXPECT_GE(moved, fresh * 4);
  }
}

TEST(EplbMovement, KeepMapsNewGpusToCurrentOnes) {
  std::mt19937 rng(22);
  auto w = skewed(rng, 2, 16);
  const Plan cur = eep::eplb::rebalance(w, opts(24, 1, 1, 8, Algo::kDefault));  // 3 per GPU
  // Same load and shape, GPUs 0 and 7 leave and two new ones come in: slots of the remaining
  // GPUs stay where they were (they keep a balanced plan), the new GPUs take the lost experts.
  auto o = opts(24, 1, 1, 8, Algo::kDefault);
  o.current = &cur;
  o.keep = {-1, 1, 2, 3, 4, 5, 6, -1};
  auto next = eep::eplb::rebalance(w, o);
  ASSERT_NO_THROW(next.validate());
  auto m = eep::eplb::movement(cur, next, 10, o.keep);
  EXPECT_GE(m.moved_slots, 2 * 3 * 2);  // the two new GPUs' slots, both layers
  EXPECT_EQ(m.moved_bytes, m.moved_slots * 10);
  // Identity keep on equal shapes is the default.
  EXPECT_EQ(eep::eplb::movement(cur, cur, 1, {0, 1, 2, 3, 4, 5, 6, 7}).moved_slots, 0);
  // Bad maps.
  for (std::vector<int> bad : {std::vector<int>{0, 1}, {0, 1, 2, 3, 4, 5, 6, 8},
                               {0, 0, 2, 3, 4, 5, 6, 7}, {0, 1, 2, 3, 4, 5, 6, -2}}) {
    o.keep = bad;
    EXPECT_THROW(eep::eplb::rebalance(w, o), eep::Error);
  }
  o.current = nullptr;
  o.keep = {0, 1, 2, 3, 4, 5, 6, 7};
  EXPECT_THROW(eep::eplb::rebalance(w, o), eep::Error);  // keep without current
}

TEST(EplbMovement, MovementAcrossShapesIsPositional) {
  // 2 GPUs x 2 slots -> 3 GPUs x 1 slot: GPU 0 keeps slot 0, GPU 1 keeps slot 0 (index 2 of the
  // old plan), GPU 2 is new.
  Plan from = make_plan({{0, 1, 2, 0}}, 3, 2);
  Plan to = make_plan({{0, 2, 1}}, 3, 3);
  EXPECT_EQ(eep::eplb::movement(from, to, 1).moved_slots, 1);
  EXPECT_EQ(eep::eplb::movement(from, to, 1, {1, 0, -1}).moved_slots, 3);
  Plan other = make_plan({{0, 1, 2, 3}}, 4, 2);
  EXPECT_THROW(eep::eplb::movement(from, other, 1), eep::Error);  // expert counts differ
}
