// The switches of launch.cuh: programmatic dependent launch, and the L2 prefetch experiments.
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "eep_kernels.h"
#include "launch.cuh"

namespace eep::kernels::detail {

bool pdl_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("EEP_CUDA_PDL");
    return !(v && std::strcmp(v, "0") == 0);
  }();
  return enabled;
}

long long l2_prefetch_budget() {
  static long long cached[64] = {};
  int dev = 0;
  EEP_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev < 0 || dev >= 64) dev = 0;
  if (cached[dev] == 0) {
    int l2 = 0;
    EEP_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
    cached[dev] = l2 > 1 ? l2 / 2 : 1;
  }
  return cached[dev];
}

namespace {
// -1: not yet read from EEP_CUDA_L2_PREFETCH.
std::atomic<int> g_l2_prefetch{-1};
}  // namespace

}  // namespace eep::kernels::detail

namespace eep::kernels {

int l2_prefetch_mode() {
  int mode = detail::g_l2_prefetch.load(std::memory_order_relaxed);
  if (mode < 0) {
    const char* v = std::getenv("EEP_CUDA_L2_PREFETCH");
    char* end = nullptr;
    const long parsed = v ? std::strtol(v, &end, 0) : 0;
    // Anything but a number in 0..7 (a typo) leaves the prefetches off.
    mode = v && end != v && *end == '\0' && parsed >= 0 && parsed <= kL2PrefetchAll ? int(parsed) : 0;
    detail::g_l2_prefetch.store(mode, std::memory_order_relaxed);
  }
  return mode;
}

void set_l2_prefetch_mode(int mode) {
  EEP_REQUIRE(mode >= 0 && mode <= kL2PrefetchAll, "set_l2_prefetch_mode: a mask of 0..7");
  detail::g_l2_prefetch.store(mode, std::memory_order_relaxed);
}

}  // namespace eep::kernels
