// Error checking shared by the kernels: every CUDA/cuBLAS call goes through one of these macros,
// which throw eep::kernels::CudaError naming the call and file:line.
#pragma once

#include <string>

#include "eep_kernels.h"

namespace eep::kernels::detail {

[[noreturn]] inline void fail(const char* what, const char* detail, const char* file, int line) {
  throw CudaError(std::string(file) + ":" + std::to_string(line) + ": " + what + ": " + detail);
}

}  // namespace eep::kernels::detail

#define EEP_CUDA_CHECK(call)                                                          \
  do {                                                                                \
    cudaError_t eep_err_ = (call);                                                    \
    if (eep_err_ != cudaSuccess)                                                      \
      ::eep::kernels::detail::fail(#call, cudaGetErrorString(eep_err_), __FILE__, __LINE__); \
  } while (0)

#define EEP_CUBLAS_CHECK(call)                                                        \
  do {                                                                                \
    cublasStatus_t eep_st_ = (call);                                                  \
    if (eep_st_ != CUBLAS_STATUS_SUCCESS)                                             \
      ::eep::kernels::detail::fail(#call, cublasGetStatusString(eep_st_), __FILE__, __LINE__); \
  } while (0)

// After a <<<>>> launch: catches bad configurations at once (not errors inside the kernel).
#define EEP_LAUNCH_CHECK() EEP_CUDA_CHECK(cudaGetLastError())

#define EEP_REQUIRE(cond, msg)                                                        \
  do {                                                                                \
    if (!(cond)) ::eep::kernels::detail::fail("invalid argument", msg, __FILE__, __LINE__); \
  } while (0)
