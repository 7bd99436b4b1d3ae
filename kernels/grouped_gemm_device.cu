#include <algorithm>

#include "check.cuh"
#include "grouped_gemm_device.cuh"

namespace eep::kernels {

namespace {

using namespace detail::ggd;

// Decode: 32 weight rows per tile, all of an expert's (few) rows in one tile, each stage's
// 128-wide k slice split over 4 warps (partial sums added in the epilogue).
using Decode16 = Config<32, 16, 128, 5, 1, 1, 4, 3>;
using Decode32 = Config<32, 32, 128, 4, 1, 1, 4, 3>;
// Prefill: 128 weight rows x 64 / 128 tokens, 8 warps.
using Prefill64 = Config<128, 64, 64, 4, 4, 2, 1, 2>;
using Prefill128 = Config<128, 128, 64, 3, 2, 4, 1, 2>;

// One-time per (kernel, device): raise the dynamic shared-memory limit and read the occupancy.
// Not stream work, so a later call can be captured; the first call of each configuration does
// the setup (make one call before capturing, or call from any thread that is not capturing).
template <class C, bool SWIGLU>
int grid_size() {
  constexpr int kMaxDevices = 64;
  static int cached[kMaxDevices] = {};
  int dev = 0;
  EEP_CUDA_CHECK(cudaGetDevice(&dev));
  EEP_REQUIRE(dev < kMaxDevices, "grouped_gemm_device: device index < 64");
  if (!cached[dev]) {
    auto kern = grouped_gemm_device_kernel<C, SWIGLU>;
    EEP_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        C::SMEM_BYTES));
    int sms = 0, per_sm = 0;
    EEP_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    EEP_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, C::THREADS,
                                                                 C::SMEM_BYTES));
    EEP_REQUIRE(per_sm > 0, "grouped_gemm_device: kernel does not fit on an SM");
    cached[dev] = sms * per_sm;
  }
  return cached[dev];
}

template <class C, bool SWIGLU>
void launch(const bf16* x, const bf16* w, bf16* y, const int32_t* offsets, int num_experts,
            int max_rows, int n, int k, cudaStream_t stream) {
  // Upper bound of the tiles: sum over experts of ceil(m_e / BM) <= max_rows / BM + (non-empty
  // experts); a grid larger than that would only start CTAs that find nothing to do.
  const int nb = SWIGLU ? (n / 2) / (C::BN / 2) : (n + C::BN - 1) / C::BN;
  const long long bound =
      ((long long)max_rows / C::BM + std::min(num_experts, max_rows)) * (long long)nb;
  const int grid = int(std::min<long long>(grid_size<C, SWIGLU>(), bound));
  if (grid <= 0) return;
  detail::ggd::grouped_gemm_device_kernel<C, SWIGLU>
      <<<grid, C::THREADS, C::SMEM_BYTES, stream>>>(x, w, y, offsets, num_experts, n, k);
  EEP_LAUNCH_CHECK();
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
  if (max_rows == 0) return;
  // Rows per expert if the routing were even: picks the tile shape (host arguments only).
  const int avg = (max_rows + num_experts - 1) / num_experts;
  if (avg <= 4)
    launch<Decode16, SWIGLU>(x, w, y, offsets, num_experts, max_rows, n, k, stream);
  else if (avg <= 48)
    launch<Decode32, SWIGLU>(x, w, y, offsets, num_experts, max_rows, n, k, stream);
  else if (avg <= 192)
    launch<Prefill64, SWIGLU>(x, w, y, offsets, num_experts, max_rows, n, k, stream);
  else
    launch<Prefill128, SWIGLU>(x, w, y, offsets, num_experts, max_rows, n, k, stream);
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

}  // namespace eep::kernels
