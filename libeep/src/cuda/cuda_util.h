// Small CUDA helpers of the CUDA backend: error checks that throw eep::Error, and owning device /
// pinned-host arrays that grow on demand (a step's workspace depends on its batch).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "eep/common.h"

namespace eep::cuda {

[[noreturn]] void throw_cuda(const char* call, cudaError_t err, const char* file, int line);

#define EEP_CU(call)                                                         \
  do {                                                                       \
    cudaError_t eep_cu_err_ = (call);                                        \
    if (eep_cu_err_ != cudaSuccess)                                          \
      ::eep::cuda::throw_cuda(#call, eep_cu_err_, __FILE__, __LINE__);       \
  } while (0)

// Counts the device allocations of DeviceArray made by the calling thread. A captured CUDA graph
// holds the addresses of the forward workspaces, which only the forwarding thread allocates: a
// new allocation there since the capture means "capture again". (Weights that other threads
// replace void the graphs explicitly.)
inline uint64_t& device_alloc_generation() {
  static thread_local uint64_t generation = 0;
  return generation;
}

// Device memory of n elements of T. Moves, never copies. grow() keeps the contents only when
// asked to (workspaces do not need them).
template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(size_t n) { resize(n); }
  ~DeviceArray() { release(); }
  DeviceArray(DeviceArray&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    if (this != &o) {
      release();
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  // Exactly n elements (reallocates when the size differs; contents are not kept).
  void resize(size_t n) {
    if (n == n_) return;
    release();
    if (n > 0) {
      EEP_CU(cudaMalloc(reinterpret_cast<void**>(&p_), n * sizeof(T)));
      ++device_alloc_generation();
    }
    n_ = n;
  }
  // At least n elements; grows by half again so a slowly rising batch does not reallocate
  // every step. Contents are not kept.
  T* reserve(size_t n) {
    if (n > n_) resize(n + n / 2);
    return p_;
  }
  void release() {
    if (p_) cudaFree(p_);
    p_ = nullptr;
    n_ = 0;
  }
  T* get() const { return p_; }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * sizeof(T); }
  bool empty() const { return n_ == 0; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

// Page-locked host memory (fast, asynchronous copies), grown on demand.
template <typename T>
class PinnedArray {
 public:
  PinnedArray() = default;
  ~PinnedArray() {
    if (p_) cudaFreeHost(p_);
  }
  PinnedArray(const PinnedArray&) = delete;
  PinnedArray& operator=(const PinnedArray&) = delete;
  T* reserve(size_t n) {
    if (n > n_) {
      if (p_) cudaFreeHost(p_);
      p_ = nullptr;
      n_ = 0;
      size_t want = n + n / 2;
      EEP_CU(cudaMallocHost(reinterpret_cast<void**>(&p_), want * sizeof(T)));
      n_ = want;
    }
    return p_;
  }
  T* get() const { return p_; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace eep::cuda
