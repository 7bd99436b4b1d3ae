// Kernel launches with programmatic dependent launch (PDL, Hopper): a decode step is hundreds
// of small kernels, and between two of them the GPU otherwise idles for the next launch (about
// 2 ms of an 8 ms batch-1 step on the H100, docs/cuda.md). With PDL the next kernel in the stream
// is launched while the one before it still runs: its blocks become resident, may prefetch what
// no kernel writes (weights), and then wait in pdl_begin() until the previous kernel has
// finished and its writes are visible.
//
// The rule for every kernel launched through launch_kernel(): call pdl_begin() before any other
// access to global memory (only reads of weights may come first), on every path, including
// early returns. Then a kernel never runs ahead of the one before it, so the chain of waits keeps
// the stream's order. A kernel may widen the rule to other data no kernel of the step writes
// (the tensor-core decode attention reads the step's metadata and older K/V rows early) where
// its contract in eep_kernels.h says so. Kernels launched with <<<>>> (or by cuBLAS) are ordered as usual.
// EEP_CUDA_PDL=0 launches without the attribute (pdl_begin is then a no-op). launch_kernel
// checks the launch itself (no EEP_LAUNCH_CHECK after it).
#pragma once

#include <utility>

#include <cuda_runtime.h>

#include "check.cuh"

namespace eep::kernels::detail {

// Waits until the kernels before this one in the stream have finished, then lets the next
// kernel launch (its blocks will wait in turn).
__device__ __forceinline__ void pdl_begin() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Pulls one 128-byte line into L2 (weights, before pdl_begin()).
__device__ __forceinline__ void prefetch_l2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

bool pdl_enabled();  // false when EEP_CUDA_PDL=0 (read once)

// The launch itself: PDL where enabled, and a thread-block cluster where `cluster` is given
// (the grid a multiple of it; a cluster of one block is still launched as a cluster).
template <typename... Params, typename... Args>
void launch_ex(void (*kernel)(Params...), dim3 grid, dim3 block, const dim3* cluster, size_t smem,
               cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attr[2];
  unsigned n = 0;
  if (cluster) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n].val.clusterDim.x = cluster->x;
    attr[n].val.clusterDim.y = cluster->y;
    attr[n].val.clusterDim.z = cluster->z;
    ++n;
  }
  if (pdl_enabled()) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n].val.programmaticStreamSerializationAllowed = 1;
    ++n;
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = n;
  EEP_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

template <typename... Params, typename... Args>
void launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   Args&&... args) {
  launch_ex(kernel, grid, block, nullptr, smem, stream, std::forward<Args>(args)...);
}

// launch_kernel for a kernel that runs in thread-block clusters of `cluster` blocks.
template <typename... Params, typename... Args>
void launch_kernel_cluster(void (*kernel)(Params...), dim3 grid, dim3 block, dim3 cluster,
                           size_t smem, cudaStream_t stream, Args&&... args) {
  launch_ex(kernel, grid, block, &cluster, smem, stream, std::forward<Args>(args)...);
}

}  // namespace eep::kernels::detail
