// One-time set-up of the libraries a step calls, done when the backend is made instead of in
// the engine's first step.
//
// Measured on an H100 (EEP_CUDA_PROFILE, run 30): the first bf16 cuBLAS GEMM of a process takes
// 87-135 ms, the first fp32 one (the router) 66-98 ms, the grouped GEMM's first call ~7 ms (its
// tile shapes' shared-memory limits and occupancy); the same calls take 0.02-0.1 ms afterwards,
// and a new shape of an initialised kind ~0.5 ms. In a first step that is a ~250 ms pause,
// and for an engine that joins a serving group (1 -> 2) every member waits for it in the MoE
// exchange (203 ms measured on two H200s). Made here, the cost moves to engine start, before
// the engine serves.
#include <algorithm>
#include <chrono>

#include "cuda/cuda_backend.h"
#include "eep_kernels.h"

namespace eep::cuda {

void CudaBackend::warm_up_libraries() {
  const auto t0 = std::chrono::steady_clock::now();
  // Real dimensions of the model (kernels are chosen by shape), a prefill-sized row count and a
  // decode-sized one.
  const int hidden = cfg_.hidden_size, inter = cfg_.moe_intermediate_size;
  const int q_dim = cfg_.num_heads * cfg_.head_dim;
  const int qkv_dim = q_dim + 2 * cfg_.num_kv_heads * cfg_.head_dim;
  const int big_rows = 256;
  const int widest = std::max({hidden, qkv_dim, 2 * inter, cfg_.num_experts});
  DeviceArray<bf16> x(size_t(big_rows) * widest), w(size_t(widest) * widest);
  DeviceArray<float> x_f32(size_t(big_rows) * hidden), w_f32(size_t(cfg_.num_experts) * hidden),
      y(size_t(big_rows) * widest);
  EEP_CU(cudaMemsetAsync(x.get(), 0, x.bytes(), stream_));
  EEP_CU(cudaMemsetAsync(w.get(), 0, w.bytes(), stream_));
  EEP_CU(cudaMemsetAsync(x_f32.get(), 0, x_f32.bytes(), stream_));
  EEP_CU(cudaMemsetAsync(w_f32.get(), 0, w_f32.bytes(), stream_));

  // Dense projections (bf16 out) and the logits (fp32 out), at prefill and decode row counts
  // (decode rows of up to kSkinnyMaxRows take the skinny kernel, more take cuBLAS).
  for (int rows : {big_rows, kernels::kSkinnyMaxRows + 1, 1}) {
    gemm(x.get(), w.get(), y.get(), CUDA_R_16BF, rows, hidden, qkv_dim);
    gemm(x.get(), w.get(), y.get(), CUDA_R_16BF, rows, q_dim, hidden);
    gemm(x.get(), w.get(), y.get(), CUDA_R_32F, rows, hidden, std::min(widest, 4096));
  }
  // The router in fp32 beyond the fused router's rows.
  gemm_f32(x_f32.get(), w_f32.get(), y.get(), big_rows, hidden, cfg_.num_experts);

  // The expert GEMMs of both MoE paths with one slot holding every row: the device-offset
  // kernels (a group of one; their first call sets up every tile shape) and cuBLAS's grouped
  // GEMM (larger groups).
  if (hidden % 8 == 0 && inter % 8 == 0) {
    DeviceArray<int32_t> offsets(2);
    for (int rows : {big_rows, kernels::kSkinnyMaxRows}) {
      const int32_t host_offsets[2] = {0, rows};
      EEP_CU(cudaMemcpyAsync(offsets.get(), host_offsets, sizeof host_offsets,
                             cudaMemcpyHostToDevice, stream_));
      if (inter % 64 == 0)
        kernels::grouped_gemm_swiglu_device(x.get(), w.get(), reinterpret_cast<bf16*>(y.get()),
                                            offsets.get(), 1, rows, inter, hidden, stream_);
      kernels::grouped_gemm_device(x.get(), w.get(), reinterpret_cast<bf16*>(y.get()),
                                   offsets.get(), 1, rows, 2 * inter, hidden, stream_);
      kernels::grouped_gemm_device(x.get(), w.get(), reinterpret_cast<bf16*>(y.get()),
                                   offsets.get(), 1, rows, hidden, inter, stream_);
      // The host copy of the offsets must outlive the copy.
      EEP_CU(cudaStreamSynchronize(stream_));
    }
  }
  {
    kernels::GroupedGemm grouped(1);
    const int host_offsets[2] = {0, big_rows};
    grouped.run(kernels::GroupedGemmImpl::kCublasGrouped, x.get(), w.get(),
                reinterpret_cast<bf16*>(y.get()), host_offsets, 1, 2 * inter, hidden, stream_);
    EEP_CU(cudaStreamSynchronize(stream_));
  }
  EEP_CU(cudaStreamSynchronize(stream_));
  logger("cuda")->debug(
      "GPU {}: cuBLAS and the grouped GEMM set up in {:.1f} ms", opts_.device,
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
}

}  // namespace eep::cuda
