// eep-bench transfer: weight-transfer bandwidth between engines against the collective library's
// own point-to-point figure, in the same run. --peers members (threads, one device each) form
// groups through an in-process store. Member 0 holds the whole model; the others are new engines
// of a scale-up 1 -> peers:
//   (a) library p2p: member 0 sends a buffer of each --bytes size (and of the engine path's mean
//       message size) to every other member in turn with Group::send/recv;
//   (b) engine path: the transition's own weight movement, move_weights (plan_transfers, then
//       get_dense/get_expert, send/recv, set_dense on the receivers) followed by stage_experts,
//       exactly what Engine::prepare_worker runs.
// Both are timed on member 0 from a barrier to a barrier after the last receive; a p2p round
// moves about the engine path's bytes (in messages of its size), so both pay the same barriers,
// and rounds of (a) and (b) alternate. GB/s are 10^9 payload bytes per second. With --backend
// cuda, (a) runs over an NCCL group on device buffers (P2pBuffer), (b) over a Gloo group (the
// engine's host path: scale-down, --data-comm gloo), and a third measurement runs
//   (c) the engine's device path, move_weights_device over the NCCL group: bf16 weights from
//       device memory into the receivers' dense tensors and staged slots, in batches
//       (Engine::prepare_worker's path for a scale-up over NCCL), timed from a barrier to a
//       barrier after end_staging, so staging included.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <thread>

#ifdef EEP_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "store/local_server.h"
#include "bench/micro.h"
#include "elastic/weight_move.h"
#include "eep/bench.h"
#include "eep/cli.h"
#include "eep/common.h"
#include "eep/elastic.h"

namespace eep::bench {

namespace {

constexpr const char* kTool = "eep-bench transfer";
using Ms = std::chrono::milliseconds;

struct Options {
  CommonOptions common;
  int peers = 2;
  std::string bytes = "64K,1M,16M";
  int iters = 5;
  int64_t timeout_ms = 30000;
};

// A buffer that Group::send/recv of `g` take: host memory, or memory on `device` for a group
// that takes device pointers (NCCL).
class P2pBuffer {
 public:
  P2pBuffer(const Group& g, size_t bytes, int device) {
    if (!g.device_buffers()) {
      host_.assign(bytes, 1);
      data_ = host_.data();
      return;
    }
#ifdef EEP_HAVE_CUDA
    check(cudaSetDevice(device), "cudaSetDevice");
    check(cudaMalloc(&data_, bytes), "cudaMalloc");
    device_ = true;
    check(cudaMemset(data_, 1, bytes), "cudaMemset");
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
#else
    throw Error(ErrorCode::kUnavailable, "group " + g.name() + " takes device buffers, and eep was built without CUDA");
#endif
  }
  ~P2pBuffer() {
#ifdef EEP_HAVE_CUDA
    if (device_) cudaFree(data_);
#endif
  }
  P2pBuffer(const P2pBuffer&) = delete;
  P2pBuffer& operator=(const P2pBuffer&) = delete;
  void* data() { return data_; }

 private:
#ifdef EEP_HAVE_CUDA
  static void check(cudaError_t e, const char* what) {
    if (e != cudaSuccess)
      throw Error(ErrorCode::kUnavailable, std::string(what) + ": " + cudaGetErrorString(e));
  }
  bool device_ = false;
#endif
  std::vector<char> host_;
  void* data_ = nullptr;
};

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// The scale-up 1 -> n that the engine path runs: member 0 keeps what fits its new slots; new
// engines receive the dense weights and the rest of the experts.
Transition scale_up(const ModelConfig& cfg, int n) {
  Transition t;
  t.generation = 1;
  t.old_members = {0};
  for (int r = 0; r < n; ++r) t.new_members.push_back(r);
  t.old_placement = single_rank_placement(cfg);
  std::vector<int> keep(n, -1);
  keep[0] = 0;
  const int slots = (cfg.num_experts + n - 1) / n * n;
  t.new_placement = Placement::resize(t.old_placement, keep, slots);
  return t;
}

// What member 0 measured.
struct Timings {
  // size -> (messages per receiver and round, seconds per round)
  std::vector<std::pair<size_t, std::pair<int, std::vector<double>>>> p2p;
  std::vector<double> move_s, staged_s;
  size_t bytes = 0, messages = 0;
  std::vector<double> device_s;  // (c), CUDA only
  size_t device_bytes = 0;
};

class Members {
 public:
  // engine_bytes: what the engine path moves in a round (all receivers together).
  Members(const Options& o, const WeightSource& src, const Transition& t, std::vector<size_t> sizes,
          size_t engine_bytes)
      : o_(o), src_(src), t_(t), sizes_(std::move(sizes)), engine_bytes_(engine_bytes) {}

  // Runs every member on its own thread; rethrows the first member's error.
  Timings run() {
    std::vector<std::thread> threads;
    for (int r = 0; r < o_.peers; ++r) threads.emplace_back([this, r] { member(r); });
    for (auto& th : threads) th.join();
    if (!error_.empty()) throw Error(error_code_, error_);
    return timings_;
  }

 private:
  int messages_per_peer(size_t size) const {
    const size_t per_peer = engine_bytes_ / static_cast<size_t>(o_.peers - 1);
    return static_cast<int>(std::clamp<size_t>(per_peer / size, 1, 1 << 20));
  }

  void member(int r) {
    try {
      body(r);
    } catch (const std::exception& e) {
      std::lock_guard lock(mu_);
      if (error_.empty()) {
        const auto* err = dynamic_cast<const Error*>(&e);
        error_code_ = err ? err->code() : ErrorCode::kInternal;
        error_ = (o_.peers > 1 ? "member " + std::to_string(r) + ": " : "") + e.what();
      }
    }
  }

  void body(int r) {
    const ModelConfig& cfg = src_.config();
    const int device = o_.common.device + r;
    BackendOptions bo;
    bo.num_kv_blocks = 1;
    bo.device = device;
    auto backend = make_backend(o_.common.backend, cfg, bo);
    if (r == 0) {
      backend->load_dense(src_);
      backend->load_experts(src_, t_.old_placement, 0);
    }
    StoreClient store(store_.address(), Ms(o_.timeout_ms));
    auto p2p = join_group(o_.common.backend, store, "eep-bench/p2p", r, o_.peers, device);
    GlooGroupOptions xo;  // the engine moves weights over a Gloo group (engine_elastic.cc)
    xo.name = "eep-bench/xfer";
    xo.rank = r;
    xo.size = o_.peers;
    xo.timeout = Ms(o_.timeout_ms);
    auto xfer = make_gloo_group(store, xo);

    // Round `it` of every measurement runs before round it+1 of any, so load that comes and goes
    // on a shared machine hits (a) and (b) alike. Round 0 is a warm-up.
    std::vector<std::unique_ptr<P2pBuffer>> bufs;
    for (size_t size : sizes_) bufs.push_back(std::make_unique<P2pBuffer>(*p2p, size, device));
    if (r == 0) {
      for (size_t size : sizes_) timings_.p2p.push_back({size, {messages_per_peer(size), {}}});
    }
    uint32_t tag = 0;
    for (int it = 0; it <= o_.iters; ++it) {
      // (a) library p2p: a round moves about as many bytes as the engine path does, in messages
      // of the size.
      for (size_t i = 0; i < sizes_.size(); ++i) {
        const int count = messages_per_peer(sizes_[i]);
        p2p->barrier();
        const auto t0 = Clock::now();
        for (int p = 1; p < o_.peers; ++p) {
          for (int m = 0; m < count; ++m) {
            ++tag;
            if (r == 0) p2p->send(bufs[i]->data(), sizes_[i], p, tag);
            else if (r == p) p2p->recv(bufs[i]->data(), sizes_[i], 0, tag);
          }
        }
        p2p->barrier();
        if (r == 0 && it > 0) timings_.p2p[i].second.second.push_back(seconds_since(t0));
      }
      // (b) the engine path.
      xfer->barrier();
      const auto t0 = Clock::now();
      MovedWeights moved = move_weights(*backend, *xfer, t_, r);
      xfer->barrier();
      const double move_s = seconds_since(t0);
      backend->stage_experts(t_.new_placement, r, moved.received);
      xfer->barrier();
      const double staged_s = seconds_since(t0);
      backend->discard_staged();
      if (r == 0 && it > 0) {
        timings_.move_s.push_back(move_s);
        timings_.staged_s.push_back(staged_s);
        timings_.bytes = moved.bytes_out;  // member 0 sends everything
        timings_.messages = moved.transfers;
      }
      // (c) the engine's device path.
      if (backend->device_weights() && p2p->device_buffers()) {
        const auto all = t_.union_members();
        std::vector<int> group_rank(all.size());
        for (size_t u = 0; u < all.size(); ++u) group_rank[u] = t_.new_rank_of(all[u]);
        p2p->barrier();
        const auto t1 = Clock::now();
        MovedWeights dev = move_weights_device(*backend, *p2p, t_, t_.union_rank_of(r),
                                               group_rank, t_.new_rank_of(r));
        p2p->barrier();
        const double device_s = seconds_since(t1);
        backend->discard_staged();
        if (r == 0 && it > 0) {
          timings_.device_s.push_back(device_s);
          timings_.device_bytes = dev.bytes_out;
        }
      }
    }
  }

  const Options& o_;
  const WeightSource& src_;
  const Transition& t_;
  std::vector<size_t> sizes_;
  size_t engine_bytes_;
  LocalStoreServer store_;
  std::mutex mu_;
  std::string error_;
  ErrorCode error_code_ = ErrorCode::kInternal;
  Timings timings_;  // written by member 0 only
};

nlohmann::json p2p_json(size_t size, int count, const std::vector<double>& rounds, int receivers) {
  const double bytes = static_cast<double>(size) * count * receivers;
  const double med = median(rounds), best = *std::min_element(rounds.begin(), rounds.end());
  return {{"bytes", size}, {"messages_per_receiver", count}, {"round_bytes", bytes}, {"median_s", med},
          {"best_s", best}, {"gbs", bytes / med / 1e9}, {"best_gbs", bytes / best / 1e9}};
}

}  // namespace

int run_transfer(int argc, char** argv) {
  Options o;
  CLI::App app{"eep-bench transfer: weight-transfer bandwidth against the library's point-to-point", kTool};
  eep::cli::add_version_flag(app);
  add_common_options(app, o.common);
  app.add_option("--peers", o.peers, "members: member 0 sends to the others (a scale-up 1 -> N)")
      ->envname("EEP_PEERS")->check(CLI::Range(2, 64))->capture_default_str();
  app.add_option("--bytes", o.bytes, "comma-separated message sizes for the library p2p (K, M, G suffixes)")
      ->envname("EEP_BYTES")->capture_default_str();
  app.add_option("--iters", o.iters, "timed rounds per measurement, after one warm-up round")
      ->envname("EEP_ITERS")->check(CLI::Range(1, 100000))->capture_default_str();
  app.add_option("--timeout-ms", o.timeout_ms, "a member silent this long fails the run")
      ->envname("EEP_TIMEOUT_MS")->check(CLI::Range(int64_t{100}, int64_t{3600000}))->capture_default_str();
  if (auto code = cli::parse(app, argc, argv)) return *code;

  std::unique_ptr<WeightSource> src;
  std::vector<size_t> sizes;
  try {
    src = check_common_options(o.common);
    sizes = parse_size_list("--bytes", o.bytes, size_t(4) << 30);
  } catch (const Error& e) {
    return usage_error(kTool, e.what());
  }
  const ModelConfig& cfg = src->config();

  return run_benchmark(kTool, o.common, [&] {
    if (o.common.backend == "cpu")
      check_host_memory((dense_bytes(cfg, 4) + all_experts_bytes(cfg, 4)) * 3, o.common.model + " on " +
                            std::to_string(o.peers) + " members");
    check_backend_available(o.common.backend);
    const Transition t = scale_up(cfg, o.peers);
    // The engine path's mean message, so (a) has a figure at the same size.
    std::map<std::string, size_t> numel;
    for (const auto& [name, shape] : tensor_layout(cfg)) {
      size_t n = 1;
      for (int64_t d : shape) n *= static_cast<size_t>(d);
      numel[name] = n;
    }
    const size_t expert_numel = 3 * size_t(cfg.hidden_size) * cfg.moe_intermediate_size;
    BackendOptions tiny_kv;
    tiny_kv.num_kv_blocks = 1;
    size_t plan_bytes = 0, plan_msgs = 0;
    for (const auto& w : plan_transfers(t, make_cpu_backend(cfg, tiny_kv)->dense_tensor_names())) {
      const bool dense = w.kind == WeightTransfer::Kind::kDense;
      plan_bytes += (dense ? numel.at(w.tensor) : expert_numel) * sizeof(float);
      ++plan_msgs;
    }
    const size_t mean_msg = plan_msgs ? plan_bytes / plan_msgs : 1;
    std::vector<size_t> all_sizes = sizes;
    if (std::find(all_sizes.begin(), all_sizes.end(), mean_msg) == all_sizes.end()) all_sizes.push_back(mean_msg);
    std::sort(all_sizes.begin(), all_sizes.end());

    Members members(o, *src, t, all_sizes, plan_bytes);
    Timings tm = members.run();

    const int receivers = o.peers - 1;
    nlohmann::json p2p = nlohmann::json::array();
    double best_gbs = 0, same_gbs = 0;
    size_t best_size = 0;
    for (const auto& [size, run] : tm.p2p) {
      p2p.push_back(p2p_json(size, run.first, run.second, receivers));
      const double g = p2p.back()["gbs"].get<double>();
      if (g > best_gbs) {
        best_gbs = g;
        best_size = size;
      }
      if (size == mean_msg) same_gbs = g;
    }
    const double move_med = median(tm.move_s), staged_med = median(tm.staged_s);
    const double move_gbs = static_cast<double>(tm.bytes) / move_med / 1e9;
    const double move_best = *std::min_element(tm.move_s.begin(), tm.move_s.end());
    const double staged_gbs = static_cast<double>(tm.bytes) / staged_med / 1e9;
    nlohmann::json config = common_config(o.common);
    config.update({{"peers", o.peers}, {"bytes", sizes}, {"iters", o.iters}, {"timeout_ms", o.timeout_ms}});
    nlohmann::json report = {{"benchmark", "transfer"},
              {"config", config},
              {"machine", machine_info()},
              {"p2p_group", o.common.backend == "cuda" ? "nccl" : "gloo"},
              {"p2p", p2p},
              {"engine", {{"transition", "1 -> " + std::to_string(o.peers)},
                          {"bytes", tm.bytes},
                          {"messages", tm.messages},
                          {"mean_message_bytes", mean_msg},
                          {"move_median_s", move_med},
                          {"move_best_s", move_best},
                          {"move_best_gbs", static_cast<double>(tm.bytes) / move_best / 1e9},
                          {"move_gbs", move_gbs},
                          {"with_staging_median_s", staged_med},
                          {"with_staging_gbs", staged_gbs}}},
              {"ratio_to_p2p_same_size", same_gbs > 0 ? move_gbs / same_gbs : 0.0},
              {"engine_device", nullptr},
              {"ratio_to_p2p_best", best_gbs > 0 ? move_gbs / best_gbs : 0.0},
              {"p2p_best_size", best_size}};

    std::printf("eep-bench transfer: backend %s, %s, %d members (member 0 sends to %d), %d rounds (median)\n",
                o.common.backend.c_str(), o.common.model.c_str(), o.peers, receivers, o.iters);
    std::printf("library point-to-point (%s Group::send/recv):\n", report["p2p_group"].get<std::string>().c_str());
    std::printf("  %12s %9s %11s %9s %10s\n", "message", "x count", "ms/round", "GB/s", "best GB/s");
    for (const auto& p : p2p)
      std::printf("  %12s %9d %11.3f %9.3f %10.3f%s\n", human_bytes(p["bytes"].get<double>()).c_str(),
                  p["messages_per_receiver"].get<int>() * receivers, p["median_s"].get<double>() * 1e3,
                  p["gbs"].get<double>(), p["best_gbs"].get<double>(),
                  p["bytes"].get<size_t>() == mean_msg ? "  (engine's mean message)" : "");
    std::printf("engine weight transfer, scale-up 1 -> %d (move_weights + stage_experts):\n", o.peers);
    std::printf("  %s in %zu messages (mean %s): move %.3f ms = %.3f GB/s (best %.3f); with staging %.3f ms "
                "= %.3f GB/s\n",
                human_bytes(static_cast<double>(tm.bytes)).c_str(), tm.messages,
                human_bytes(static_cast<double>(mean_msg)).c_str(), move_med * 1e3, move_gbs,
                report["engine"]["move_best_gbs"].get<double>(), staged_med * 1e3, staged_gbs);
    std::printf("engine / library p2p: %.2f at the same message size, %.2f of its best (%s messages)\n",
                report["ratio_to_p2p_same_size"].get<double>(), report["ratio_to_p2p_best"].get<double>(),
                human_bytes(static_cast<double>(best_size)).c_str());
    if (!tm.device_s.empty()) {
      const double med = median(tm.device_s);
      const double best = *std::min_element(tm.device_s.begin(), tm.device_s.end());
      const double bytes = static_cast<double>(tm.device_bytes);
      report["engine_device"] = {{"bytes", tm.device_bytes},
                                 {"median_s", med},
                                 {"best_s", best},
                                 {"gbs", bytes / med / 1e9},
                                 {"best_gbs", bytes / best / 1e9},
                                 {"ratio_to_p2p_best", best_gbs > 0 ? bytes / med / 1e9 / best_gbs : 0.0}};
      std::printf("engine device path (move_weights_device over NCCL, staging included):\n");
      std::printf("  %s bf16: %.3f ms = %.3f GB/s (best %.3f); %.2f of the library's best p2p\n",
                  human_bytes(bytes).c_str(), med * 1e3, bytes / med / 1e9, bytes / best / 1e9,
                  report["engine_device"]["ratio_to_p2p_best"].get<double>());
    }
    return report;
  });
}

}  // namespace eep::bench
