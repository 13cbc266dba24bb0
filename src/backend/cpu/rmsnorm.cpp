// RMSNorm over the last axis: y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps), per row of x (T, C).
// Forward overwrites y and rstd (T); backward ACCUMULATES into dx (T, C) and dw (C), each optional.
// Backward: with n = x * rstd, dx = rstd * (dy*w - n * mean(dy*w*n)), dw = sum over rows of dy * n.
#include <algorithm>
#include <cmath>

#include "backend/cpu/ops.h"

namespace gsa::cpu {

void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int T, int C, float eps) {
#pragma omp parallel for schedule(static) if (int64_t(T) * C >= (1 << 15))
  for (int t = 0; t < T; t++) {
    const float* xr = x + int64_t(t) * C;
    float* yr = y + int64_t(t) * C;
    double ss = 0.0;  // double: the mean of squares must not lose digits for wide rows
#pragma omp simd reduction(+ : ss)
    for (int c = 0; c < C; c++) ss += double(xr[c]) * xr[c];
    const float r = float(1.0 / std::sqrt(ss / C + double(eps)));
    if (rstd) rstd[t] = r;
    for (int c = 0; c < C; c++) yr[c] = (xr[c] * r) * w[c];
  }
}

void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd,
                      int T, int C) {
  const bool par = int64_t(T) * C >= (1 << 15);
  if (dx) {
#pragma omp parallel for schedule(static) if (par)
    for (int t = 0; t < T; t++) {
      const float* xr = x + int64_t(t) * C;
      const float* dyr = dy + int64_t(t) * C;
      float* dxr = dx + int64_t(t) * C;
      const float r = rstd[t];
      double dot = 0.0;  // sum of dy * w * x
#pragma omp simd reduction(+ : dot)
      for (int c = 0; c < C; c++) dot += double(dyr[c]) * w[c] * xr[c];
      const float k = float(dot / C) * r * r;  // mean(dy*w*n) / rstd, folded so n is not recomputed
      for (int c = 0; c < C; c++) dxr[c] += r * (dyr[c] * w[c] - xr[c] * k);
    }
  }
  if (dw) {
    // Rows all add into the same dw: split over columns so every thread owns a slice of dw.
    constexpr int col_block = 64;
    const int n_blocks = (C + col_block - 1) / col_block;
#pragma omp parallel for schedule(static) if (par)
    for (int b = 0; b < n_blocks; b++) {
      const int c0 = b * col_block, c1 = std::min(C, c0 + col_block);
      const int nc = c1 - c0;
      float acc[col_block] = {};
      for (int t = 0; t < T; t++) {
        const float* xr = x + int64_t(t) * C + c0;
        const float* dyr = dy + int64_t(t) * C + c0;
        const float r = rstd[t];
#pragma omp simd
        for (int c = 0; c < nc; c++) acc[c] += dyr[c] * xr[c] * r;
      }
      for (int c = 0; c < nc; c++) dw[c0 + c] += acc[c];
    }
  }
}

}  // namespace gsa::cpu
