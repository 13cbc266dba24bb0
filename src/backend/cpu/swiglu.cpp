// SwiGLU: y = silu(gate) * up, silu(g) = g * sigmoid(g), elementwise over n values.
// Forward overwrites y; backward ACCUMULATES into dgate and dup, each optional.
#include <cmath>

#include "backend/cpu/ops.h"

namespace gsa::cpu {

namespace {
// 1 / (1 + exp(-g)): exp overflows to inf for very negative g, giving exactly 0, which is the right limit.
inline float sigmoid(float g) { return 1.0f / (1.0f + std::exp(-g)); }
constexpr int64_t par_min = 1 << 15;
}  // namespace

void swiglu_forward(float* y, const float* gate, const float* up, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= par_min)
  for (int64_t i = 0; i < n; i++) y[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

void swiglu_backward(float* dgate, float* dup, const float* dy, const float* gate, const float* up, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= par_min)
  for (int64_t i = 0; i < n; i++) {
    const float g = gate[i], s = sigmoid(g);
    if (dgate) dgate[i] += dy[i] * up[i] * s * (1.0f + g * (1.0f - s));  // d silu / dg = s (1 + g (1 - s))
    if (dup) dup[i] += dy[i] * g * s;
  }
}

}  // namespace gsa::cpu
