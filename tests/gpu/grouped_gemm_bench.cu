// Expert grouped GEMM micro-benchmark on Qwen3-30B-A3B shapes: hidden 2048, moe_intermediate
// 768, 128 experts, top-8. For 1, 8, 32, 256, 2048 and 8192 tokens routed uniformly at random
// (distinct experts per token, fixed seed) it times gate_up (n = 2*768, k = 2048, gate and up
// weights concatenated) and down (n = 2048, k = 768) with each GroupedGemmImpl (host offsets),
// with grouped_gemm_device (offsets on the device: "device_offsets") and, for gate_up, with
// grouped_gemm_swiglu_device (SwiGLU in the epilogue, writes act [rows][768]:
// "device_swiglu"; with each tile shape forced: "shape_<name>", "swiglu_shape_<name>").
// Timing: cudaEvent pair per call, 5 warm-ups, median of 30; before each timed call a 128 MB
// memset evicts L2 (the few experts of a small batch would otherwise stay in the 50 MB L2
// between calls) and a ~100 us spin kernel keeps the GPU busy while the host
// enqueues the events and the call, so host launch latency stays out of the interval (as
// grouped_mm_torch.py does with torch.cuda._sleep). w_gbps = the used experts' weight bytes
// over the time (the memory-bound floor at small batches). Writes the per-expert row counts to
// DIR/counts_<tokens>.txt (argv[1], default ".") so that grouped_mm_torch.py times
// torch._grouped_mm on the same groups.
#include <algorithm>
#include <fstream>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <sstream>
#include <string>

#include "gpu_util.cuh"

using namespace gpu_test;
namespace K = eep::kernels;

namespace {

constexpr int kHidden = 2048, kInter = 768, kExperts = 128, kTopK = 8;
constexpr int kWarmup = 5, kRepeats = 30;

std::vector<int> route(int tokens, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<int> counts(kExperts, 0), all(kExperts);
  std::iota(all.begin(), all.end(), 0);
  for (int t = 0; t < tokens; ++t) {
    std::shuffle(all.begin(), all.end(), rng);
    for (int j = 0; j < kTopK; ++j) counts[all[j]]++;
  }
  return counts;
}

// Reads the flush buffer (leaves L2 full of clean lines: a memset would leave dirty lines whose
// write-back would then compete with the timed call's reads).
__global__ void read_kernel(const uint4* p, size_t n, unsigned* sink) {
  unsigned acc = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    acc ^= p[i].x ^ p[i].w;
  if (acc == 0x12345678u) *sink = acc;
}

// out2[0] += sum (a - b)^2, out2[1] += sum b^2 over n values (NaN propagates).
__global__ void diff_norm_kernel(const bf16* a, const bf16* b, size_t n, double* out2) {
  double d = 0.0, r = 0.0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    const double av = __bfloat162float(a[i]), bv = __bfloat162float(b[i]);
    d += (av - bv) * (av - bv);
    r += bv * bv;
  }
  for (int o = 16; o; o >>= 1) {
    d += __shfl_xor_sync(0xffffffffu, d, o);
    r += __shfl_xor_sync(0xffffffffu, r, o);
  }
  if ((threadIdx.x & 31) == 0) {
    atomicAdd(&out2[0], d);
    atomicAdd(&out2[1], r);
  }
}

__global__ void spin_kernel(long long cycles) {
  const long long t0 = clock64();
  while (clock64() - t0 < cycles) {
  }
}

const char* impl_name(K::GroupedGemmImpl impl) {
  switch (impl) {
    case K::GroupedGemmImpl::kCublasLoop: return "cublas_loop";
    case K::GroupedGemmImpl::kCublasGrouped: return "cublas_grouped";
    case K::GroupedGemmImpl::kCublasStreams: return "cublas_streams";
    case K::GroupedGemmImpl::kCublasSplit: return "cublas_split";
  }
  return "?";
}

}  // namespace

int main(int argc, char** argv) {
  skip_without_device();
  const std::string dir = argc > 1 ? argv[1] : ".";
  cudaDeviceProp prop{};
  TEST_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, device-offset GEMM TMA path: %s\n", prop.name,
              prop.multiProcessorCount, K::grouped_gemm_device_tma() ? "yes" : "no");

  const int max_rows = 8192 * kTopK;
  DeviceBuffer<bf16> w_gu(size_t(kExperts) * 2 * kInter * kHidden),
      w_down(size_t(kExperts) * kHidden * kInter), x(size_t(max_rows) * kHidden),
      gu(size_t(max_rows) * 2 * kInter), act(size_t(max_rows) * kInter),
      y(size_t(max_rows) * kHidden), ref_gu(gu.size()), ref_act(act.size()),
      act_out(act.size()), ref_y(y.size());
  DeviceBuffer<double> norms(2);
  fill(w_gu, 1, 0.1f);
  fill(w_down, 2, 0.1f);
  fill(x, 3, 2.0f);
  fill(act, 4, 2.0f);
  TEST_CUDA(cudaDeviceSynchronize());

  cudaStream_t stream;
  TEST_CUDA(cudaStreamCreate(&stream));
  cudaEvent_t start, stop;
  TEST_CUDA(cudaEventCreate(&start));
  TEST_CUDA(cudaEventCreate(&stop));
  K::GroupedGemm gg(kExperts);

  DeviceBuffer<unsigned char> flush(size_t(128) << 20);
  DeviceBuffer<unsigned> sink(1);
  TEST_CUDA(cudaMemset(flush.get(), 1, flush.size()));
  DeviceBuffer<int32_t> d_off(kExperts + 1);
  int clock_khz = 0;
  TEST_CUDA(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0));
  const long long spin_cycles = (long long)clock_khz * 100 / 1000;  // ~100 us

  // Each tile shape's persistent grid on this device (what a launch starts at most).
  for (int shape = 0; shape < K::grouped_gemm_device_shapes(); ++shape)
    std::printf("# shape %s: %d CTAs resident\n", K::grouped_gemm_device_shape_name(shape),
                K::grouped_gemm_device_resident_ctas(shape));
  std::printf("%-15s %6s %-8s %6s %9s %8s %9s %9s\n", "impl", "tokens", "gemm", "rows", "ms",
              "TFLOP/s", "GB/s(min)", "w_GB/s");
  // EEP_BENCH_TOKENS (e.g. "1,8,32") narrows the token counts, for quick device runs.
  std::vector<int> token_counts = {1, 8, 32, 256, 2048, 8192};
  if (const char* e = std::getenv("EEP_BENCH_TOKENS"); e && *e) {
    token_counts.clear();
    std::stringstream ss(e);
    for (std::string item; std::getline(ss, item, ',');) {
      char* end = nullptr;
      const long t = std::strtol(item.c_str(), &end, 10);
      if (item.empty() || *end != '\0' || t < 1 || t > 65536) {
        std::fprintf(stderr, "EEP_BENCH_TOKENS: '%s' is not a token count in 1..65536\n",
                     item.c_str());
        return 2;
      }
      token_counts.push_back(int(t));
    }
  }
  for (int tokens : token_counts) {
    const auto counts = route(tokens, 1000u + tokens);
    std::vector<int> off(kExperts + 1, 0);
    for (int e = 0; e < kExperts; ++e) off[e + 1] = off[e] + counts[e];
    {
      std::ofstream f(dir + "/counts_" + std::to_string(tokens) + ".txt");
      for (int c : counts) f << c << "\n";
    }
    const int rows = off[kExperts];
    const int used = int(std::count_if(counts.begin(), counts.end(), [](int c) { return c > 0; }));
    d_off.upload(std::vector<int32_t>(off.begin(), off.end()));
    // 0..3: the cuBLAS GroupedGemmImpl variants; 4: device_offsets; 5: device_swiglu (both the
    // automatic tile shape); 6..: device_offsets with each tile shape forced ("shape_<name>").
    const int shapes = K::grouped_gemm_device_shapes();
    for (int impl_i = 0; impl_i < 6 + shapes; ++impl_i) {
      const auto impl = K::GroupedGemmImpl(std::min(impl_i, 3));
      const std::string name = impl_i >= 6 ? std::string("shape_") +
                                                 K::grouped_gemm_device_shape_name(impl_i - 6)
                               : impl_i == 4 ? "device_offsets"
                               : impl_i == 5 ? "device_swiglu"
                                             : impl_name(impl);
      K::grouped_gemm_device_force_shape(impl_i >= 6 ? impl_i - 6 : -1);
      // which: 0 gate_up, 1 down, 2 (forced shapes only) gate_up with the SwiGLU epilogue,
      // reported as "swiglu_shape_<name>".
      for (int which = 0; which < (impl_i >= 6 ? 3 : 2); ++which) {
        const bool gate_up = which != 1;
        const bool swiglu = impl_i == 5 || which == 2;
        if (impl_i == 5 && !gate_up) continue;
        const std::string row_name = which == 2 ? "swiglu_" + name : name;
        const int n = gate_up ? 2 * kInter : kHidden, k = gate_up ? kHidden : kInter;
        const bf16* in = gate_up ? x.get() : act.get();
        const bf16* w = gate_up ? w_gu.get() : w_down.get();
        // device_swiglu writes act_out (act stays the down GEMM's input).
        bf16* out = swiglu ? act_out.get() : gate_up ? gu.get() : y.get();
        auto call = [&] {
          if (!swiglu && (impl_i == 4 || impl_i >= 6))
            K::grouped_gemm_device(in, w, out, d_off.get(), kExperts, rows, n, k, stream);
          else if (swiglu)
            K::grouped_gemm_swiglu_device(in, w, out, d_off.get(), kExperts, rows, kInter, k,
                                          stream);
          else
            gg.run(impl, in, w, out, off.data(), kExperts, n, k, stream);
        };
        for (int i = 0; i < kWarmup; ++i) call();
        std::vector<float> ms(kRepeats);
        for (int i = 0; i < kRepeats; ++i) {
          read_kernel<<<1024, 256, 0, stream>>>(reinterpret_cast<const uint4*>(flush.get()),
                                                 flush.size() / 16, sink.get());
          spin_kernel<<<1, 1, 0, stream>>>(spin_cycles);
          TEST_CUDA(cudaGetLastError());
          TEST_CUDA(cudaEventRecord(start, stream));
          call();
          TEST_CUDA(cudaEventRecord(stop, stream));
          TEST_CUDA(cudaEventSynchronize(stop));
          TEST_CUDA(cudaEventElapsedTime(&ms[i], start, stop));
        }
        // cublas_grouped's output is the reference (and silu_mul_fused of it for the SwiGLU
        // variant); every device-offset result is compared with it.
        const size_t out_elems = size_t(rows) * (swiglu ? kInter : n);
        bf16* ref = swiglu ? ref_act.get() : gate_up ? ref_gu.get() : ref_y.get();
        if (impl_i == 1) {
          TEST_CUDA(cudaMemcpyAsync(ref, out, out_elems * 2, cudaMemcpyDeviceToDevice, stream));
          if (gate_up) K::silu_mul_fused(ref_gu.get(), ref_act.get(), rows, kInter, stream);
        }
        double vs_cublas = -1.0;
        if (impl_i >= 4) {
          TEST_CUDA(cudaMemsetAsync(norms.get(), 0, 2 * sizeof(double), stream));
          diff_norm_kernel<<<1024, 256, 0, stream>>>(out, ref, out_elems, norms.get());
          TEST_CUDA(cudaGetLastError());
          const auto nh = norms.download();
          vs_cublas = std::sqrt(nh[0]) / std::sqrt(nh[1] > 0 ? nh[1] : 1.0);
        }
        std::sort(ms.begin(), ms.end());
        const double med = ms[kRepeats / 2];
        const double flops = 2.0 * rows * n * k;
        // Fewest bytes: the used experts' weights, the input and the output, once each.
        const int out_cols = swiglu ? n / 2 : n;
        const double wbytes = 2.0 * double(used) * n * k;
        const double bytes = wbytes + 2.0 * (double(rows) * k + double(rows) * out_cols);
        std::printf("%-15s %6d %-8s %6d %9.4f %8.2f %9.0f %9.0f\n", row_name.c_str(), tokens,
                    gate_up ? "gate_up" : "down", rows, med, flops / (med * 1e-3) / 1e12,
                    bytes / (med * 1e-3) / 1e9, wbytes / (med * 1e-3) / 1e9);
        std::printf("RESULT impl=%s tokens=%d gemm=%s rows=%d used=%d n=%d k=%d ms=%.5f "
                    "tflops=%.2f min_gbps=%.0f w_gbps=%.0f spread_ms=%.5f..%.5f vs_cublas=%.2e\n",
                    row_name.c_str(), tokens, gate_up ? "gate_up" : "down", rows, used, n, k, med,
                    flops / (med * 1e-3) / 1e12, bytes / (med * 1e-3) / 1e9,
                    wbytes / (med * 1e-3) / 1e9, ms.front(), ms.back(), vs_cublas);
      }
    }
  }
  TEST_CUDA(cudaEventDestroy(stop));
  TEST_CUDA(cudaEventDestroy(start));
  TEST_CUDA(cudaStreamDestroy(stream));
  return 0;
}
