// Optimizer pieces, with torch.optim.AdamW semantics (decoupled weight decay, bias correction), and the pieces
// of global-norm gradient clipping (torch.nn.utils.clip_grad_norm_). All update their buffers in place.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/ops.h"

namespace gsa::cpu {

namespace {
constexpr int64_t par_min = 1 << 15;
}

void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, int64_t t, const adamw_params& hp) {
  // Same order of operations as PyTorch's single-tensor AdamW, so long runs track it closely:
  // p *= 1 - lr*wd; m, v updated; p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps).
  const double bc1 = 1.0 - std::pow(double(hp.beta1), double(t));
  const double bc2 = 1.0 - std::pow(double(hp.beta2), double(t));
  const float step_size = float(hp.lr / bc1);
  const float sqrt_bc2 = float(std::sqrt(bc2));
  const float decay = 1.0f - hp.lr * hp.weight_decay;
  const float b1 = hp.beta1, b2 = hp.beta2, eps = hp.eps;
#pragma omp parallel for simd schedule(static) if (n >= par_min)
  for (int64_t i = 0; i < n; i++) {
    const float gi = g[i];
    const float mi = m[i] + (1.0f - b1) * (gi - m[i]);  // torch's lerp_
    const float vi = v[i] * b2 + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step_size * (mi / (std::sqrt(vi) / sqrt_bc2 + eps));
  }
}

double sum_squares(const float* g, int64_t n) {
  // Fixed blocks summed in block order: the result does not depend on the thread count (an OpenMP reduction's
  // partial sums follow the team size, so a run resumed with another number of threads drifted; issue 12).
  constexpr int64_t blk = 1 << 14;
  const int64_t nb = (n + blk - 1) / blk;
  std::vector<double> part(size_t(std::max<int64_t>(nb, 0)));
#pragma omp parallel for schedule(static) if (n >= par_min)
  for (int64_t b = 0; b < nb; b++) {
    const int64_t i0 = b * blk, i1 = std::min(n, i0 + blk);
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = i0; i < i1; i++) s += double(g[i]) * g[i];
    part[size_t(b)] = s;
  }
  double s = 0.0;
  for (double x : part) s += x;
  return s;
}

float clip_factor(double global_norm, float max_norm) {
  const double f = double(max_norm) / (global_norm + 1e-6);
  // A NaN norm (a NaN gradient) yields NaN, as in PyTorch: the caller must see it rather than get a silent 1.
  if (std::isnan(f)) return std::numeric_limits<float>::quiet_NaN();
  return f < 1.0 ? float(f) : 1.0f;
}

void scale_inplace(float* g, int64_t n, float s) {
#pragma omp parallel for simd schedule(static) if (n >= par_min)
  for (int64_t i = 0; i < n; i++) g[i] *= s;
}

}  // namespace gsa::cpu
