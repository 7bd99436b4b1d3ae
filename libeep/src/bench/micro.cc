#include "bench/micro.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>

#include "bench/serve_args.h"
#include "eep/common.h"

namespace eep::bench {

namespace {

[[noreturn]] void bad(const std::string& msg) { throw Error(ErrorCode::kInvalidArgument, msg); }

std::vector<std::string> split_commas(const std::string& flag, const std::string& text) {
  std::vector<std::string> items;
  std::string item;
  std::stringstream ss(text);
  while (std::getline(ss, item, ',')) items.push_back(item);
  if (text.empty() || text.back() == ',') items.push_back("");
  for (const auto& i : items)
    if (i.empty()) bad(flag + ": empty item in '" + text + "' (expected a comma-separated list)");
  if (items.size() > 64) bad(flag + ": at most 64 values, got " + std::to_string(items.size()));
  return items;
}

// Whole-string unsigned integer: "12x", "-3", " 4" and "" are errors.
bool to_u64(const std::string& s, uint64_t& out) {
  int64_t v = 0;
  if (s.empty() || !std::isdigit(static_cast<unsigned char>(s.front())) || !to_int(s, v)) return false;
  out = static_cast<uint64_t>(v);
  return true;
}

// Layer L of a source as layer 0 of a one-layer model.
class OneLayerView : public WeightSource {
 public:
  OneLayerView(const WeightSource& src, int layer)
      : src_(src), cfg_(src.config()), prefix_("model.layers." + std::to_string(layer) + ".") {
    cfg_.num_layers = 1;
  }
  const ModelConfig& config() const override { return cfg_; }
  bool has(const std::string& t) const override { return src_.has(map(t)); }
  std::vector<int64_t> shape(const std::string& t) const override { return src_.shape(map(t)); }
  void read(const std::string& t, std::vector<float>& out) const override { src_.read(map(t), out); }

 private:
  std::string map(const std::string& t) const {
    static const std::string zero = "model.layers.0.";
    return t.compare(0, zero.size(), zero) == 0 ? prefix_ + t.substr(zero.size()) : t;
  }
  const WeightSource& src_;
  ModelConfig cfg_;
  std::string prefix_;
};

}  // namespace

void add_common_options(CLI::App& app, CommonOptions& o) {
  app.add_option("--backend", o.backend, "cpu or cuda")->envname("EEP_BACKEND")->capture_default_str();
  app.add_option("--model", o.model, "preset:NAME or a checkpoint directory")
      ->envname("EEP_MODEL")->capture_default_str();
  app.add_option("--seed", o.seed, "seed of a preset's synthetic weights")
      ->envname("EEP_SEED")->capture_default_str();
  app.add_option("--device", o.device, "device (GPU) index; ignored by the cpu backend")
      ->envname("EEP_DEVICE")->check(CLI::Range(0, 1023))->capture_default_str();
  app.add_option("--json", o.json_path, "also write every figure as JSON to FILE")->envname("EEP_JSON");
}

std::unique_ptr<WeightSource> check_common_options(const CommonOptions& o) {
  check_backend_name(o.backend);
  return open_model(o.model, o.seed);
}

nlohmann::json common_config(const CommonOptions& o) {
  return {{"backend", o.backend}, {"model", o.model}, {"seed", o.seed}, {"device", o.device}};
}

void add_bandwidth_option(CLI::App& app, double& gbs) {
  app.add_option("--bandwidth-gbs", gbs,
                 "memory bandwidth for the floor, GB/s (default: the GPU's peak from its memory "
                 "clock and bus width for cuda, measured for cpu)")
      ->envname("EEP_BANDWIDTH_GBS")->check(CLI::Range(0.0, 1e6));
}

SingleRank start_single_rank(const CommonOptions& o, const WeightSource& src, const BackendOptions& bo,
                             const std::string& group_name) {
  const ModelConfig& cfg = src.config();
  if (o.backend == "cpu") {
    const size_t kv = 2 * size_t(cfg.num_layers) * bo.num_kv_blocks * bo.block_size * cfg.num_kv_heads *
                      cfg.head_dim * sizeof(float);
    check_host_memory(dense_bytes(cfg, 4) + all_experts_bytes(cfg, 4) + kv, o.model);
  }
  SingleRank s;
  s.backend = make_backend(o.backend, cfg, bo);
  s.backend->load_dense(src);
  s.backend->load_experts(src, single_rank_placement(cfg), 0);
  s.store_server = std::make_unique<LocalStoreServer>();
  s.store = std::make_unique<StoreClient>(s.store_server->address());
  s.group = join_group(o.backend, *s.store, group_name, 0, 1, o.device);
  return s;
}

int run_benchmark(const std::string& tool, const CommonOptions& o,
                  const std::function<nlohmann::json()>& body) {
  nlohmann::json report;
  try {
    report = body();
  } catch (const std::exception& e) {
    return fail(tool, e);
  }
  if (!o.json_path.empty() && !write_json(tool, o.json_path, report)) return kExitRuntime;
  return kExitOk;
}

std::vector<int> parse_int_list(const std::string& flag, const std::string& text, int lo, int hi) {
  std::vector<int> out;
  for (const auto& item : split_commas(flag, text)) {
    uint64_t v = 0;
    if (!to_u64(item, v)) bad(flag + ": '" + item + "' is not a whole number");
    if (v < static_cast<uint64_t>(lo) || v > static_cast<uint64_t>(hi))
      bad(flag + ": " + item + " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    if (std::find(out.begin(), out.end(), static_cast<int>(v)) != out.end())
      bad(flag + ": " + item + " is given twice");
    out.push_back(static_cast<int>(v));
  }
  return out;
}

std::vector<size_t> parse_size_list(const std::string& flag, const std::string& text, size_t hi) {
  std::vector<size_t> out;
  for (const auto& item : split_commas(flag, text)) {
    std::string digits = item;
    uint64_t mult = 1;
    switch (std::toupper(static_cast<unsigned char>(digits.back()))) {
      case 'K': mult = 1ull << 10; break;
      case 'M': mult = 1ull << 20; break;
      case 'G': mult = 1ull << 30; break;
      default: break;
    }
    if (mult > 1) digits.pop_back();
    uint64_t v = 0;
    if (!to_u64(digits, v))
      bad(flag + ": '" + item + "' is not a size (a whole number with an optional K, M or G)");
    if (v == 0 || v > hi / mult)
      bad(flag + ": " + item + " is out of range [1, " + human_bytes(static_cast<double>(hi)) + "]");
    if (std::find(out.begin(), out.end(), v * mult) != out.end()) bad(flag + ": " + item + " is given twice");
    out.push_back(v * mult);
  }
  return out;
}

void check_backend_name(const std::string& backend) {
  if (backend != "cpu" && backend != "cuda")
    bad("--backend: unknown backend '" + backend + "' (cpu or cuda)");
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", b, units[u]);
  return buf;
}

std::unique_ptr<WeightSource> open_model(const std::string& spec, uint64_t seed) {
  try {
    return open_weights(spec, seed);
  } catch (const Error& e) {
    bad("--model " + spec + ": " + e.what());
  }
}

std::unique_ptr<WeightSource> one_layer_view(const WeightSource& src, int layer) {
  if (layer < 0 || layer >= src.config().num_layers)
    bad("--layer: " + std::to_string(layer) + " is out of range: the model has " +
        std::to_string(src.config().num_layers) + " layers");
  return std::make_unique<OneLayerView>(src, layer);
}

std::unique_ptr<Backend> make_backend(const std::string& backend, const ModelConfig& cfg,
                                      const BackendOptions& opts) {
  check_backend_available(backend);
  return backend == "cuda" ? make_cuda_backend(cfg, opts) : make_cpu_backend(cfg, opts);
}

Placement single_rank_placement(const ModelConfig& cfg) {
  return Placement::round_robin(cfg.num_layers, cfg.num_experts, cfg.num_experts, 1);
}

size_t weight_elem_bytes(const std::string& backend) { return backend == "cuda" ? 2 : 4; }

size_t dense_bytes(const ModelConfig& cfg, size_t elem) {
  size_t n = 0;
  for (const auto& [name, shape] : tensor_layout(cfg)) {
    if (name.find(".mlp.experts.") != std::string::npos) continue;
    size_t k = 1;
    for (int64_t d : shape) k *= static_cast<size_t>(d);
    n += k;
  }
  return n * elem;
}

size_t all_experts_bytes(const ModelConfig& cfg, size_t elem) {
  return static_cast<size_t>(cfg.num_layers) * cfg.num_experts * 3 *
         static_cast<size_t>(cfg.hidden_size) * cfg.moe_intermediate_size * elem;
}

void check_host_memory(size_t bytes, const std::string& what) {
  std::ifstream in("/proc/meminfo");
  std::string key;
  size_t kb = 0;
  while (in >> key >> kb) {
    if (key == "MemAvailable:") break;
    in.ignore(1 << 10, '\n');
    kb = 0;
  }
  if (kb == 0) return;  // unknown: let the allocation decide
  const size_t avail = kb * 1024;
  if (bytes > avail)
    throw Error(ErrorCode::kResourceExhausted,
                what + " needs " + human_bytes(static_cast<double>(bytes)) + " of host memory, " +
                    human_bytes(static_cast<double>(avail)) + " is available");
}

std::unique_ptr<Group> join_group(const std::string& backend, StoreClient& store,
                                  const std::string& name, int rank, int size, int device) {
  if (backend == "cuda") {
    NcclGroupOptions o;
    o.name = name;
    o.rank = rank;
    o.size = size;
    o.device = device;
    return make_nccl_group(store, o);
  }
  GlooGroupOptions o;
  o.name = name;
  o.rank = rank;
  o.size = size;
  return make_gloo_group(store, o);
}

double measure_memcpy_gbs() {
  const size_t n = size_t(256) << 20;
  std::unique_ptr<char[]> a(new char[n]), b(new char[n]);
  std::memset(a.get(), 1, n);
  std::memset(b.get(), 2, n);  // both touched: no page faults inside the timed copies
  double best = 0;
  for (int i = 0; i < 5; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    std::memcpy(i % 2 ? a.get() : b.get(), i % 2 ? b.get() : a.get(), n);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * static_cast<double>(n) / s / 1e9);
  }
  return best;
}

std::pair<double, std::string> floor_bandwidth(const std::string& backend, double given,
                                               int device) {
  if (given > 0) return {given, "given (--bandwidth-gbs)"};
  if (backend == "cuda") {
    try {
      std::string description;
      const double gbs = cuda_peak_memory_bandwidth_gbs(device, &description);
      return {gbs, "peak of GPU " + std::to_string(device) + ", " + description};
    } catch (const Error& e) {
      return {3350.0, std::string("default for cuda: H100 SXM HBM3 (") + e.what() + ")"};
    }
  }
  return {measure_memcpy_gbs(), "measured: host memcpy, bytes read + written"};
}

nlohmann::json machine_info() {
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  std::string cpu;
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  }
  double load[3] = {-1, -1, -1};
  getloadavg(load, 3);
  return {{"host", host},
          {"cpu", cpu},
          {"cores", std::thread::hardware_concurrency()},
          {"loadavg", {load[0], load[1], load[2]}},
          {"eep_version", kVersion}};
}

int usage_error(const std::string& tool, const std::string& msg) {
  std::cerr << tool << ": " << msg << "\n";
  return kExitUsage;
}

int runtime_error(const std::string& tool, const std::string& msg) {
  std::cerr << tool << ": " << msg << "\n";
  return kExitRuntime;
}

int fail(const std::string& tool, const std::exception& e) {
  const auto* err = dynamic_cast<const Error*>(&e);
  if (err && err->code() == ErrorCode::kInvalidArgument) return usage_error(tool, e.what());
  return runtime_error(tool, e.what());
}

bool write_json(const std::string& tool, const std::string& path, const nlohmann::json& j) {
  std::ofstream out(path);
  out << j.dump(1) << "\n";
  out.close();
  if (!out) {
    std::cerr << tool << ": cannot write " << path << "\n";
    return false;
  }
  return true;
}

}  // namespace eep::bench
