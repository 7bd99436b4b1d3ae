// eep-bench decode: decode throughput of one engine through the Backend interface. For each
// batch size B: B sequences of --context seeded random tokens are prefilled through
// Backend::forward in chunks, then --steps decode steps of B rows (every sequence samples,
// greedy on the host) are timed. Reported per B: tokens/s, ms per step, and a memory-bandwidth
// floor: the bytes a step must read (dense weights, the distinct experts the step's tokens
// reached in each layer, the KV cache of every sequence) over --bandwidth-gbs.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

#include "bench/micro.h"
#include "eep/bench.h"
#include "eep/cli.h"
#include "eep/common.h"

namespace eep::bench {

namespace {

constexpr const char* kTool = "eep-bench decode";
constexpr int kWarmupSteps = 2;  // untimed decode steps before the timed ones

struct Options {
  CommonOptions common;
  std::string batch = "1,8,32";
  int context = 64;
  int steps = 16;
  int prefill_chunk = 256;
  int block_size = 16;
  double bandwidth_gbs = 0;
};

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}


// Distinct experts (slots: one rank holds every expert once) whose load moved between a and b,
// summed over layers.
int64_t touched(const std::vector<std::vector<int64_t>>& a, const std::vector<std::vector<int64_t>>& b) {
  int64_t n = 0;
  for (size_t l = 0; l < a.size() && l < b.size(); ++l)
    for (size_t s = 0; s < a[l].size() && s < b[l].size(); ++s) n += a[l][s] != b[l][s];
  return n;
}

struct BatchRun {
  const Options& o;
  const ModelConfig& cfg;
  Backend& backend;
  Group& group;
  int blocks_per_seq;
  size_t elem;
  double bw;

  nlohmann::json run(int batch) {
    std::vector<std::vector<int32_t>> tables(batch);
    for (int i = 0; i < batch; ++i)
      for (int b = 0; b < blocks_per_seq; ++b) tables[i].push_back(i * blocks_per_seq + b);
    std::mt19937_64 rng(o.common.seed * 1000003ULL + static_cast<uint64_t>(batch));
    std::uniform_int_distribution<int32_t> tok(0, cfg.vocab_size - 1);
    std::vector<int32_t> next(batch), sampled;
    // Greedy, sampled where the backend samples (on the GPU: no logits copy to the host).
    const SamplingParams greedy;
    std::vector<const SamplingParams*> params;
    std::vector<int64_t> positions;

    // Prefill in chunks of at most --prefill-chunk rows; a sequence may span chunks.
    const auto p0 = Clock::now();
    int seq = 0, done = 0;  // first position of `seq` not yet prefilled
    while (seq < batch) {
      StepBatch b;
      std::vector<int> samplers;
      while (seq < batch && b.num_rows() < o.prefill_chunk) {
        const int n = std::min(o.context - done, o.prefill_chunk - b.num_rows());
        SeqSlice s{tables[seq].data(), blocks_per_seq, done, b.num_rows(), n, done + n == o.context};
        for (int i = 0; i < n; ++i) {
          b.tokens.push_back(tok(rng));
          b.positions.push_back(done + i);
        }
        b.seqs.push_back(s);
        if (s.sample) samplers.push_back(seq);
        done += n;
        if (done == o.context) {
          ++seq;
          done = 0;
        }
      }
      params.assign(samplers.size(), &greedy);
      positions.assign(samplers.size(), o.context);
      backend.forward_tokens(b, group, params, positions, sampled);
      for (size_t i = 0; i < samplers.size(); ++i) next[samplers[i]] = sampled[i];
    }
    const double prefill_s = seconds_since(p0);

    // Decode: every sequence one row per step.
    std::vector<double> step_s;
    int64_t experts = 0;
    double kv_bytes = 0;
    const double kv_row = 2.0 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * static_cast<double>(elem);
    // The first kWarmupSteps decode steps are not timed: a backend may set up per-shape state
    // there (the CUDA backend runs the first step of a shape eagerly and captures the second
    // as a graph).
    const Backend::Counters c0 = backend.counters();
    for (int step = 0; step < kWarmupSteps + o.steps; ++step) {
      const int pos = o.context + step;
      StepBatch b;
      for (int i = 0; i < batch; ++i) {
        b.tokens.push_back(next[i]);
        b.positions.push_back(pos);
        b.seqs.push_back(SeqSlice{tables[i].data(), blocks_per_seq, pos, i, 1, true});
      }
      const auto load = backend.expert_load();
      params.assign(batch, &greedy);
      positions.assign(batch, pos + 1);
      const auto t0 = Clock::now();
      backend.forward_tokens(b, group, params, positions, sampled);
      const double s = seconds_since(t0);
      next = sampled;
      if (step < kWarmupSteps) continue;
      step_s.push_back(s);
      experts += touched(load, backend.expert_load());
      kv_bytes += static_cast<double>(batch) * (pos + 1) * kv_row;  // each row reads 0..pos
    }
    const Backend::Counters c1 = backend.counters();
    double total = 0;
    for (double s : step_s) total += s;
    const double mean_s = total / o.steps;
    const double experts_per_step = static_cast<double>(experts) / o.steps;
    const double embed = static_cast<double>(cfg.vocab_size) * cfg.hidden_size * static_cast<double>(elem);
    // Every dense weight but the embedding, of which each row reads one line.
    const double dense = static_cast<double>(dense_bytes(cfg, elem)) - embed +
                         static_cast<double>(batch) * cfg.hidden_size * static_cast<double>(elem);
    const double expert_b = experts_per_step * 3.0 * cfg.hidden_size * cfg.moe_intermediate_size *
                            static_cast<double>(elem);
    const double kv = kv_bytes / o.steps;
    const double bytes = dense + expert_b + kv;
    const double floor_s = bytes / (bw * 1e9);
    const int bound = std::min(cfg.num_experts, batch * cfg.num_experts_per_tok);
    return {{"batch", batch},
            {"tokens_per_s", static_cast<double>(batch) * o.steps / total},
            {"ms_per_step", mean_s * 1e3},
            {"ms_per_step_min", *std::min_element(step_s.begin(), step_s.end()) * 1e3},
            {"decode_s", total},
            {"prefill_s", prefill_s},
            {"prefill_tokens_per_s", static_cast<double>(batch) * o.context / prefill_s},
            {"experts_per_layer", experts_per_step / cfg.num_layers},
            {"experts_per_layer_bound", bound},
            {"bytes_per_step", {{"dense", dense}, {"experts", expert_b}, {"kv", kv}, {"total", bytes}}},
            {"floor_ms_per_step", floor_s * 1e3},
            {"fraction_of_floor", floor_s / mean_s},
            {"graph_captures", c1.graph_captures - c0.graph_captures},
            {"graph_replays", c1.graph_replays - c0.graph_replays}};
  }
};

}  // namespace

int run_decode(int argc, char** argv) {
  Options o;
  CLI::App app{"eep-bench decode: decode tokens/s of one engine through the backend", kTool};
  eep::cli::add_version_flag(app);
  add_common_options(app, o.common);
  app.add_option("--batch", o.batch, "comma-separated batch sizes (sequences decoding together)")
      ->envname("EEP_BATCH")->capture_default_str();
  app.add_option("--context", o.context, "prompt tokens prefilled per sequence before decoding")
      ->envname("EEP_CONTEXT")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  app.add_option("--steps", o.steps, "timed decode steps per batch size")
      ->envname("EEP_STEPS")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  app.add_option("--prefill-chunk", o.prefill_chunk, "rows per prefill forward")
      ->envname("EEP_PREFILL_CHUNK")->check(CLI::Range(1, 1 << 16))->capture_default_str();
  app.add_option("--block-size", o.block_size, "tokens per KV-cache block")
      ->envname("EEP_BLOCK_SIZE")->check(CLI::Range(1, 1024))->capture_default_str();
  add_bandwidth_option(app, o.bandwidth_gbs);
  if (auto code = cli::parse(app, argc, argv)) return *code;

  std::unique_ptr<WeightSource> src;
  std::vector<int> batches;
  try {
    src = check_common_options(o.common);
    batches = parse_int_list("--batch", o.batch, 1, 4096);
  } catch (const Error& e) {
    return usage_error(kTool, e.what());
  }
  const ModelConfig& cfg = src->config();
  if (o.context + o.steps + kWarmupSteps > cfg.max_position_embeddings)
    return usage_error(kTool, "--context + --steps + " + std::to_string(kWarmupSteps) +
                                  " warm-up steps = " +
                                  std::to_string(o.context + o.steps + kWarmupSteps) +
                                  " is longer than the model's " +
                                  std::to_string(cfg.max_position_embeddings) + " positions");
  const int max_batch = *std::max_element(batches.begin(), batches.end());
  const int blocks_per_seq =
      (o.context + kWarmupSteps + o.steps + o.block_size - 1) / o.block_size;
  if (static_cast<int64_t>(max_batch) * blocks_per_seq > (1 << 30))
    return usage_error(kTool, "--batch x blocks per sequence is too many KV blocks");
  const size_t elem = weight_elem_bytes(o.common.backend);

  return run_benchmark(kTool, o.common, [&] {
    BackendOptions bo;
    bo.num_kv_blocks = max_batch * blocks_per_seq;
    bo.block_size = o.block_size;
    bo.device = o.common.device;
    SingleRank one = start_single_rank(o.common, *src, bo, "eep-bench/decode");
    auto [bw, bw_source] = floor_bandwidth(o.common.backend, o.bandwidth_gbs, o.common.device);

    nlohmann::json config = common_config(o.common);
    config.update({{"batch", batches}, {"context", o.context}, {"steps", o.steps},
                   {"prefill_chunk", o.prefill_chunk}, {"block_size", o.block_size},
                   {"num_kv_blocks", bo.num_kv_blocks}});
    nlohmann::json report = {{"benchmark", "decode"},
              {"config", config},
              {"model", cfg.to_hf_json()},
              {"machine", machine_info()},
              {"weight_bytes_per_element", elem},
              {"bandwidth_gbs", bw},
              {"bandwidth_source", bw_source}};
    std::printf("eep-bench decode: backend %s, %s (%d layers, hidden %d, %d experts top-%d), context %d, "
                "%d steps\n",
                o.common.backend.c_str(), o.common.model.c_str(), cfg.num_layers, cfg.hidden_size,
                cfg.num_experts, cfg.num_experts_per_tok, o.context, o.steps);
    std::printf("memory bandwidth for the floor: %.1f GB/s (%s)\n", bw, bw_source.c_str());
    std::printf("%6s %9s %10s %14s %14s %11s %9s %9s\n", "batch", "ms/step", "tokens/s", "prefill tok/s",
                "experts/layer", "bytes/step", "floor ms", "of floor");
    BatchRun runner{o, cfg, *one.backend, *one.group, blocks_per_seq, elem, bw};
    nlohmann::json results = nlohmann::json::array();
    for (int b : batches) {
      nlohmann::json r = runner.run(b);
      std::printf("%6d %9.3f %10.1f %14.1f %14.1f %11s %9.3f %8.1f%%\n", b, r["ms_per_step"].get<double>(),
                  r["tokens_per_s"].get<double>(), r["prefill_tokens_per_s"].get<double>(),
                  r["experts_per_layer"].get<double>(),
                  human_bytes(r["bytes_per_step"]["total"].get<double>()).c_str(),
                  r["floor_ms_per_step"].get<double>(), 100.0 * r["fraction_of_floor"].get<double>());
      std::fflush(stdout);
      results.push_back(std::move(r));
    }
    report["results"] = results;
    return report;
  });
}

}  // namespace eep::bench
