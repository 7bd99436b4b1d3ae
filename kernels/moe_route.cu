// Device-side replica choice for the MoE block of a group of one: the same (token, choice) →
// replica rule as the host path and the CPU backend (replica item % replicas of the expert), the
// invariant "no row reaches a slot whose weights are not in place" checked on every item, and
// the per-slot load counted, all without the host. The step can then run as one CUDA graph.
#include "check.cuh"
#include "launch.cuh"

namespace eep::kernels {

namespace detail {

__global__ void route_local_kernel(const int32_t* ids, int items, const int32_t* route,
                                   int num_experts, int max_replicas, int first_slot, int spr,
                                   int layer, int32_t* local_slots, unsigned long long* load,
                                   int32_t* error) {
  pdl_begin();  // launch.cuh: before any global memory access
  const int32_t* replicas = route;                       // [num_experts]
  const int32_t* table = route + num_experts;            // [num_experts][max_replicas]
  const int32_t* slot_expert = table + size_t(num_experts) * max_replicas;  // [spr]
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < items; i += gridDim.x * blockDim.x) {
    const int e = ids[i];
    int local = -1, holds = -2, slot = -1;
    if (e >= 0 && e < num_experts && replicas[e] > 0) {
      slot = table[size_t(e) * max_replicas + i % replicas[e]];
      const int s = slot - first_slot;
      if (s >= 0 && s < spr) {
        holds = slot_expert[s];
        if (holds == e) local = s;
      }
    }
    local_slots[i] = local;  // -1: dropped by the permutation, never read by a GEMM
    if (local >= 0) {
      atomicAdd(load + local, 1ull);
    } else if (atomicCAS(error, 0, 1) == 0) {
      error[1] = layer;
      error[2] = e;
      error[3] = slot;
      error[4] = holds;
    }
  }
}

}  // namespace detail

void route_local(const int32_t* ids, int items, const int32_t* route, int num_experts,
                 int max_replicas, int first_slot, int slots_per_rank, int layer,
                 int32_t* local_slots, unsigned long long* load, int32_t* error,
                 cudaStream_t stream) {
  EEP_REQUIRE(items >= 0 && num_experts > 0 && max_replicas > 0 && slots_per_rank > 0,
              "route_local: items >= 0, num_experts, max_replicas, slots_per_rank > 0");
  if (items == 0) return;
  const int threads = 256;
  const int blocks = (items + threads - 1) / threads;
  detail::launch_kernel(detail::route_local_kernel, blocks, threads, 0, stream, ids, items, route,
                        num_experts, max_replicas, first_slot, slots_per_rank, layer, local_slots,
                        load, error);
}

}  // namespace eep::kernels
