#include <algorithm>
#include <map>
#include <mutex>

#include "check.cuh"
#include "router_topk.cuh"
#include "launch.cuh"

namespace eep::kernels {

void router_topk(const float* logits, int rows, int num_experts, int k, bool renorm,
                 int32_t* ids, float* weights, cudaStream_t stream) {
  EEP_REQUIRE(rows >= 0 && num_experts > 0 && num_experts <= 1024,
              "router_topk: 0 < num_experts <= 1024");
  EEP_REQUIRE(k > 0 && k <= 32 && k <= num_experts, "router_topk: 0 < k <= min(32, num_experts)");
  if (rows == 0) return;
  const size_t smem = sizeof(float) * detail::kRouterWarps * num_experts;  // <= 16 KiB
  detail::launch_kernel(detail::router_topk_kernel, detail::ceil_div(rows, detail::kRouterWarps),
                        32 * detail::kRouterWarps, smem, stream, logits, rows, num_experts, k,
                        renorm, ids, weights);
}

void router_fused(const float* x, const float* w, int rows, int hidden, int num_experts, int k,
                  bool renorm, float* logits, unsigned* counters, int32_t* ids, float* weights,
                  cudaStream_t stream) {
  EEP_REQUIRE(rows >= 0 && hidden > 0 && num_experts > 0 && num_experts <= 1024,
              "router_fused: hidden > 0, 0 < num_experts <= 1024");
  EEP_REQUIRE(k > 0 && k <= 32 && k <= num_experts, "router_fused: 0 < k <= min(32, num_experts)");
  const size_t smem = sizeof(float) * (size_t(hidden) + size_t(num_experts));
  EEP_REQUIRE(smem <= 48 * 1024, "router_fused: hidden + num_experts floats fit in 48 KiB");
  if (rows == 0) return;
  using namespace detail;
  const int cluster_blocks = ceil_div(num_experts, kRouterClusterExpertsPerBlock);
  if (cluster_blocks <= kRouterMaxClusterBlocks) {
    // A row's blocks are one cluster (router_topk.cuh): logits and counters stay untouched.
    launch_kernel_cluster(router_fused_kernel<kRouterClusterExpertsPerBlock, true>,
                          dim3(unsigned(rows), unsigned(cluster_blocks)),
                          32 * kRouterClusterExpertsPerBlock, dim3(1, unsigned(cluster_blocks), 1),
                          smem, stream, x, w, hidden, num_experts, k, renorm, logits, counters,
                          ids, weights);
    return;
  }
  const dim3 grid(rows, ceil_div(num_experts, kRouterExpertsPerBlock));
  launch_kernel(router_fused_kernel<kRouterExpertsPerBlock, false>, grid,
                32 * kRouterExpertsPerBlock, smem, stream, x, w, hidden, num_experts, k, renorm,
                logits, counters, ids, weights);
}

// ---- router_tiled (the kernel and its design: router_topk.cuh) ----
namespace detail {

using TiledKernel = void (*)(RouterTiledArgs);

// The instances: (TR, TE) = (8, 4), (16, 4), (32, 2), each with scalar / float4 copies.
constexpr int kTiledShapes = 3;
constexpr int kTiledTr[kTiledShapes] = {8, 16, 32};
constexpr int kTiledTe[kTiledShapes] = {4, 4, 2};

TiledKernel tiled_kernel(int shape, bool vec) {
  static const TiledKernel kernels[kTiledShapes][2] = {
      {router_tiled_kernel<8, 4, false>, router_tiled_kernel<8, 4, true>},
      {router_tiled_kernel<16, 4, false>, router_tiled_kernel<16, 4, true>},
      {router_tiled_kernel<32, 2, false>, router_tiled_kernel<32, 2, true>}};
  return kernels[shape][vec ? 1 : 0];
}

// Per device: the SM count and shared-memory limit, read once, with the kernels' limits raised
// to it; and the clusters of a launch shape that run at once (cudaOccupancyMaxActiveClusters,
// cached by shape, split count and shared memory). Host calls only, no stream work: the first
// call of a batch shape is an eager step (cuda_step.cc), not a capture.
struct TiledDevice {
  int sms = 0;
  int smem_optin = 0;
  std::mutex mu;
  std::map<uint64_t, int> clusters;
};

TiledDevice& tiled_device() {
  constexpr int kMaxDevices = 64;
  static TiledDevice devices[kMaxDevices];
  static std::once_flag once[kMaxDevices];
  int dev = 0;
  EEP_CUDA_CHECK(cudaGetDevice(&dev));
  EEP_REQUIRE(dev >= 0 && dev < kMaxDevices, "router_tiled: device index below 64");
  std::call_once(once[dev], [dev] {
    TiledDevice& d = devices[dev];
    EEP_CUDA_CHECK(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev));
    EEP_CUDA_CHECK(
        cudaDeviceGetAttribute(&d.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    for (int shape = 0; shape < kTiledShapes; ++shape)
      for (bool vec : {false, true})
        EEP_CUDA_CHECK(cudaFuncSetAttribute(tiled_kernel(shape, vec),
                                            cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            d.smem_optin));
  });
  return devices[dev];
}

int tiled_max_clusters(TiledDevice& d, int shape, bool vec, int splits, size_t smem) {
  const uint64_t key = (uint64_t(smem) << 16) | uint64_t(splits << 4) | uint64_t(shape << 1) |
                       uint64_t(vec);
  std::lock_guard<std::mutex> lock(d.mu);
  auto it = d.clusters.find(key);
  if (it != d.clusters.end()) return it->second;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = unsigned(splits);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(splits), 1024);
  cfg.blockDim = dim3(kTiledThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  int n = 0;
  EEP_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&n, tiled_kernel(shape, vec), &cfg));
  d.clusters.emplace(key, n);
  return n;
}

// Shared memory of a launch (floats): region A, then the block's summed rows (splits > 1), then
// the ranked top-k's slot weights.
struct TiledLayout {
  int kc = 0, k_split = 0, splits = 0, region_a = 0;
  size_t smem = 0;
};

TiledLayout tiled_layout(int tr, int te, int nw, int kstep, int hidden, int splits) {
  TiledLayout l;
  // Chunk: the most k (a multiple of kstep) whose w and x fit a stage, but no more than the
  // split needs.
  int kc_max = kstep;
  while ((nw * (kc_max + kstep + kTiledPad) + tr * (kc_max + kstep)) * int(sizeof(float)) <=
         kTiledStageBytes)
    kc_max += kstep;
  const int need = ceil_div(ceil_div(hidden, splits), kstep) * kstep;
  l.kc = std::min(kc_max, need);
  l.k_split = ceil_div(need, l.kc) * l.kc;
  l.splits = ceil_div(hidden, l.k_split);  // rounding up may have emptied the last split
  const int stage = nw * (l.kc + kTiledPad) + tr * l.kc;
  l.region_a = std::max(2 * stage, kTiledThreads * tr * te);
  const int mine = ceil_div(tr, l.splits);
  l.smem = sizeof(float) * (size_t(l.region_a) + (l.splits > 1 ? size_t(mine) * nw : 0) +
                            size_t(mine) * 32);
  return l;
}

}  // namespace detail

void router_tiled(const float* x, const float* w, int rows, int hidden, int num_experts, int k,
                  bool renorm, int32_t* ids, float* weights, cudaStream_t stream) {
  using namespace detail;
  EEP_REQUIRE(rows >= 0 && hidden > 0 && num_experts > 0 && num_experts <= kTiledMaxExperts,
              "router_tiled: rows >= 0, hidden > 0, 0 < num_experts <= 1024");
  EEP_REQUIRE(k > 0 && k <= 32 && k <= num_experts, "router_tiled: 0 < k <= min(32, num_experts)");
  if (rows == 0) return;
  TiledDevice& dev = tiled_device();

  // Row tile (router_topk.cuh says why). 32-row tiles hold 2 experts a lane: 8 warps cover 512.
  const int shape =
      rows <= kTiledRows8Max ? 0 : rows <= kTiledRows16Max || num_experts > 512 ? 1 : 2;
  const int tr = kTiledTr[shape], te = kTiledTe[shape];
  const long long tiles = (rows + tr - 1) / tr;
  EEP_REQUIRE(tiles <= 65535, "router_tiled: rows fit in 65535 row tiles");
  // Warp groups over the experts: a power of two covering them, the rest of the 8 warps on k.
  int eg = 1;
  while (eg * 32 * te < num_experts) eg *= 2;
  const int nw = eg * 32 * te;
  const int kstep = kTiledStep * (kTiledWarps / eg);  // one step of every k-group
  const bool vec = hidden % 4 == 0 &&
                   ((reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(w)) & 15) == 0;

  // Splits: the most (up to 8, none smaller than a k granule) whose clusters all run at once;
  // one split when even that cannot be had (the row tiles alone fill the GPU).
  int splits = std::min(kTiledMaxSplits, ceil_div(hidden, kstep));
  TiledLayout lay = tiled_layout(tr, te, nw, kstep, hidden, splits);
  while (lay.splits > 1 &&
         tiles > tiled_max_clusters(dev, shape, vec, lay.splits, lay.smem)) {
    splits = lay.splits - 1;
    lay = tiled_layout(tr, te, nw, kstep, hidden, splits);
  }
  EEP_REQUIRE(lay.smem <= size_t(dev.smem_optin), "router_tiled: shared memory of the shape");

  RouterTiledArgs args;
  args.x = x;
  args.w = w;
  args.ids = ids;
  args.weights = weights;
  args.rows = rows;
  args.hidden = hidden;
  args.num_experts = num_experts;
  args.top_k = k;
  args.renorm = renorm;
  // The ranking costs rows x experts^2 comparisons over the block's 256 threads.
  args.rank_topk = (long long)ceil_div(tr, lay.splits) * num_experts * num_experts <=
                   (long long)kTiledRankWork * kTiledThreads;
  args.k_split = lay.k_split;
  args.kc = lay.kc;
  args.chunks = lay.k_split / lay.kc;
  args.eg = eg;
  args.nw_log2 = 0;
  while ((1 << args.nw_log2) < nw) ++args.nw_log2;
  args.region_a = lay.region_a;

  launch_kernel_cluster(tiled_kernel(shape, vec), dim3(unsigned(lay.splits), unsigned(tiles)),
                        kTiledThreads, dim3(unsigned(lay.splits), 1, 1), lay.smem, stream, args);
}

}  // namespace eep::kernels
