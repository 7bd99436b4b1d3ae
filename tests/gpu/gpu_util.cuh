// Helpers shared by the GPU tests and benchmarks: RAII device buffers, bf16 conversion,
// checked CUDA calls for test code, relative error.
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "eep_kernels.h"

#define TEST_CUDA(call)                                                                     \
  do {                                                                                      \
    cudaError_t e_ = (call);                                                                \
    if (e_ != cudaSuccess) {                                                                \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call,                   \
                   cudaGetErrorString(e_));                                                 \
      std::exit(1);                                                                         \
    }                                                                                       \
  } while (0)

namespace gpu_test {

using bf16 = __nv_bfloat16;

// Exit 77 (ctest's SKIP_RETURN_CODE) when the machine has no usable CUDA device.
inline void skip_without_device() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    std::printf("SKIP: no CUDA device (%s)\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "device count 0");
    std::exit(77);
  }
}

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) : n_(n) {
    if (n) TEST_CUDA(cudaMalloc(&p_, n * sizeof(T)));
  }
  ~DeviceBuffer() {
    if (p_) cudaFree(p_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() const { return p_; }
  size_t size() const { return n_; }
  void upload(const std::vector<T>& h) { TEST_CUDA(cudaMemcpy(p_, h.data(), n_ * sizeof(T), cudaMemcpyHostToDevice)); }
  std::vector<T> download() const {
    std::vector<T> h(n_);
    TEST_CUDA(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
  // Every byte 0xff: NaN as bf16 or fp32, -1 as int32; an unwritten element shows up.
  void poison() { TEST_CUDA(cudaMemset(p_, 0xff, n_ * sizeof(T))); }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

// Random bf16 values; `f` receives the same values as fp32 (exactly representable).
inline std::vector<bf16> random_bf16(std::mt19937& rng, size_t n, float scale,
                                     std::vector<float>& f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<bf16> h(n);
  f.resize(n);
  for (size_t i = 0; i < n; ++i) {
    h[i] = __float2bfloat16(dist(rng));
    f[i] = __bfloat162float(h[i]);
  }
  return h;
}

inline std::vector<float> to_float(const std::vector<bf16>& h) {
  std::vector<float> f(h.size());
  for (size_t i = 0; i < h.size(); ++i) f[i] = __bfloat162float(h[i]);
  return f;
}

// ||out - ref|| / ||ref||; NaN (an unwritten or broken element) gives NaN.
inline double rel_err(const std::vector<float>& out, const std::vector<float>& ref) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = double(out[i]) - double(ref[i]);
    num += d * d;
    den += double(ref[i]) * double(ref[i]);
  }
  return std::sqrt(num) / std::sqrt(den > 0 ? den : 1.0);
}

// Benchmarks: uniform values in [-scale/2, scale/2) from a hash of (index, seed), on the device.
__global__ void fill_random_bf16(bf16* p, size_t n, unsigned seed, float scale) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    unsigned h = unsigned(i) * 2654435761u ^ seed;
    h ^= h >> 13;
    h *= 0x5bd1e995u;
    h ^= h >> 15;
    p[i] = __float2bfloat16((float(h & 0xffffff) / float(0x1000000) - 0.5f) * scale);
  }
}

inline void fill(DeviceBuffer<bf16>& b, unsigned seed, float scale) {
  fill_random_bf16<<<1024, 256>>>(b.get(), b.size(), seed, scale);
  TEST_CUDA(cudaGetLastError());
}

}  // namespace gpu_test
