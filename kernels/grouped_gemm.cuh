// Expert grouped GEMM through cuBLAS. Row-major y_e[m_e][n] = x_e[m_e][k] * w_e[n][k]^T is, in
// cuBLAS's column-major terms, y_e^T (n x m_e, ld n) = op_T(w_e: k x n, ld k) * x_e^T (k x m_e,
// ld k): transa = T, transb = N, M = n, N = m_e, K = k. Nothing device-side lives here yet;
// the header keeps the one-op-per-pair layout and is where an own kernel will go.
#pragma once

#include <cublas_v2.h>

namespace eep::kernels::detail {

constexpr cublasOperation_t kGroupedTransA = CUBLAS_OP_T;
constexpr cublasOperation_t kGroupedTransB = CUBLAS_OP_N;

}  // namespace eep::kernels::detail
