// Every sgemm of the CPU backend goes through here. C (M, N) = alpha op(A) op(B) + beta C, row-major, as
// cblas_sgemm. The product is cut into fixed tiles of C (the cut depends on M, N and K only) and each tile is one
// single-threaded OpenBLAS call, with our OpenMP team over the tiles. No element's sum is ever split, and the
// split never depends on the thread count, so results are bit-identical at any number of threads (a run resumed
// with another thread count stays bit-exact; OpenBLAS's own threading changes its kernels' summation order).
#pragma once

namespace gsa::cpu {

void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
          int ldb, float beta, float* C, int ldc);

}  // namespace gsa::cpu
