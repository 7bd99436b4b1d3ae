// Backend selection: which backends this build has and whether they can run here. In a CUDA
// build the CUDA entry points load libeep_cuda.so on first use (engine/cuda_plugin.h says why).
#include "eep/backend.h"

#include "eep/comm.h"
#include "eep/common.h"

#ifdef EEP_HAVE_CUDA
#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <mutex>
#include <vector>

#include "engine/cuda_plugin.h"
#endif

namespace eep {

#ifdef EEP_HAVE_CUDA
namespace {

std::string executable_dir() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string path(buf, size_t(n));
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

// Where the plugin may be, in order: $EEP_CUDA_PLUGIN; beside the program; ../lib of the program
// (an installed or bundled layout); this build tree; the loader's search path.
const CudaPluginApi& plugin() {
  static std::once_flag once;
  static const CudaPluginApi* api = nullptr;
  static std::string failure;
  std::call_once(once, [] {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("EEP_CUDA_PLUGIN"); env && *env) candidates.push_back(env);
    const std::string dir = executable_dir();
    candidates.push_back(dir + "/libeep_cuda.so");
    candidates.push_back(dir + "/../lib/libeep_cuda.so");
#ifdef EEP_CUDA_PLUGIN_BUILD_PATH
    candidates.push_back(EEP_CUDA_PLUGIN_BUILD_PATH);
#endif
    candidates.push_back("libeep_cuda.so");
    std::string tried;
    for (const std::string& path : candidates) {
      // A path with a slash that does not exist is skipped quietly; the rest report dlerror.
      if (path.find('/') != std::string::npos && access(path.c_str(), F_OK) != 0) continue;
      void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!handle) {
        tried += std::string("\n  ") + dlerror();
        continue;
      }
      using Entry = const CudaPluginApi* (*)();
      auto entry = reinterpret_cast<Entry>(dlsym(handle, "eep_cuda_plugin_api"));
      if (!entry) {
        tried += "\n  " + path + ": no eep_cuda_plugin_api";
        continue;
      }
      const CudaPluginApi* found = entry();
      if (found->version != kCudaPluginVersion) {
        tried += "\n  " + path + ": plugin version " + std::to_string(found->version) +
                 ", this program needs " + std::to_string(kCudaPluginVersion);
        continue;
      }
      api = found;
      return;
    }
    failure = "the CUDA backend (libeep_cuda.so) could not be loaded; set EEP_CUDA_PLUGIN to "
              "its path, or use --backend cpu" +
              (tried.empty() ? std::string(" (not found beside the program, in ../lib or in "
                                           "the build tree)")
                             : ":" + tried);
  });
  if (!api) throw Error(ErrorCode::kUnavailable, failure);
  return *api;
}

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(const ModelConfig& cfg, const BackendOptions& opts) {
  return plugin().make_backend(cfg, opts);
}

int cuda_kv_blocks_for_memory(const ModelConfig& cfg, int block_size, int device,
                              double memory_fraction, int min_ranks) {
  return plugin().kv_blocks_for_memory(cfg, block_size, device, memory_fraction, min_ranks);
}

std::unique_ptr<Group> make_nccl_group(StoreClient& store, const NcclGroupOptions& opts) {
  return plugin().make_nccl_group(store, opts);
}

double cuda_peak_memory_bandwidth_gbs(int device, std::string* description) {
  return plugin().peak_memory_bandwidth_gbs(device, description);
}
#endif

void Backend::forward_tokens(const StepBatch& batch, Group& group,
                             const std::vector<const SamplingParams*>& params,
                             const std::vector<int64_t>& positions, std::vector<int32_t>& tokens) {
  std::vector<float> logits;
  forward(batch, group, logits);
  const int vocab = config().vocab_size;
  EEP_CHECK(logits.size() == params.size() * size_t(vocab) && positions.size() == params.size(),
            ErrorCode::kInternal, "forward_tokens: one sampling parameter set per sampling seq");
  tokens.resize(params.size());
  for (size_t i = 0; i < params.size(); ++i)
    tokens[i] = sample_token(&logits[i * vocab], vocab, *params[i], positions[i]);
}

namespace {
[[noreturn]] void no_device_transfers(const Backend& b) {
  throw Error(ErrorCode::kUnavailable,
              std::string("the ") + b.name() + " backend has no device-resident weight transfers");
}
}  // namespace

Backend::DeviceRegion Backend::dense_region(const std::string&) { no_device_transfers(*this); }
std::vector<Backend::DeviceRegion> Backend::expert_regions(int, int) { no_device_transfers(*this); }
void Backend::begin_staging(const Placement&, int) { no_device_transfers(*this); }
std::vector<Backend::DeviceRegion> Backend::staged_expert_regions(int, int) {
  no_device_transfers(*this);
}
void Backend::end_staging() { no_device_transfers(*this); }

void check_backend_available(const std::string& backend) {
  if (backend == "cpu") return;
  if (backend == "cuda") {
#ifdef EEP_HAVE_CUDA
    plugin().check_device_usable();
    return;
#else
    throw Error(ErrorCode::kUnavailable,
                "eep was built without CUDA: rebuild on a machine with nvcc, or use --backend cpu");
#endif
  }
  throw Error(ErrorCode::kInvalidArgument, "unknown backend '" + backend + "' (cpu or cuda)");
}

#ifndef EEP_HAVE_CUDA
std::unique_ptr<Backend> make_cuda_backend(const ModelConfig&, const BackendOptions&) {
  throw Error(ErrorCode::kUnavailable,
              "eep was built without CUDA: rebuild on a machine with nvcc, or use --backend cpu");
}

int cuda_kv_blocks_for_memory(const ModelConfig&, int, int, double, int) {
  throw Error(ErrorCode::kUnavailable,
              "eep was built without CUDA: rebuild on a machine with nvcc, or use --backend cpu");
}

double cuda_peak_memory_bandwidth_gbs(int, std::string*) {
  throw Error(ErrorCode::kUnavailable,
              "eep was built without CUDA: rebuild on a machine with nvcc, or use --backend cpu");
}
#endif

}  // namespace eep
