// The MoE exchange of a group of more than one with the counts kept on the device (the CUDA
// backend's stream-ordered path): the sender routes its items to global slots (route_to_slots:
// the plan of permute_tokens over every slot of the group, the replica rule of route_local),
// packs each owner's rows into a fixed-capacity block with a small table of per-slot offsets
// and the expert it believes each slot holds (exchange_pack); after the transfer the receiver
// checks that table against its own slots, counts the load and works out where each arriving
// row goes in slot order (exchange_arrivals). The row order per local slot is the host path's:
// senders in rank order, each sender's items in item order. Nothing goes to the host, so the
// exchange needs no host wait; fixed blocks cost bandwidth (every block is sent whole), which
// is why the backend takes this path only for small (decode-sized) steps.
#include <algorithm>

#include "check.cuh"
#include "launch.cuh"
#include "common.cuh"

namespace eep::kernels {

namespace detail {

__device__ __forceinline__ void record_error(int32_t* error, int layer, int expert, int slot,
                                             int holds) {
  if (atomicCAS(error, 0, 1) == 0) {
    error[1] = layer;
    error[2] = expert;
    error[3] = slot;
    error[4] = holds;
  }
}

// Block i copies item i's row to its owner's block; block 0 also writes every owner's table.
__global__ void exchange_pack_kernel(const __nv_bfloat16* __restrict__ x,
                                     const int32_t* __restrict__ slot_rows,
                                     const int32_t* __restrict__ slot_offsets,
                                     const int32_t* __restrict__ slot_expert, int items, int k,
                                     int hidden, int peers, int spr, int cap, int layer,
                                     int32_t* __restrict__ meta, int32_t* __restrict__ ret_idx,
                                     __nv_bfloat16* __restrict__ send_rows,
                                     int32_t* __restrict__ error) {
  pdl_begin();  // launch.cuh: before any global memory access
  const int width = 2 * spr + 1;
  if (blockIdx.x == 0) {
    for (int i = threadIdx.x; i < peers * width; i += blockDim.x) {
      const int p = i / width, f = i % width;
      meta[i] = f <= spr ? slot_offsets[p * spr + f] - slot_offsets[p * spr]
                         : slot_expert[p * spr + f - spr - 1];
    }
  }
  const int i = blockIdx.x;
  if (i >= items) return;
  const int row = slot_rows[i];
  int dst = -1;
  if (row >= 0) {
    int p = peers - 1;
    while (p > 0 && slot_offsets[p * spr] > row) --p;
    const int pos = row - slot_offsets[p * spr];
    if (pos < cap) {
      dst = p * cap + pos;
    } else if (threadIdx.x == 0) {
      record_error(error, layer, -1, p * spr, -3);  // more rows for one owner than the capacity
    }
  }
  if (threadIdx.x == 0) ret_idx[i] = dst;
  if (dst < 0) return;
  copy_row_block(x + size_t(i / k) * hidden, send_rows + size_t(dst) * hidden, hidden);
}

// One block. meta_in [peers][2*spr+1] as exchange_pack wrote it on each sender.
__global__ void exchange_arrivals_kernel(const int32_t* __restrict__ meta_in,
                                         const int32_t* __restrict__ local_expert, int peers,
                                         int spr, int cap, int layer, int first_slot,
                                         unsigned long long* __restrict__ load,
                                         int32_t* __restrict__ error,
                                         int32_t* __restrict__ offsets,
                                         int32_t* __restrict__ perm_src,
                                         int32_t* __restrict__ arr_dst) {
  pdl_begin();  // launch.cuh: before any global memory access
  extern __shared__ int counts[];  // [spr] rows per local slot, then [spr] exclusive starts
  const int width = 2 * spr + 1;
  const int lane = threadIdx.x & 31;
  // A sender's table is trusted only when its offsets rise and fit its block.
  auto valid = [&](int q) {
    const int32_t* m = meta_in + size_t(q) * width;
    return m[0] == 0 && m[spr] <= cap;
  };
  for (int s = threadIdx.x; s < spr; s += blockDim.x) {
    int total = 0;
    for (int q = 0; q < peers; ++q) {
      const int32_t* m = meta_in + size_t(q) * width;
      const int c = m[s + 1] - m[s];
      if (!valid(q) || c < 0) {
        record_error(error, layer, -1, first_slot + s, -3);
        continue;
      }
      if (c == 0) continue;
      const int believed = m[spr + 1 + s];
      if (believed != local_expert[s]) {
        // Rows for an expert this slot does not hold: refused, the step fails (as on the host
        // path); they are not computed.
        record_error(error, layer, believed, first_slot + s, local_expert[s]);
        continue;
      }
      total += c;
    }
    counts[s] = total;
    if (total > 0) load[s] += (unsigned long long)total;
  }
  for (int i = threadIdx.x; i < peers * cap; i += blockDim.x) {
    perm_src[i] = 0;  // rows past the total are never read by a GEMM; 0 keeps gathers in bounds
    arr_dst[i] = 0;
  }
  __syncthreads();
  if (threadIdx.x < 32) {  // exclusive scan of the counts, 32 slots a round
    int carry = 0;
    for (int base = 0; base < spr; base += 32) {
      const int s = base + lane;
      const int c = s < spr ? counts[s] : 0;
      int incl = c;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const int up = __shfl_up_sync(kFullMask, incl, o);
        if (lane >= o) incl += up;
      }
      if (s < spr) {
        counts[spr + s] = carry + incl - c;
        offsets[s] = carry + incl - c;
      }
      carry += __shfl_sync(kFullMask, incl, 31);
    }
    if (lane == 0) offsets[spr] = carry;
  }
  __syncthreads();
  // Slot s's rows: sender 0's block for s, then sender 1's, ...
  for (int s = threadIdx.x; s < spr; s += blockDim.x) {
    int dst = counts[spr + s];
    for (int q = 0; q < peers; ++q) {
      const int32_t* m = meta_in + size_t(q) * width;
      const int c = m[s + 1] - m[s];
      if (!valid(q) || c <= 0 || m[spr + 1 + s] != local_expert[s]) continue;
      const int src = q * cap + m[s];
      for (int t = 0; t < c; ++t) {
        perm_src[dst + t] = src + t;
        arr_dst[src + t] = dst + t;
      }
      dst += c;
    }
  }
}

}  // namespace detail

void exchange_pack(const bf16* x, const int32_t* slot_rows, const int32_t* slot_offsets,
                   const int32_t* slot_expert, int items, int k, int hidden, int peers, int spr,
                   int cap, int layer, int32_t* meta, int32_t* ret_idx, bf16* send_rows,
                   int32_t* error, cudaStream_t stream) {
  EEP_REQUIRE(items >= 0 && k > 0 && hidden > 0 && peers > 0 && spr > 0 && cap >= items,
              "exchange_pack: items >= 0, k, hidden, peers, spr > 0 and cap >= items");
  detail::launch_kernel(detail::exchange_pack_kernel, unsigned(std::max(items, 1)), 128, 0, stream,
                        x, slot_rows, slot_offsets, slot_expert, items, k, hidden, peers, spr,
                        cap, layer, meta, ret_idx, send_rows, error);
}

void exchange_arrivals(const int32_t* meta_in, const int32_t* local_expert, int peers, int spr,
                       int cap, int layer, int first_slot, unsigned long long* load,
                       int32_t* error, int32_t* offsets, int32_t* perm_src, int32_t* arr_dst,
                       cudaStream_t stream) {
  EEP_REQUIRE(peers > 0 && spr > 0 && spr <= 4096 && cap > 0,
              "exchange_arrivals: peers > 0, 0 < spr <= 4096, cap > 0");
  detail::launch_kernel(detail::exchange_arrivals_kernel, 1, 256, 2 * sizeof(int) * size_t(spr),
                        stream, meta_in, local_expert, peers, spr, cap, layer, first_slot, load,
                        error, offsets, perm_src, arr_dst);
}

}  // namespace eep::kernels
