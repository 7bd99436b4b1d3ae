#include <algorithm>
#include <numeric>
#include <vector>

#include "check.cuh"
#include "grouped_gemm.cuh"

namespace eep::kernels {

GroupedGemm::GroupedGemm(int max_experts) : max_experts_(max_experts) {
  EEP_REQUIRE(max_experts > 0, "GroupedGemm: max_experts > 0");
  EEP_CUBLAS_CHECK(cublasCreate(&handle_));
  EEP_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&d_ptrs_), sizeof(void*) * kPtrSlots * max_experts));
  EEP_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&h_ptrs_), sizeof(void*) * kPtrSlots * max_experts));
  EEP_CUDA_CHECK(cudaEventCreateWithFlags(&staged_, cudaEventDisableTiming));
  EEP_CUDA_CHECK(cudaEventRecord(staged_, 0));
  EEP_CUDA_CHECK(cudaEventCreateWithFlags(&fork_, cudaEventDisableTiming));
  for (int i = 0; i < kSideStreams; ++i) {
    EEP_CUDA_CHECK(cudaStreamCreateWithFlags(&side_[i], cudaStreamNonBlocking));
    EEP_CUDA_CHECK(cudaEventCreateWithFlags(&join_[i], cudaEventDisableTiming));
    EEP_CUBLAS_CHECK(cublasCreate(&side_handle_[i]));
    EEP_CUBLAS_CHECK(cublasSetStream(side_handle_[i], side_[i]));
  }
}

GroupedGemm::~GroupedGemm() {
  // Reverse order of creation; errors here cannot be thrown out of a destructor.
  for (int i = kSideStreams - 1; i >= 0; --i) {
    if (side_handle_[i]) cublasDestroy(side_handle_[i]);
    if (join_[i]) cudaEventDestroy(join_[i]);
    if (side_[i]) {
      cudaStreamSynchronize(side_[i]);
      cudaStreamDestroy(side_[i]);
    }
  }
  if (fork_) cudaEventDestroy(fork_);
  if (staged_) {
    cudaEventSynchronize(staged_);
    cudaEventDestroy(staged_);
  }
  if (h_ptrs_) cudaFreeHost(h_ptrs_);
  if (d_ptrs_) cudaFree(d_ptrs_);
  if (handle_) cublasDestroy(handle_);
}

void GroupedGemm::gemm(cublasHandle_t h, const bf16* x, const bf16* w, bf16* y,
                       const int* offsets, int e, int n, int k) {
  const float alpha = 1.0f, beta = 0.0f;
  const int m_e = offsets[e + 1] - offsets[e];
  EEP_CUBLAS_CHECK(cublasGemmEx(h, detail::kGroupedTransA, detail::kGroupedTransB, n, m_e, k,
                                &alpha, w + size_t(e) * n * k, CUDA_R_16BF, k,
                                x + size_t(offsets[e]) * k, CUDA_R_16BF, k, &beta,
                                y + size_t(offsets[e]) * n, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT));
}

void GroupedGemm::run(GroupedGemmImpl impl, const bf16* x, const bf16* w, bf16* y,
                      const int* offsets, int num_experts, int n, int k, cudaStream_t stream) {
  EEP_REQUIRE(num_experts > 0 && num_experts <= max_experts_,
              "GroupedGemm::run: 0 < num_experts <= max_experts");
  EEP_REQUIRE(n > 0 && k > 0, "GroupedGemm::run: n > 0 and k > 0");
  EEP_REQUIRE(offsets[0] == 0, "GroupedGemm::run: offsets[0] == 0");
  for (int e = 0; e < num_experts; ++e)
    EEP_REQUIRE(offsets[e + 1] >= offsets[e], "GroupedGemm::run: offsets non-decreasing");
  EEP_CUBLAS_CHECK(cublasSetStream(handle_, stream));
  const float alpha = 1.0f, beta = 0.0f;
  const size_t w_stride = size_t(n) * k;

  if (impl == GroupedGemmImpl::kCublasLoop) {
    for (int e = 0; e < num_experts; ++e)
      if (offsets[e + 1] > offsets[e]) gemm(handle_, x, w, y, offsets, e, n, k);
    return;
  }

  if (impl == GroupedGemmImpl::kCublasStreams) {
    // Largest experts first, each to the stream with the fewest rows so far (deterministic).
    std::vector<int> order(num_experts);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      return offsets[a + 1] - offsets[a] > offsets[b + 1] - offsets[b];
    });
    long long load[kSideStreams] = {};
    EEP_CUDA_CHECK(cudaEventRecord(fork_, stream));
    for (int i = 0; i < kSideStreams; ++i) EEP_CUDA_CHECK(cudaStreamWaitEvent(side_[i], fork_, 0));
    for (int e : order) {
      const int m_e = offsets[e + 1] - offsets[e];
      if (m_e == 0) break;
      const int s = int(std::min_element(load, load + kSideStreams) - load);
      load[s] += m_e;
      gemm(side_handle_[s], x, w, y, offsets, e, n, k);
    }
    for (int i = 0; i < kSideStreams; ++i) {
      EEP_CUDA_CHECK(cudaEventRecord(join_[i], side_[i]));
      EEP_CUDA_CHECK(cudaStreamWaitEvent(stream, join_[i], 0));
    }
    return;
  }

  // kCublasSplit: the first m_common rows of every non-empty expert (m_common = the smallest
  // non-empty expert's rows) as one cublasGemmBatchedEx of equal shapes, the rest through the
  // grouped call. kCublasGrouped: everything through the grouped call, one group (group_size 1)
  // per non-empty expert, since the shapes differ.
  int m_common = 0;
  if (impl == GroupedGemmImpl::kCublasSplit) {
    m_common = -1;
    for (int e = 0; e < num_experts; ++e) {
      const int m_e = offsets[e + 1] - offsets[e];
      if (m_e > 0 && (m_common < 0 || m_e < m_common)) m_common = m_e;
    }
    if (m_common < kSplitMinRows) m_common = 0;  // too small to be worth a second call
  }
  std::vector<cublasOperation_t> ta, tb;
  std::vector<int> m_arr, n_arr, k_arr, lda, ldb, ldc, group_size;
  std::vector<float> alphas, betas;
  // The previous call's copy out of the pinned staging buffer must be done before we refill it.
  EEP_CUDA_CHECK(cudaEventSynchronize(staged_));
  const int M = max_experts_;
  const void** a_ptrs = const_cast<const void**>(h_ptrs_);  // grouped: [0, 3M)
  const void** b_ptrs = a_ptrs + M;
  void** c_ptrs = h_ptrs_ + 2 * M;
  const void** ba_ptrs = a_ptrs + 3 * M;  // batched: [3M, 6M)
  const void** bb_ptrs = a_ptrs + 4 * M;
  void** bc_ptrs = h_ptrs_ + 5 * M;
  int groups = 0, batch = 0;
  for (int e = 0; e < num_experts; ++e) {
    const int m_e = offsets[e + 1] - offsets[e];
    if (m_e == 0) continue;
    if (m_common > 0) {
      ba_ptrs[batch] = w + e * w_stride;
      bb_ptrs[batch] = x + size_t(offsets[e]) * k;
      bc_ptrs[batch] = y + size_t(offsets[e]) * n;
      ++batch;
    }
    const int rest = m_e - m_common;
    if (rest == 0) continue;
    ta.push_back(detail::kGroupedTransA);
    tb.push_back(detail::kGroupedTransB);
    m_arr.push_back(n);
    n_arr.push_back(rest);
    k_arr.push_back(k);
    lda.push_back(k);
    ldb.push_back(k);
    ldc.push_back(n);
    group_size.push_back(1);
    alphas.push_back(alpha);
    betas.push_back(beta);
    a_ptrs[groups] = w + e * w_stride;
    b_ptrs[groups] = x + size_t(offsets[e] + m_common) * k;
    c_ptrs[groups] = y + size_t(offsets[e] + m_common) * n;
    ++groups;
  }
  if (groups == 0 && batch == 0) return;
  EEP_CUDA_CHECK(cudaMemcpyAsync(d_ptrs_, h_ptrs_, sizeof(void*) * kPtrSlots * M,
                                 cudaMemcpyHostToDevice, stream));
  EEP_CUDA_CHECK(cudaEventRecord(staged_, stream));
  if (batch > 0)
    EEP_CUBLAS_CHECK(cublasGemmBatchedEx(
        handle_, detail::kGroupedTransA, detail::kGroupedTransB, n, m_common, k, &alpha,
        const_cast<const void* const*>(d_ptrs_ + 3 * M), CUDA_R_16BF, k,
        const_cast<const void* const*>(d_ptrs_ + 4 * M), CUDA_R_16BF, k, &beta, d_ptrs_ + 5 * M,
        CUDA_R_16BF, n, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  if (groups > 0)
    EEP_CUBLAS_CHECK(cublasGemmGroupedBatchedEx(
        handle_, ta.data(), tb.data(), m_arr.data(), n_arr.data(), k_arr.data(), alphas.data(),
        const_cast<const void* const*>(d_ptrs_), CUDA_R_16BF, lda.data(),
        const_cast<const void* const*>(d_ptrs_ + M), CUDA_R_16BF, ldb.data(), betas.data(),
        d_ptrs_ + 2 * M, CUDA_R_16BF, ldc.data(), groups, group_size.data(),
        CUBLAS_COMPUTE_32F));
}

}  // namespace eep::kernels
