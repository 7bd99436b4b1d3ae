// What eep-bench moe, decode and transfer share: list parsing, the backend and model they run,
// a one-layer view of a model, groups of threads, host memory bandwidth, the machine description
// and the output conventions (a one-line "eep-bench SUB: ..." on stderr; exit 2 for bad
// arguments before any work, 1 for a runtime failure such as a backend this build lacks).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "store/local_server.h"
#include "eep/backend.h"
#include "eep/comm.h"
#include "eep/model.h"
#include "eep/placement.h"
#include "eep/store.h"

namespace eep::bench {

// Flags every one of moe, decode and transfer has (with their EEP_* variables).
struct CommonOptions {
  std::string backend = "cpu";
  std::string model = "preset:small";
  uint64_t seed = 0;
  int device = 0;
  std::string json_path;
};
void add_common_options(CLI::App& app, CommonOptions& o);
// Checks what CLI11 cannot (the backend name) and opens the model: Error(kInvalidArgument).
std::unique_ptr<WeightSource> check_common_options(const CommonOptions& o);
// The config part of a report: the common options.
nlohmann::json common_config(const CommonOptions& o);
// --bandwidth-gbs (moe, decode): 0 means floor_bandwidth's default.
void add_bandwidth_option(CLI::App& app, double& gbs);

// One engine's backend holding the whole model `src` (every expert on its one rank) and a
// group of one member formed through an in-process store: what moe and decode measure.
struct SingleRank {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<LocalStoreServer> store_server;
  std::unique_ptr<StoreClient> store;
  std::unique_ptr<Group> group;
};
// For cpu, first checks that weights and KV cache fit the host memory available.
SingleRank start_single_rank(const CommonOptions& o, const WeightSource& src, const BackendOptions& bo,
                             const std::string& group_name);

// Runs a benchmark's body after its arguments were checked: an exception becomes a one-line
// message and exit 1 (2 for kInvalidArgument); the report it returns goes to --json.
int run_benchmark(const std::string& tool, const CommonOptions& o,
                  const std::function<nlohmann::json()>& body);

// "1,32,256" -> {1, 32, 256}, each in [lo, hi], no duplicates, at most 64 values. Throws
// Error(kInvalidArgument, "FLAG: ...") naming the bad item.
std::vector<int> parse_int_list(const std::string& flag, const std::string& text, int lo, int hi);
// "64K,1M,16M" (suffixes K, M, G: powers of 1024) -> byte counts in [1, hi].
std::vector<size_t> parse_size_list(const std::string& flag, const std::string& text, size_t hi);
// "cpu" or "cuda", else Error(kInvalidArgument) naming the flag.
void check_backend_name(const std::string& backend);
// 1536 -> "1.5 KiB".
std::string human_bytes(double bytes);

// Opens "preset:NAME" or a checkpoint directory; a bad spec is Error(kInvalidArgument).
std::unique_ptr<WeightSource> open_model(const std::string& spec, uint64_t seed);
// Layer `layer` of src seen as a one-layer model (its layer 0), with every other tensor of src
// (embedding, final norm, lm_head) as they are: a layer benchmark loads one layer's weights.
std::unique_ptr<WeightSource> one_layer_view(const WeightSource& src, int layer);

// Backend by name, after check_backend_available (Error(kUnavailable) naming why not).
std::unique_ptr<Backend> make_backend(const std::string& backend, const ModelConfig& cfg,
                                      const BackendOptions& opts);
// Every expert on one rank, in order: slot e holds expert e.
Placement single_rank_placement(const ModelConfig& cfg);
// Bytes per weight element on the backend: 4 (cpu, fp32) or 2 (cuda, bf16).
size_t weight_elem_bytes(const std::string& backend);
// Parameter bytes of the dense (non-expert) weights and of all experts of cfg, at elem bytes.
size_t dense_bytes(const ModelConfig& cfg, size_t elem);
size_t all_experts_bytes(const ModelConfig& cfg, size_t elem);
// For the CPU backend: Error(kResourceExhausted) when `bytes` exceed the memory available now.
void check_host_memory(size_t bytes, const std::string& what);

// Joins group `name` of `size` members as `rank`: Gloo for cpu, NCCL on `device` for cuda.
std::unique_ptr<Group> join_group(const std::string& backend, StoreClient& store,
                                  const std::string& name, int rank, int size, int device);

// Host memcpy bandwidth in GB/s (10^9 bytes read plus written per second) of a 256 MiB copy,
// best of a few.
double measure_memcpy_gbs();

// Bandwidth for a memory floor and where it came from: `given` when > 0, else for cuda GPU
// `device`'s peak (cuda_peak_memory_bandwidth_gbs: memory clock and bus width; 3350 GB/s, the
// H100 SXM's, if the query fails), for cpu measure_memcpy_gbs() now.
std::pair<double, std::string> floor_bandwidth(const std::string& backend, double given,
                                               int device);

// Where the figures were taken: host, CPU model, cores, load average, eep version.
nlohmann::json machine_info();

// "TOOL: MESSAGE" on stderr; these return the exit code.
int usage_error(const std::string& tool, const std::string& msg);
int runtime_error(const std::string& tool, const std::string& msg);
// Maps an exception of the run to its exit code (kInvalidArgument: 2, anything else: 1).
int fail(const std::string& tool, const std::exception& e);
// Writes j (indented) to path; false after a message when it cannot.
bool write_json(const std::string& tool, const std::string& path, const nlohmann::json& j);

}  // namespace eep::bench
