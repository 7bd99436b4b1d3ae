// The CUDA plugin's interface (CUDA builds only). The CUDA backend and NCCL groups live in
// libeep_cuda.so, which the programs load with dlopen the first time a CUDA entry point is
// called: a CPU-only deployment never maps cuBLAS (half a gigabyte) or NCCL, so every tool
// starts in milliseconds. The plugin exports one C function returning this table.
#pragma once

#include <memory>
#include <string>

#include "eep/backend.h"
#include "eep/comm.h"

namespace eep {

inline constexpr int kCudaPluginVersion = 2;

struct CudaPluginApi {
  int version;  // kCudaPluginVersion of the plugin's build; the loader refuses a mismatch
  void (*check_device_usable)();
  std::unique_ptr<Backend> (*make_backend)(const ModelConfig& cfg, const BackendOptions& opts);
  int (*kv_blocks_for_memory)(const ModelConfig& cfg, int block_size, int device,
                              double memory_fraction, int min_ranks);
  std::unique_ptr<Group> (*make_nccl_group)(StoreClient& store, const NcclGroupOptions& opts);
  double (*peak_memory_bandwidth_gbs)(int device, std::string* description);
};

}  // namespace eep

// Exported by libeep_cuda.so.
extern "C" const eep::CudaPluginApi* eep_cuda_plugin_api();
