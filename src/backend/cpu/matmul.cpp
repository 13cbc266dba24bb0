// matmul: y (M, N) = x (M, K) @ w (N, K)^T + bias (N). Row-major; w in the Hugging Face (out, in) layout.
// Forward overwrites y; backward ACCUMULATES into dx (M, K), dw (N, K), dbias (N), each optional (nullptr).
// M == 1 (decode) goes through an own OpenMP matrix-vector kernel: sgemm's packing overhead dominates there and
// the work is a pure stream over w, best split over output rows. Everything else goes to OpenBLAS sgemm
// through gemm() (gemm.h: fixed tiles, results independent of the thread count).
#include <cstring>

#include "backend/cpu/gemm.h"
#include "backend/cpu/ops.h"

namespace gsa::cpu {

namespace {

// y (N) = w (N, K) @ x (K) + bias. Each output is an independent dot product over a contiguous row of w.
void matvec(float* y, const float* x, const float* w, const float* bias, int K, int N) {
  const bool par = int64_t(N) * K >= (1 << 15);  // below this, thread start-up costs more than the work
#pragma omp parallel for schedule(static) if (par)
  for (int n = 0; n < N; n++) {
    const float* wr = w + int64_t(n) * K;
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int k = 0; k < K; k++) acc += wr[k] * x[k];
    y[n] = acc + (bias ? bias[n] : 0.0f);
  }
}

}  // namespace

void matmul_forward(float* y, const float* x, const float* w, const float* bias, int M, int K, int N) {
  if (M <= 0 || N <= 0) return;
  if (M == 1) {
    matvec(y, x, w, bias, K, N);
    return;
  }
  float beta = 0.0f;
  if (bias) {
    for (int m = 0; m < M; m++) std::memcpy(y + int64_t(m) * N, bias, sizeof(float) * N);
    beta = 1.0f;
  }
  if (K <= 0) {
    if (!bias) std::memset(y, 0, sizeof(float) * int64_t(M) * N);
    return;
  }
  gemm(false, true, M, N, K, 1.0f, x, K, w, K, beta, y, N);
}

void matmul_backward(float* dx, float* dw, float* dbias, const float* dy, const float* x, const float* w, int M,
                     int K, int N) {
  if (M <= 0 || N <= 0) return;
  if (dx && K > 0)  // dx (M, K) += dy (M, N) @ w (N, K)
    gemm(false, false, M, K, N, 1.0f, dy, N, w, K, 1.0f, dx, K);
  if (dw && K > 0)  // dw (N, K) += dy^T (N, M) @ x (M, K)
    gemm(true, false, N, K, M, 1.0f, dy, N, x, K, 1.0f, dw, K);
  if (dbias) {
#pragma omp parallel for schedule(static) if (int64_t(M) * N >= (1 << 16))
    for (int n = 0; n < N; n++) {
      float acc = 0.0f;
      for (int m = 0; m < M; m++) acc += dy[int64_t(m) * N + n];
      dbias[n] += acc;
    }
  }
}

}  // namespace gsa::cpu
