#include <algorithm>

#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled

#include "check.cuh"
#include "grouped_gemm_device.cuh"
#include "launch.cuh"

namespace eep::kernels {

namespace {

using namespace detail::ggd;

// Decode: 32 (16) weight rows per tile, all of an expert's (few) rows in one tile, each stage's
// 128-wide k slice split over 4 warps (partial sums added in the epilogue).
using Decode16 = Config<32, 16, 128, 5, 1, 1, 4, 3>;
using Decode16n16 = Config<16, 16, 128, 6, 1, 1, 4, 4>;
using Decode16n64 = Config<64, 16, 128, 4, 1, 1, 4, 2>;
using Decode32 = Config<32, 32, 128, 4, 1, 1, 4, 3>;
// Prefill on mma.sync: 128 weight rows x 64 / 128 tokens, 8 warps.
using Prefill64 = Config<128, 64, 64, 4, 4, 2, 1, 2>;
using Prefill128 = Config<128, 128, 64, 3, 2, 4, 1, 2>;
// Prefill on wgmma (sm_90a): 128 weight rows x BM tokens.
using Wg128 = WgConfig<128, 5, 1>;
using Wg128x2 = WgConfig<128, 3, 2>;
using Wg192 = WgConfig<192, 4, 1>;
using Wg256 = WgConfig<256, 4, 1>;
// Prefill on wgmma fed by TMA, warp-specialized (sm_90a).
using Tma128 = TmaConfig<128, 6>;
using Tma192 = TmaConfig<192, 5>;
using Tma256 = TmaConfig<256, 4>;
// ... with ping-pong consumers (each owns every other tile).
using TmaPp128 = TmaConfig<128, 6, true>;
using TmaPp192 = TmaConfig<192, 5, true>;
// ... in clusters of two sharing the token tile through TMA multicast (forced only: slower so
// far, see TmaConfig).
using TmaPpMc192 = TmaConfig<192, 5, true, true>;

enum Shape {
  kD16, kD16n16, kD32, kP64, kP128, kW128, kW128x2, kW192, kW256, kT128, kT192, kT256, kD16n64,
  kTP128, kTP192, kTPM192, kShapes
};
const char* const kShapeNames[kShapes] = {
    "mma_32x16",     "mma_16x16",          "mma_32x32",     "mma_128x64",
    "mma_128x128",   "wgmma_128x128",      "wgmma_128x128_2cta", "wgmma_128x192",
    "wgmma_128x256", "tma_wgmma_128x128",  "tma_wgmma_128x192",  "tma_wgmma_128x256",
    "mma_64x16",     "tma_pp_128x128",     "tma_pp_128x192",     "tma_pp_mc_128x192"};
int g_forced_shape = -1;

// Kernel kinds: 0 mma.sync, 1 wgmma fed by cp.async, 2 wgmma fed by TMA.
template <class C, bool SWIGLU, int WG>
constexpr auto kernel_of() {
  if constexpr (WG == 2)
    return grouped_gemm_tma_kernel<C, SWIGLU>;
  else if constexpr (WG == 1)
    return grouped_gemm_wgmma_kernel<C, SWIGLU>;
  else
    return grouped_gemm_device_kernel<C, SWIGLU>;
}

PFN_cuTensorMapEncodeTiled_v12000 g_encode = nullptr;

// 128B-swizzled bf16 tensor map over `rank` dims (innermost first; strides in bytes of dims 1..).
bool encode_map(CUtensorMap* map, const void* ptr, int rank, const cuuint64_t* dims,
                const cuuint64_t* strides, const cuuint32_t* box) {
  const cuuint32_t elem[3] = {1, 1, 1};
  return g_encode &&
         g_encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, cuuint32_t(rank), const_cast<void*>(ptr),
                  dims, strides, box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE,
                  CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                  CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// One-time per (kernel, device): raise the dynamic shared-memory limit and read the occupancy.
// No stream work. setup_all() does it for every shape on the first call of either launcher, so
// one uncaptured call (any shape) before capturing is enough.
template <class C, bool SWIGLU, int WG>
int& grid_cache(int dev) {
  static int cached[64] = {};
  return cached[dev];
}

// The cluster launch of the multicast shapes (no PDL: the TMA kernels do not wait in pdl_begin).
template <class C>
cudaLaunchConfig_t cluster_config(int grid, cudaStream_t stream, cudaLaunchAttribute* attr) {
  attr->id = cudaLaunchAttributeClusterDimension;
  attr->val.clusterDim.x = C::CLUSTER;
  attr->val.clusterDim.y = 1;
  attr->val.clusterDim.z = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(grid));
  cfg.blockDim = dim3(C::THREADS);
  cfg.dynamicSmemBytes = C::SMEM_BYTES;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cfg;
}

template <class C, bool SWIGLU, int WG>
void setup(int dev, int sms) {
  auto kern = kernel_of<C, SWIGLU, WG>();
  EEP_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      C::SMEM_BYTES));
  if constexpr (WG == 2) {
    if constexpr (C::MC) {
      // A persistent grid of clusters must be resident at once: as many as the GPCs hold
      // (an SM left over in a GPC with an odd count stays idle).
      cudaLaunchAttribute attr;
      const cudaLaunchConfig_t cfg = cluster_config<C>(sms / C::CLUSTER * C::CLUSTER, 0, &attr);
      int clusters = 0;
      EEP_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&clusters, kern, &cfg));
      EEP_REQUIRE(clusters > 0, "grouped_gemm_device: the multicast kernel's cluster does not fit");
      grid_cache<C, SWIGLU, WG>(dev) = clusters * C::CLUSTER;
      return;
    }
  }
  int per_sm = 0;
  EEP_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, C::THREADS,
                                                               C::SMEM_BYTES));
  EEP_REQUIRE(per_sm > 0, "grouped_gemm_device: kernel does not fit on an SM");
  grid_cache<C, SWIGLU, WG>(dev) = sms * per_sm;
}

template <bool SWIGLU>
void setup_shapes(int dev, int sms) {
  setup<Decode16, SWIGLU, 0>(dev, sms);
  setup<Decode16n16, SWIGLU, 0>(dev, sms);
  setup<Decode16n64, SWIGLU, 0>(dev, sms);
  setup<Decode32, SWIGLU, 0>(dev, sms);
  setup<Prefill64, SWIGLU, 0>(dev, sms);
  setup<Prefill128, SWIGLU, 0>(dev, sms);
  setup<Wg128, SWIGLU, 1>(dev, sms);
  setup<Wg128x2, SWIGLU, 1>(dev, sms);
  setup<Wg192, SWIGLU, 1>(dev, sms);
  setup<Wg256, SWIGLU, 1>(dev, sms);
  setup<Tma128, SWIGLU, 2>(dev, sms);
  setup<Tma192, SWIGLU, 2>(dev, sms);
  setup<Tma256, SWIGLU, 2>(dev, sms);
  setup<TmaPp128, SWIGLU, 2>(dev, sms);
  setup<TmaPp192, SWIGLU, 2>(dev, sms);
  setup<TmaPpMc192, SWIGLU, 2>(dev, sms);
}

struct DeviceInfo {
  int dev = 0;
  bool wgmma = false;  // compute capability 9.0: the sm_90a image (wgmma) is the one that runs
};

DeviceInfo setup_all() {
  static bool done[64] = {};
  static bool wgmma[64] = {};
  DeviceInfo info;
  EEP_CUDA_CHECK(cudaGetDevice(&info.dev));
  EEP_REQUIRE(info.dev < 64, "grouped_gemm_device: device index < 64");
  if (!done[info.dev]) {
    int sms = 0, major = 0, minor = 0;
    EEP_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, info.dev));
    EEP_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, info.dev));
    EEP_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, info.dev));
    setup_shapes<false>(info.dev, sms);
    setup_shapes<true>(info.dev, sms);
    wgmma[info.dev] = major == 9 && minor == 0;
    if (wgmma[info.dev] && !g_encode) {
      void* fn = nullptr;
      cudaDriverEntryPointQueryResult q{};
      if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault,
                                           &q) == cudaSuccess &&
          q == cudaDriverEntryPointSuccess)
        g_encode = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
      else
        (void)cudaGetLastError();
    }
    done[info.dev] = true;
  }
  info.wgmma = wgmma[info.dev];
  return info;
}

template <class C, bool SWIGLU, int WG>
void launch(int dev, const bf16* x, const bf16* w, bf16* y, const int32_t* offsets,
            int num_experts, int max_rows, int n, int k, cudaStream_t stream) {
  // Upper bound of the tiles: sum over experts of ceil(m_e / BM) <= max_rows / BM + (non-empty
  // experts); a grid larger than that would only start CTAs that find nothing to do.
  const int nb = SWIGLU ? (n / 2) / (C::BN / 2) : (n + C::BN - 1) / C::BN;
  const long long bound =
      ((long long)max_rows / C::BM + std::min(num_experts, max_rows)) * (long long)nb;
  const int grid = int(std::min<long long>(grid_cache<C, SWIGLU, WG>(dev), bound));
  if (grid <= 0) return;
  detail::launch_kernel(kernel_of<C, SWIGLU, WG>(), grid, C::THREADS, C::SMEM_BYTES, stream, x, w,
                        y, offsets, num_experts, n, k);
}

// false (nothing launched) where the tensor maps cannot describe the call: boxes larger than the
// tensors (max_rows < BM, n < 128, k < 64) or no encoder; the caller then uses the cp.async form.
template <class C, bool SWIGLU>
bool launch_tma(int dev, const bf16* x, const bf16* w, bf16* y, const int32_t* offsets,
                int num_experts, int max_rows, int n, int k, cudaStream_t stream) {
  if (max_rows < C::BM || n < C::BN || k < C::BK || !g_encode) return false;
  const int nb = SWIGLU ? (n / 2) / (C::BN / 2) : (n + C::BN - 1) / C::BN;
  if (nb % C::CLUSTER != 0) return false;  // MC: the two CTAs of a cluster take n-blocks in pairs
  alignas(64) CUtensorMap mw, mx;
  const cuuint64_t wdims[3] = {cuuint64_t(k), cuuint64_t(n), cuuint64_t(num_experts)};
  const cuuint64_t wstrides[2] = {cuuint64_t(k) * 2, cuuint64_t(n) * k * 2};
  const cuuint32_t wbox[3] = {64, SWIGLU ? 8u : cuuint32_t(C::BN), 1};
  const cuuint64_t xdims[2] = {cuuint64_t(k), cuuint64_t(max_rows)};
  const cuuint64_t xstrides[1] = {cuuint64_t(k) * 2};
  const cuuint32_t xbox[2] = {64, cuuint32_t(C::BM / C::CLUSTER)};
  if (!encode_map(&mw, w, 3, wdims, wstrides, wbox) || !encode_map(&mx, x, 2, xdims, xstrides, xbox))
    return false;
  const long long bound =
      ((long long)max_rows / C::BM + std::min(num_experts, max_rows)) * (long long)nb;
  // MC: whole clusters (bound is a multiple of the cluster: nb is).
  const int grid = int(std::min<long long>(grid_cache<C, SWIGLU, 2>(dev), bound)) / C::CLUSTER *
                   C::CLUSTER;
  if (grid <= 0) return true;
  if constexpr (C::MC) {
    cudaLaunchAttribute attr;
    const cudaLaunchConfig_t cfg = cluster_config<C>(grid, stream, &attr);
    EEP_CUDA_CHECK(cudaLaunchKernelEx(&cfg, grouped_gemm_tma_kernel<C, SWIGLU>, mw, mx, y,
                                      offsets, num_experts, n, k));
  } else {
    grouped_gemm_tma_kernel<C, SWIGLU><<<grid, C::THREADS, C::SMEM_BYTES, stream>>>(
        mw, mx, y, offsets, num_experts, n, k);
    EEP_LAUNCH_CHECK();
  }
  return true;
}

template <bool SWIGLU>
void dispatch(const bf16* x, const bf16* w, bf16* y, const int32_t* offsets, int num_experts,
              int max_rows, int n, int k, cudaStream_t stream) {
  const char* what = SWIGLU ? "grouped_gemm_swiglu_device" : "grouped_gemm_device";
  EEP_REQUIRE(num_experts > 0 && num_experts <= kMaxExperts, what);
  EEP_REQUIRE(max_rows >= 0 && n > 0 && k > 0, what);
  EEP_REQUIRE(n % 8 == 0 && k % 8 == 0, "grouped_gemm_device: n % 8 == 0 and k % 8 == 0");
  if (SWIGLU) EEP_REQUIRE((n / 2) % 64 == 0, "grouped_gemm_swiglu_device: inter % 64 == 0");
  EEP_REQUIRE(x && w && y && offsets, what);
  EEP_REQUIRE(((reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(w) |
                reinterpret_cast<uintptr_t>(y)) & 15) == 0,
              "grouped_gemm_device: x, w, y 16-byte aligned");
  const DeviceInfo info = setup_all();
  if (max_rows == 0) return;
  // Rows per expert if the routing were even: picks the tile shape (host arguments only). From
  // the shape sweep on the H100 (docs/cuda.md, bench/gpu-kernels.txt run 4), Qwen3-30B-A3B shapes:
  //  - avg <= 4 (1..32 tokens x top-8 over 128 experts): mma.sync decode tiles, 64 weight rows for
  //    short k (down, k = 768: +6..18%), 32 for long k (gate_up);
  //  - avg <= 100: the TMA wgmma 128x128 tile (256 tokens: +1% gate_up, +10% down over the
  //    32x32 decode tile), where the tensor maps can describe the call; else the decode tile;
  //    the SwiGLU form keeps the decode tile up to 48 (its TMA form, 16 eight-row boxes a
  //    stage, was not measured there);
  //  - larger: TMA wgmma 128x192 with ping-pong consumers, SwiGLU too (ping-pong run B: 2048
  //    and 8192 tokens at or above the cooperative 128x192, which stays 0.84x torch for down at
  //    8192 where ping-pong is 1.06-1.09x).
  const int avg = (max_rows + num_experts - 1) / num_experts;
  const bool tma128 = info.wgmma && g_encode && max_rows >= 128 && n >= 128 && k >= 64;
  int shape;
  if (avg <= 4)
    shape = !SWIGLU && k < 1536 ? kD16n64 : kD16;
  else if (avg <= 48)
    shape = !SWIGLU && tma128 ? kT128 : kD32;
  else if (avg <= 100)
    shape = kT128;
  else
    shape = kTP192;
  if (!info.wgmma &&
      ((shape >= kW128 && shape <= kT256) || shape == kTP128 || shape == kTP192 || shape == kTPM192))
    shape = avg <= 192 ? kP64 : kP128;
  if (g_forced_shape >= 0) shape = g_forced_shape;
  const int d = info.dev;
  switch (shape) {
    case kD16: return launch<Decode16, SWIGLU, 0>(d, x, w, y, offsets, num_experts, max_rows, n, k, stream);
    case kD16n16: return launch<Decode16n16, SWIGLU, 0>(d, x, w, y, offsets, num_experts, max_rows, n, k, stream);
    case kD16n64: return launch<Decode16n64, SWIGLU, 0>(d, x, w, y, offsets, num_experts, max_rows, n, k, stream);
    case kD32: return launch<Decode32, SWIGLU, 0>(d, x, w, y, offsets, num_experts, max_rows, n, k, stream);
    case kP64: return launch<Prefill64, SWIGLU, 0>(d, x, w, y, offsets, num_experts, max_rows, n, k, stream);
    case kP128: return launch<Prefill128, SWIGLU, 0>(d, x, w, y, offsets, num_experts, max_rows, n, k, stream);
    case kW128: return launch<Wg128, SWIGLU, 1>(d, x, w, y, offsets, num_experts, max_rows, n, k, stream);
    case kW128x2: return launch<Wg128x2, SWIGLU, 1>(d, x, w, y, offsets, num_experts, max_rows, n, k, stream);
    case kW192: return launch<Wg192, SWIGLU, 1>(d, x, w, y, offsets, num_experts, max_rows, n, k, stream);
    case kW256: return launch<Wg256, SWIGLU, 1>(d, x, w, y, offsets, num_experts, max_rows, n, k, stream);
    case kT128:
      if (!launch_tma<Tma128, SWIGLU>(d, x, w, y, offsets, num_experts, max_rows, n, k, stream))
        launch<Wg128, SWIGLU, 1>(d, x, w, y, offsets, num_experts, max_rows, n, k, stream);
      return;
    case kT192:
      if (!launch_tma<Tma192, SWIGLU>(d, x, w, y, offsets, num_experts, max_rows, n, k, stream))
        launch<Wg192, SWIGLU, 1>(d, x, w, y, offsets, num_experts, max_rows, n, k, stream);
      return;
    case kT256:
      if (!launch_tma<Tma256, SWIGLU>(d, x, w, y, offsets, num_experts, max_rows, n, k, stream))
        launch<Wg256, SWIGLU, 1>(d, x, w, y, offsets, num_experts, max_rows, n, k, stream);
      return;
    case kTP128:
      if (!launch_tma<TmaPp128, SWIGLU>(d, x, w, y, offsets, num_experts, max_rows, n, k, stream))
        launch<Wg128, SWIGLU, 1>(d, x, w, y, offsets, num_experts, max_rows, n, k, stream);
      return;
    case kTPM192:
      if (!launch_tma<TmaPpMc192, SWIGLU>(d, x, w, y, offsets, num_experts, max_rows, n, k, stream) &&
          !launch_tma<TmaPp192, SWIGLU>(d, x, w, y, offsets, num_experts, max_rows, n, k, stream))
        launch<Wg192, SWIGLU, 1>(d, x, w, y, offsets, num_experts, max_rows, n, k, stream);
      return;
    default:
      if (!launch_tma<TmaPp192, SWIGLU>(d, x, w, y, offsets, num_experts, max_rows, n, k, stream))
        launch<Wg192, SWIGLU, 1>(d, x, w, y, offsets, num_experts, max_rows, n, k, stream);
      return;
  }
}

}  // namespace

void grouped_gemm_device(const bf16* x, const bf16* w, bf16* y, const int32_t* offsets,
                         int num_experts, int max_rows, int n, int k, cudaStream_t stream) {
  dispatch<false>(x, w, y, offsets, num_experts, max_rows, n, k, stream);
}

void grouped_gemm_swiglu_device(const bf16* x, const bf16* w, bf16* act, const int32_t* offsets,
                                int num_experts, int max_rows, int inter, int k,
                                cudaStream_t stream) {
  EEP_REQUIRE(inter > 0, "grouped_gemm_swiglu_device: inter > 0");
  dispatch<true>(x, w, act, offsets, num_experts, max_rows, 2 * inter, k, stream);
}

int grouped_gemm_device_shapes() { return kShapes; }
int grouped_gemm_device_resident_ctas(int shape) {
  EEP_REQUIRE(shape >= 0 && shape < kShapes, "grouped_gemm_device_resident_ctas: shape index");
  const int d = setup_all().dev;
  switch (shape) {
    case kD16: return grid_cache<Decode16, false, 0>(d);
    case kD16n16: return grid_cache<Decode16n16, false, 0>(d);
    case kD16n64: return grid_cache<Decode16n64, false, 0>(d);
    case kD32: return grid_cache<Decode32, false, 0>(d);
    case kP64: return grid_cache<Prefill64, false, 0>(d);
    case kP128: return grid_cache<Prefill128, false, 0>(d);
    case kW128: return grid_cache<Wg128, false, 1>(d);
    case kW128x2: return grid_cache<Wg128x2, false, 1>(d);
    case kW192: return grid_cache<Wg192, false, 1>(d);
    case kW256: return grid_cache<Wg256, false, 1>(d);
    case kT128: return grid_cache<Tma128, false, 2>(d);
    case kT192: return grid_cache<Tma192, false, 2>(d);
    case kT256: return grid_cache<Tma256, false, 2>(d);
    case kTP128: return grid_cache<TmaPp128, false, 2>(d);
    case kTP192: return grid_cache<TmaPp192, false, 2>(d);
    default: return grid_cache<TmaPpMc192, false, 2>(d);
  }
}

bool grouped_gemm_device_tma() {
  const DeviceInfo info = setup_all();
  return info.wgmma && g_encode != nullptr;
}
const char* grouped_gemm_device_shape_name(int shape) {
  EEP_REQUIRE(shape >= 0 && shape < kShapes, "grouped_gemm_device_shape_name: shape index");
  return kShapeNames[shape];
}
void grouped_gemm_device_force_shape(int shape) {
  EEP_REQUIRE(shape >= -1 && shape < kShapes, "grouped_gemm_device_force_shape: -1 or a shape index");
  g_forced_shape = shape;
}

}  // namespace eep::kernels
