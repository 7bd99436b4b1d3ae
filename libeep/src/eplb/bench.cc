// eep-bench eplb: plan time, balancedness and movement at DeepSeek-V3 sizes (58 MoE layers x 256
// experts; 288 slots on 32 GPUs / 4 nodes and 320 slots on 64 GPUs / 8 nodes; 8 groups).
// Loads are skewed and seeded: per layer a Zipf(0.9) popularity over a random permutation of the
// experts times lognormal(0, 0.5) noise. Drift multiplies every load by U(0.9, 1.1) per step.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <numeric>
#include <random>

#include "eep/cli.h"
#include "eep/common.h"
#include "eep/eplb.h"

namespace eep::eplb {

namespace {

using Matrix = std::vector<std::vector<double>>;

struct Config {
  const char* name;
  int layers, experts, slots, gpus, nodes, groups;
};

Matrix skewed_load(std::mt19937_64& rng, int layers, int experts) {
  std::lognormal_distribution<double> noise(0.0, 0.5);
  Matrix m(layers, std::vector<double>(experts));
  std::vector<int> perm(experts);
  for (auto& row : m) {
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int r = 0; r < experts; ++r)
      row[perm[r]] = std::round(1e5 / std::pow(r + 1.0, 0.9) * noise(rng));
  }
  return m;
}

Matrix drifted(std::mt19937_64& rng, const Matrix& m, double amount) {
  std::uniform_real_distribution<double> u(1 - amount, 1 + amount);
  Matrix out = m;
  for (auto& row : out)
    for (auto& v : row) v = std::round(v * u(rng));
  return out;
}

template <class F>
double median_ms(int runs, F&& f) {
  std::vector<double> t;
  for (int i = 0; i < runs; ++i) {
    auto a = std::chrono::steady_clock::now();
    f();
    auto b = std::chrono::steady_clock::now();
    t.push_back(std::chrono::duration<double, std::milli>(b - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int run_bench(int argc, char** argv) {
  CLI::App app{"EPLB benchmark at DeepSeek-V3 sizes (one thread).", "eep-bench eplb"};
  eep::cli::add_version_flag(app);
  int runs = 21, steps = 5;
  uint64_t seed = 1;
  double drift = 0.10;
  std::string json_path;
  app.add_option("--runs", runs, "timed runs per measurement (median reported)")
      ->check(CLI::PositiveNumber)->envname("EEP_BENCH_RUNS");
  app.add_option("--steps", steps, "drift steps for the movement figures")
      ->check(CLI::PositiveNumber)->envname("EEP_BENCH_STEPS");
  app.add_option("--seed", seed, "load generator seed")->envname("EEP_BENCH_SEED");
  app.add_option("--drift", drift, "relative load drift per step")->envname("EEP_BENCH_DRIFT");
  app.add_option("--json", json_path, "write the figures as JSON to FILE")
      ->envname("EEP_BENCH_JSON");
  if (auto code = eep::cli::parse(app, argc, argv)) return *code;

  const Config configs[] = {{"v3-288x32", 58, 256, 288, 32, 4, 8},
                            {"v3-320x64", 58, 256, 320, 64, 8, 8}};
  nlohmann::json out = {{"benchmark", "eplb"},
                        {"runs", runs},
                        {"steps", steps},
                        {"seed", seed},
                        {"drift", drift},
                        {"load", "per layer Zipf(0.9) over a random expert permutation x "
                                 "lognormal(0, 0.5); drift x U(1-d, 1+d) per step"},
                        {"configs", nlohmann::json::array()}};
  std::printf("%-10s %-22s %10s %12s %10s %14s\n", "config", "mode", "plan ms", "balancedness",
              "dup GPUs", "moved/step");
  for (const Config& c : configs) {
    std::mt19937_64 rng(seed);
    Matrix load = skewed_load(rng, c.layers, c.experts);
    Options o;
    o.num_gpus = c.gpus;
    o.num_nodes = c.nodes;
    o.num_groups = c.groups;
    o.num_slots = c.slots;
    Options ods = o;
    ods.algo = Algo::kDeepseek;

    Plan p_ds, p_glob, p_def;
    double t_ds = median_ms(runs, [&] { p_ds = rebalance(load, ods); });
    double t_glob = median_ms(runs, [&] {
      p_glob = deepseek_plan(load, c.slots, c.groups, c.nodes, c.gpus, false);
    });
    double t_def = median_ms(runs, [&] { p_def = rebalance(load, o); });

    // Drift: movement-aware default against re-planning from scratch (default and deepseek).
    std::mt19937_64 drng(seed + 1000);
    Plan cur_aware = p_def, cur_def = p_def, cur_ds = p_ds;
    Matrix w = load;
    int64_t moved_aware = 0, moved_def = 0, moved_ds = 0;
    double b_aware = 0, b_best = 0, b_ds_drift = 0, t_aware_sum = 0;
    for (int s = 0; s < steps; ++s) {
      w = drifted(drng, w, drift);
      Options oa = o;
      oa.current = &cur_aware;
      Plan next_aware;
      t_aware_sum += median_ms(1, [&] { next_aware = rebalance(w, oa); });
      Plan next_def = rebalance(w, o);
      Plan next_ds = rebalance(w, ods);
      moved_aware += movement(cur_aware, next_aware, 1).moved_slots;
      moved_def += movement(cur_def, next_def, 1).moved_slots;
      moved_ds += movement(cur_ds, next_ds, 1).moved_slots;
      b_aware += balancedness(w, next_aware);
      b_best += balancedness(w, next_def);
      b_ds_drift += balancedness(w, next_ds);
      cur_aware = next_aware, cur_def = next_def, cur_ds = next_ds;
    }
    double total = static_cast<double>(c.layers) * c.slots;
    auto frac = [&](int64_t m) { return m / (total * steps); };

    struct Row {
      const char* mode;
      double ms, bal;
      int64_t dups;
      double moved;  // fraction per step, < 0 when not measured
    };
    std::vector<Row> rows = {
        {"deepseek", t_ds, balancedness(load, p_ds), duplicate_replicas(p_ds), frac(moved_ds)},
        {"deepseek-global", t_glob, balancedness(load, p_glob), duplicate_replicas(p_glob), -1},
        {"default (replan)", t_def, balancedness(load, p_def), duplicate_replicas(p_def),
         frac(moved_def)},
        {"default --current", t_aware_sum / steps, b_aware / steps, duplicate_replicas(cur_aware),
         frac(moved_aware)},
    };
    nlohmann::json jc = {{"name", c.name},     {"layers", c.layers}, {"experts", c.experts},
                         {"slots", c.slots},   {"gpus", c.gpus},     {"nodes", c.nodes},
                         {"groups", c.groups}, {"modes", nlohmann::json::array()}};
    for (const Row& r : rows) {
      char moved[32] = "-";
      if (r.moved >= 0) std::snprintf(moved, sizeof moved, "%.1f%%", 100 * r.moved);
      std::printf("%-10s %-22s %10.3f %12.4f %10lld %14s\n", c.name, r.mode, r.ms, r.bal,
                  static_cast<long long>(r.dups), moved);
      nlohmann::json jr = {{"mode", r.mode},
                           {"plan_ms_median", r.ms},
                           {"balancedness", r.bal},
                           {"duplicate_replicas", r.dups}};
      if (r.moved >= 0) jr["moved_fraction_per_step"] = r.moved;
      jc["modes"].push_back(jr);
    }
    jc["drift_balancedness"] = {{"default_current", b_aware / steps},
                                {"default_replan", b_best / steps},
                                {"deepseek_replan", b_ds_drift / steps}};
    out["configs"].push_back(jc);
  }
  // Elastic scaling: the plan for one size as --current of a plan for the other (same load; GPU
  // g keeps GPU g). moved = rewritten slots / slots of the new plan.
  out["scaling"] = nlohmann::json::array();
  for (int dir = 0; dir < 2; ++dir) {
    const Config& from = configs[dir == 0 ? 1 : 0];
    const Config& to = configs[dir == 0 ? 0 : 1];
    std::mt19937_64 rng(seed);
    Matrix load = skewed_load(rng, from.layers, from.experts);
    auto options = [](const Config& c) {
      Options o;
      o.num_gpus = c.gpus, o.num_nodes = c.nodes, o.num_groups = c.groups, o.num_slots = c.slots;
      return o;
    };
    Plan cur = rebalance(load, options(from));
    Options o = options(to);
    Plan best = rebalance(load, o);
    o.current = &cur;
    Plan next;
    double ms = median_ms(std::max(1, runs / 4), [&] { next = rebalance(load, o); });
    double moved = static_cast<double>(movement(cur, next, 1).moved_slots) / (to.layers * to.slots);
    double replan = static_cast<double>(movement(cur, best, 1).moved_slots) / (to.layers * to.slots);
    std::printf("%-10s %-22s %10.3f %12.4f %10lld %13.1f%% (replan %.1f%%, best %.4f)\n",
                dir == 0 ? "shrink" : "grow", (std::string(from.name) + "->" + to.name).c_str(), ms,
                balancedness(load, next), static_cast<long long>(duplicate_replicas(next)),
                100 * moved, 100 * replan, balancedness(load, best));
    out["scaling"].push_back({{"from", from.name},
                              {"to", to.name},
                              {"plan_ms_median", ms},
                              {"balancedness", balancedness(load, next)},
                              {"balancedness_best", balancedness(load, best)},
                              {"duplicate_replicas", duplicate_replicas(next)},
                              {"moved_fraction", moved},
                              {"moved_fraction_replan", replan}});
  }
  std::printf("(plan ms: median of %d runs, whole plan of all layers, one thread; "
              "'default --current' row: balancedness and time averaged over %d drift steps)\n",
              runs, steps);
  if (!json_path.empty()) {
    std::ofstream f(json_path);
    if (!f) {
      std::cerr << "eep-bench: cannot write " << json_path << "\n";
      return kExitRuntime;
    }
    f << out.dump(2) << "\n";
  }
  return kExitOk;
}

}  // namespace eep::eplb
