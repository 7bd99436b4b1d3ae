// Paged prefill attention vs the decode kernel run on every prompt row. Qwen3-30B-A3B attention
// shapes: 32 query heads, 4 kv heads, head_dim 128, block_size 16. For each case (sequences x
// prompt length, whole prompts as one chunk from position 0) the KV cache of the prompts is
// filled, then:
//   prefill : one paged_prefill_attention call over all rows;
//   decode  : one paged_decode_attention call with every prompt row as its own "sequence"
//             (seq_len = position + 1, the block table of its sequence) — the decode kernel
//             applied per row, batched into a single launch.
// cudaEvent per call, 5 warm-ups, median of 30. Also checks that both give the same output
// (relative difference). Prints RESULT lines: case, impl, ms, TFLOP/s of the causal attention
// (4 * heads * head_dim flops per (row, attended position)).
#include <algorithm>
#include <numeric>
#include <string>

#include "gpu_util.cuh"

using namespace gpu_test;
namespace K = eep::kernels;

namespace {

constexpr int kHeads = 32, kKvHeads = 4, kHeadDim = 128, kBlock = 16;
constexpr int kWarmup = 5, kRepeats = 30;

template <typename F>
float median_ms(F&& f) {
  cudaEvent_t a, b;
  TEST_CUDA(cudaEventCreate(&a));
  TEST_CUDA(cudaEventCreate(&b));
  for (int i = 0; i < kWarmup; ++i) f();
  std::vector<float> ms(kRepeats);
  for (auto& m : ms) {
    TEST_CUDA(cudaEventRecord(a));
    f();
    TEST_CUDA(cudaEventRecord(b));
    TEST_CUDA(cudaEventSynchronize(b));
    TEST_CUDA(cudaEventElapsedTime(&m, a, b));
  }
  TEST_CUDA(cudaEventDestroy(a));
  TEST_CUDA(cudaEventDestroy(b));
  std::sort(ms.begin(), ms.end());
  return ms[kRepeats / 2];
}

void bench(int seqs, int prompt) {
  const int rows = seqs * prompt;
  const int max_blocks = (prompt + kBlock - 1) / kBlock;
  const int num_blocks = seqs * max_blocks;
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(7));
  // Prefill inputs: one chunk per sequence.
  std::vector<int32_t> tables(perm), nrows(seqs, prompt), starts(seqs, 0), qstarts(seqs);
  for (int s = 0; s < seqs; ++s) qstarts[s] = s * prompt;
  // Decode inputs: every row its own entry.
  std::vector<int32_t> row_tables(size_t(rows) * max_blocks), row_lens(rows);
  for (int s = 0; s < seqs; ++s)
    for (int p = 0; p < prompt; ++p) {
      const int r = s * prompt + p;
      row_lens[r] = p + 1;
      std::copy_n(tables.begin() + size_t(s) * max_blocks, max_blocks,
                  row_tables.begin() + size_t(r) * max_blocks);
    }
  const size_t qn = size_t(rows) * kHeads * kHeadDim;
  const size_t cache = size_t(num_blocks) * kBlock * kKvHeads * kHeadDim;
  DeviceBuffer<bf16> q(qn), kc(cache), vc(cache), out_p(qn), out_d(qn);
  DeviceBuffer<int32_t> dt(tables.size()), dn(seqs), ds(seqs), dq(seqs),
      drt(row_tables.size()), drl(rows);
  fill(q, 11, 4.0f);
  fill(kc, 12, 4.0f);
  fill(vc, 13, 2.0f);
  dt.upload(tables);
  dn.upload(nrows);
  ds.upload(starts);
  dq.upload(qstarts);
  drt.upload(row_tables);
  drl.upload(row_lens);

  auto prefill = [&] {
    K::paged_prefill_attention(q.get(), kc.get(), vc.get(), dt.get(), dq.get(), dn.get(),
                               ds.get(), out_p.get(), seqs, prompt, kHeads, kKvHeads, kHeadDim,
                               kBlock, max_blocks, 0);
  };
  auto decode = [&] {
    K::paged_decode_attention(q.get(), kc.get(), vc.get(), drt.get(), drl.get(), out_d.get(), rows,
                              kHeads, kKvHeads, kHeadDim, kBlock, max_blocks, 0);
  };
  const float ms_p = median_ms(prefill);
  const float ms_d = median_ms(decode);
  TEST_CUDA(cudaDeviceSynchronize());
  const double diff = rel_err(to_float(out_p.download()), to_float(out_d.download()));
  // Causal pairs: sum over rows of (position + 1).
  const double pairs = double(seqs) * prompt * (prompt + 1) / 2.0;
  const double flops = pairs * 4.0 * kHeads * kHeadDim;
  const std::string c = "seqs=" + std::to_string(seqs) + " prompt=" + std::to_string(prompt) +
                        " heads=32/4 d=128";
  std::printf("RESULT %s impl=prefill ms=%.4f tflops=%.2f\n", c.c_str(), ms_p, flops / ms_p * 1e-9);
  std::printf("RESULT %s impl=decode_per_row ms=%.4f tflops=%.2f\n", c.c_str(), ms_d,
              flops / ms_d * 1e-9);
  std::printf("case %s: prefill %.3f ms, decode per row %.3f ms, speed-up %.1fx, rel diff %.2e\n",
              c.c_str(), ms_p, ms_d, ms_d / ms_p, diff);
}

}  // namespace

int main() {
  skip_without_device();
  cudaDeviceProp prop{};
  TEST_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  try {
    bench(8, 512);
    bench(1, 512);
    bench(8, 2048);
    bench(32, 128);
  } catch (const K::CudaError& e) {
    std::printf("FAIL CUDA error: %s\n", e.what());
    return 1;
  }
  return 0;
}
