// libeep_cuda.so's entry point: the table of its CUDA entry points (engine/cuda_plugin.h).
#include "cuda/cuda_backend.h"
#include "cuda/nccl_group.h"
#include "engine/cuda_plugin.h"

namespace eep::cuda {
int cuda_kv_blocks_for_memory(const ModelConfig& cfg, int block_size, int device,
                              double memory_fraction, int min_ranks);
void check_cuda_device_usable();
double cuda_peak_memory_bandwidth_gbs(int device, std::string* description);
}  // namespace eep::cuda

namespace {

std::unique_ptr<eep::Backend> make_backend(const eep::ModelConfig& cfg,
                                           const eep::BackendOptions& opts) {
  eep::cuda::check_cuda_device_usable();
  return std::make_unique<eep::cuda::CudaBackend>(cfg, opts);
}

}  // namespace

extern "C" __attribute__((visibility("default"))) const eep::CudaPluginApi* eep_cuda_plugin_api() {
  static const eep::CudaPluginApi api = {eep::kCudaPluginVersion,
                                         &eep::cuda::check_cuda_device_usable, &make_backend,
                                         &eep::cuda::cuda_kv_blocks_for_memory,
                                         &eep::make_nccl_group_in_plugin,
                                         &eep::cuda::cuda_peak_memory_bandwidth_gbs};
  return &api;
}
