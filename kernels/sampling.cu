#include <cub/device/device_segmented_radix_sort.cuh>

#include "check.cuh"
#include "sampling.cuh"

namespace eep::kernels {

namespace {

constexpr size_t kAlign = 256;

size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// Workspace: keys in/out (u64), ids in/out (i32), weights (f64), segment offsets, cub's storage.
struct SampleLayout {
  size_t keys_in, keys_out, ids_in, ids_out, weights, offsets, cub, cub_bytes, total;
};

SampleLayout sample_layout(int rows, int vocab) {
  const size_t n = size_t(rows) * vocab;
  SampleLayout l{};
  size_t off = 0;
  l.keys_in = off;
  off += align_up(n * sizeof(uint64_t));
  l.keys_out = off;
  off += align_up(n * sizeof(uint64_t));
  l.ids_in = off;
  off += align_up(n * sizeof(int32_t));
  l.ids_out = off;
  off += align_up(n * sizeof(int32_t));
  l.weights = off;
  off += align_up(n * sizeof(double));
  l.offsets = off;
  off += align_up((size_t(rows) + 1) * sizeof(int));
  l.cub = off;
  size_t cub_bytes = 0;
  EEP_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairs(
      nullptr, cub_bytes, static_cast<const uint64_t*>(nullptr), static_cast<uint64_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), int(n), rows,
      static_cast<const int*>(nullptr), static_cast<const int*>(nullptr)));
  l.cub_bytes = cub_bytes;
  l.total = off + align_up(cub_bytes);
  return l;
}

void check_sizes(int rows, int vocab) {
  EEP_REQUIRE(rows >= 0 && vocab > 0, "sample_tokens: rows >= 0 and vocab > 0");
  EEP_REQUIRE(size_t(rows) * vocab <= size_t(INT32_MAX) / 2,
              "sample_tokens: rows * vocab too large for one sort");
}

}  // namespace

size_t sample_tokens_workspace_bytes(int rows, int vocab) {
  check_sizes(rows, vocab);
  if (rows == 0) return 0;
  return sample_layout(rows, vocab).total;
}

void sample_tokens(const float* logits, const SamplingRow* params, int rows, int vocab,
                   void* workspace, size_t workspace_bytes, int32_t* ids, cudaStream_t stream) {
  check_sizes(rows, vocab);
  if (rows == 0) return;
  EEP_REQUIRE(rows <= 65535, "sample_tokens: rows <= 65535");
  const SampleLayout l = sample_layout(rows, vocab);
  EEP_REQUIRE(workspace != nullptr && workspace_bytes >= l.total,
              "sample_tokens: workspace smaller than sample_tokens_workspace_bytes()");
  auto* base = static_cast<unsigned char*>(workspace);
  auto* keys_in = reinterpret_cast<uint64_t*>(base + l.keys_in);
  auto* keys_out = reinterpret_cast<uint64_t*>(base + l.keys_out);
  auto* ids_in = reinterpret_cast<int32_t*>(base + l.ids_in);
  auto* ids_out = reinterpret_cast<int32_t*>(base + l.ids_out);
  auto* weights = reinterpret_cast<double*>(base + l.weights);
  auto* offsets = reinterpret_cast<int*>(base + l.offsets);

  const dim3 grid(unsigned(detail::ceil_div(vocab, 256 * 4)), unsigned(rows));
  detail::sample_keys_kernel<<<grid, 256, 0, stream>>>(logits, params, rows, vocab, keys_in,
                                                       ids_in, offsets);
  EEP_LAUNCH_CHECK();
  size_t cub_bytes = l.cub_bytes;
  EEP_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairs(
      base + l.cub, cub_bytes, keys_in, keys_out, ids_in, ids_out, rows * vocab, rows,
      static_cast<const int*>(offsets), static_cast<const int*>(offsets + 1), 0, 64, stream));
  detail::sample_pick_kernel<<<rows, detail::kSampleThreads, 0, stream>>>(
      logits, params, vocab, ids_out, weights, ids);
  EEP_LAUNCH_CHECK();
}

}  // namespace eep::kernels
