// The switch of launch.cuh's programmatic dependent launch.
#include <cstdlib>
#include <cstring>

#include "launch.cuh"

namespace eep::kernels::detail {

bool pdl_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("EEP_CUDA_PDL");
    return !(v && std::strcmp(v, "0") == 0);
  }();
  return enabled;
}

}  // namespace eep::kernels::detail
