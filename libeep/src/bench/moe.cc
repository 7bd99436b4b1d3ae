// eep-bench moe: MoE layer throughput per backend. One layer of the model (--layer) is loaded as
// a one-layer model with every expert on one rank, a group of one member forms through an
// in-process store, and Backend::benchmark_moe runs the layer's FFN (route, dispatch, experts,
// combine) on R seeded rows for each R of --rows. Reported per R: time per call, rows/s,
// achieved FLOP/s, and the weight bytes the call must read against a memory-bandwidth floor.
#include <cstdio>
#include <iostream>

#include "bench/micro.h"
#include "eep/bench.h"
#include "eep/cli.h"
#include "eep/common.h"

namespace eep::bench {

namespace {

constexpr const char* kTool = "eep-bench moe";

struct Options {
  CommonOptions common;
  std::string rows = "1,8,32,256";
  int iters = 10;
  int layer = 0;
  double bandwidth_gbs = 0;
};

}  // namespace

int run_moe(int argc, char** argv) {
  Options o;
  CLI::App app{"eep-bench moe: MoE layer throughput per backend", kTool};
  eep::cli::add_version_flag(app);
  add_common_options(app, o.common);
  app.add_option("--rows", o.rows, "comma-separated row (token) counts per call")
      ->envname("EEP_ROWS")->capture_default_str();
  app.add_option("--iters", o.iters, "timed calls per row count, after one warm-up call")
      ->envname("EEP_ITERS")->check(CLI::Range(1, 1000000))->capture_default_str();
  app.add_option("--layer", o.layer, "which layer's router and experts")
      ->envname("EEP_LAYER")->check(CLI::NonNegativeNumber)->capture_default_str();
  add_bandwidth_option(app, o.bandwidth_gbs);
  if (auto code = cli::parse(app, argc, argv)) return *code;

  // Every check before any work.
  std::unique_ptr<WeightSource> src, layer;
  std::vector<int> rows;
  try {
    src = check_common_options(o.common);
    rows = parse_int_list("--rows", o.rows, 1, 65536);
    layer = one_layer_view(*src, o.layer);
  } catch (const Error& e) {
    return usage_error(kTool, e.what());
  }
  const ModelConfig& cfg = layer->config();
  const size_t elem = weight_elem_bytes(o.common.backend);
  const double hidden = cfg.hidden_size, inter = cfg.moe_intermediate_size;
  const double experts = cfg.num_experts, k = cfg.num_experts_per_tok;
  const double expert_bytes = 3 * hidden * inter * static_cast<double>(elem);
  const double router_bytes = experts * hidden * static_cast<double>(elem);

  return run_benchmark(kTool, o.common, [&] {
    BackendOptions bo;
    bo.num_kv_blocks = 1;  // no attention runs
    bo.device = o.common.device;
    SingleRank one = start_single_rank(o.common, *layer, bo, "eep-bench/moe");
    Backend& backend = *one.backend;
    auto [bw, bw_source] = floor_bandwidth(o.common.backend, o.bandwidth_gbs, o.common.device);

    nlohmann::json config = common_config(o.common);
    config.update({{"rows", rows}, {"iters", o.iters}, {"layer", o.layer}});
    nlohmann::json report = {{"benchmark", "moe"},
              {"config", config},
              {"model", {{"name", cfg.name}, {"hidden", cfg.hidden_size},
                         {"moe_intermediate", cfg.moe_intermediate_size}, {"experts", cfg.num_experts},
                         {"top_k", cfg.num_experts_per_tok}, {"weight_bytes_per_element", elem}}},
              {"machine", machine_info()},
              {"bandwidth_gbs", bw},
              {"bandwidth_source", bw_source}};
    std::printf("eep-bench moe: backend %s, %s layer %d (hidden %d, %d experts top-%d, intermediate %d), "
                "%d iterations\n",
                o.common.backend.c_str(), o.common.model.c_str(), o.layer, cfg.hidden_size,
                cfg.num_experts, cfg.num_experts_per_tok, cfg.moe_intermediate_size, o.iters);
    std::printf("memory bandwidth for the floor: %.1f GB/s (%s)\n", bw, bw_source.c_str());
    std::printf("%6s %10s %12s %9s %8s %13s %9s %9s\n", "rows", "ms/call", "rows/s", "GFLOP/s",
                "experts", "weights read", "floor ms", "of floor");
    nlohmann::json results = nlohmann::json::array();
    for (int r : rows) {
      const std::vector<int64_t> before = backend.expert_load()[0];
      const double s = backend.benchmark_moe(0, r, o.iters, *one.group);
      const std::vector<int64_t>& after = backend.expert_load()[0];
      const int bound = static_cast<int>(std::min(experts, r * k));
      int touched = 0;
      for (size_t e = 0; e < after.size() && e < before.size(); ++e) touched += after[e] != before[e];
      if (touched == 0) touched = bound;  // the backend does not count load: the bound
      const double flops = 2.0 * r * (k * 3 * hidden * inter + experts * hidden);
      const double bytes = router_bytes + touched * expert_bytes;
      const double floor_s = bytes / (bw * 1e9);
      results.push_back({{"rows", r},
                         {"seconds_per_call", s},
                         {"rows_per_s", r / s},
                         {"flops_per_call", flops},
                         {"gflops_per_s", flops / s / 1e9},
                         {"experts_touched", touched},
                         {"experts_touched_bound", bound},
                         {"weight_bytes_read", bytes},
                         {"floor_s", floor_s},
                         {"fraction_of_floor", floor_s / s}});
      std::printf("%6d %10.3f %12.1f %9.2f %8d %13s %9.3f %8.1f%%\n", r, s * 1e3, r / s, flops / s / 1e9,
                  touched, human_bytes(bytes).c_str(), floor_s * 1e3, 100.0 * floor_s / s);
      std::fflush(stdout);
    }
    report["results"] = results;
    return report;
  });
}

}  // namespace eep::bench
