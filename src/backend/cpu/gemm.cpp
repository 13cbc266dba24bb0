#include "backend/cpu/gemm.h"

#include <cblas.h>

#include <algorithm>
#include <cstdint>
#include <mutex>

namespace gsa::cpu {

namespace {

// OpenBLAS runs single-threaded: the threads are ours (see gemm.h).
void single_threaded_blas() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

constexpr int kMaxTiles = 16;       // enough for a 16-core machine; fixed, never the thread count
constexpr int64_t kMinTileWork = int64_t(1) << 20;  // multiply-adds per tile below which one tile does it all

}  // namespace

void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
          int ldb, float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  single_threaded_blas();
  const auto ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
  const int64_t work = int64_t(M) * N * std::max(K, 1);
  const int tiles = int(std::clamp<int64_t>(work / kMinTileWork, 1, kMaxTiles));
  // Cut the longer side of C: rows (tiles of op(A)'s rows) or columns (tiles of op(B)'s columns).
  const bool by_rows = M >= N;
  const int len = by_rows ? M : N, n_tiles = std::min(tiles, len);
#pragma omp parallel for schedule(static) if (n_tiles > 1)
  for (int t = 0; t < n_tiles; t++) {
    const int a = int(int64_t(len) * t / n_tiles), b = int(int64_t(len) * (t + 1) / n_tiles);
    if (by_rows) {  // rows [a, b) of C and of op(A): A's rows (NoTrans) or columns (Trans)
      const float* At = trans_a ? A + a : A + int64_t(a) * lda;
      cblas_sgemm(CblasRowMajor, ta, tb, b - a, N, K, alpha, At, lda, B, ldb, beta, C + int64_t(a) * ldc, ldc);
    } else {  // columns [a, b) of C and of op(B): B's columns (NoTrans) or rows (Trans)
      const float* Bt = trans_b ? B + int64_t(a) * ldb : B + a;
      cblas_sgemm(CblasRowMajor, ta, tb, M, b - a, K, alpha, A, lda, Bt, ldb, beta, C + a, ldc);
    }
  }
}

}  // namespace gsa::cpu
