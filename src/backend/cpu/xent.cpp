// LM head fused with softmax cross-entropy. h (T, C) rows, w (V, C) the head in (out, in) layout, targets (T) with
// -100 = ignore. The (T, V) logits are never stored: rows go in blocks of row_block, the vocabulary in chunks of
// vocab_chunk, and each (row block x vocab chunk) tile of logits is one sgemm into a small scratch buffer.
// Forward keeps a running (max, sum of exp) per row (online log-sum-exp) and writes lse (T).
// Backward recomputes each tile, turns it into dlogits = scale * (softmax - onehot) (zero for ignored rows) and
// ACCUMULATES dh += dlogits @ w_chunk and dw_chunk += dlogits^T @ h_block, each optional (nullptr).
// Threads: sgemm uses OpenBLAS's own threads; the elementwise pass over a tile is split over rows with OpenMP.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "backend/cpu/gemm.h"
#include "backend/cpu/ops.h"
#include "core/error.h"

namespace gsa::cpu {

namespace {

constexpr int row_block = 256;
constexpr int32_t ignore_index = -100;

void check_args(const int32_t* targets, int T, int C, int V, int vocab_chunk) {
  if (vocab_chunk <= 0) fail("lm_head_xent: vocab_chunk {} must be positive", vocab_chunk);
  if (V <= 0 || C <= 0) fail("lm_head_xent: empty head (V = {}, C = {})", V, C);
  for (int t = 0; t < T; t++)
    if (targets[t] != ignore_index && (targets[t] < 0 || targets[t] >= V))
      fail("lm_head_xent: target {} at row {} is outside the vocabulary [0, {}) (use -100 to ignore a row)",
           targets[t], t, V);
}

// exp for the softmax passes, written so that the loops over a tile vectorise (libm's expf does not without
// -ffast-math, and the exps cost about as much as the sgemm). exp(x) = 2^n * exp(r), n = round(x / ln 2),
// |r| <= ln 2 / 2, exp(r) by its degree-7 Taylor polynomial: relative error ~2e-7 (a couple of ulp).
// Arguments below -87 flush to 0 (exp(-87) is at float's smallest normal and negligible next to the sum, which
// is >= 1); NaN propagates.
inline float exp_fast(float x) {
  const bool tiny = x < -87.0f;
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  constexpr float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = (x * 1.44269504088896341f + shifter) - shifter;
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187045e-6f;  // ln 2 split in hi + lo
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float scale = std::bit_cast<float>(uint32_t(int32_t(n) + 127) << 23);
  return tiny ? 0.0f : p * scale;
}

// tile (rows, n) = h_block (rows, C) @ w[v0 : v0 + n] (n, C)^T
void logits_tile(float* tile, const float* hb, const float* w, int rows, int C, int v0, int n) {
  gemm(false, true, rows, n, C, 1.0f, hb, C, w + int64_t(v0) * C, C, 0.0f, tile, n);
}

}  // namespace

double lm_head_xent_forward(float* lse, const float* h, const float* w, const int32_t* targets, int T, int C, int V,
                            int64_t* n_valid, int vocab_chunk) {
  check_args(targets, T, C, V, vocab_chunk);
  const int vc = std::min(vocab_chunk, V);
  std::vector<float> tile(size_t(std::min(row_block, std::max(T, 1))) * vc);
  std::vector<float> run_max(T, -std::numeric_limits<float>::infinity());
  std::vector<double> run_sum(T, 0.0);
  std::vector<float> target_logit(T, 0.0f);
  for (int t0 = 0; t0 < T; t0 += row_block) {
    const int rows = std::min(row_block, T - t0);
    for (int v0 = 0; v0 < V; v0 += vc) {
      const int n = std::min(vc, V - v0);
      logits_tile(tile.data(), h + int64_t(t0) * C, w, rows, C, v0, n);
#pragma omp parallel for schedule(static) if (int64_t(rows) * n >= (1 << 15))
      for (int r = 0; r < rows; r++) {
        const int t = t0 + r;
        const float* l = tile.data() + int64_t(r) * n;
        float mx = run_max[t];
#pragma omp simd reduction(max : mx)
        for (int j = 0; j < n; j++) mx = l[j] > mx ? l[j] : mx;
        float s = 0.0f;  // <= n terms each <= 1: float is exact enough per chunk
#pragma omp simd reduction(+ : s)
        for (int j = 0; j < n; j++) s += exp_fast(l[j] - mx);
        run_sum[t] = run_sum[t] * std::exp(double(run_max[t]) - mx) + s;  // exp(-inf) = 0 on the first chunk
        run_max[t] = mx;
        const int32_t y = targets[t];
        if (y >= v0 && y < v0 + n) target_logit[t] = l[y - v0];
      }
    }
  }
  double loss = 0.0;
  int64_t valid = 0;
  for (int t = 0; t < T; t++) {
    const double l = double(run_max[t]) + std::log(run_sum[t]);
    if (lse) lse[t] = float(l);
    if (targets[t] == ignore_index) continue;
    loss += l - target_logit[t];
    valid++;
  }
  if (n_valid) *n_valid = valid;
  return loss;
}

void lm_head_xent_backward(float* dh, float* dw, const float* h, const float* w, const int32_t* targets,
                           const float* lse, int T, int C, int V, float scale, int vocab_chunk) {
  if (!dh && !dw) return;
  check_args(targets, T, C, V, vocab_chunk);
  const int vc = std::min(vocab_chunk, V);
  std::vector<float> tile(size_t(std::min(row_block, std::max(T, 1))) * vc);
  for (int t0 = 0; t0 < T; t0 += row_block) {
    const int rows = std::min(row_block, T - t0);
    bool any_valid = false;
    for (int r = 0; r < rows; r++) any_valid |= targets[t0 + r] != ignore_index;
    if (!any_valid) continue;  // every dlogit would be zero
    const float* hb = h + int64_t(t0) * C;
    for (int v0 = 0; v0 < V; v0 += vc) {
      const int n = std::min(vc, V - v0);
      logits_tile(tile.data(), hb, w, rows, C, v0, n);
#pragma omp parallel for schedule(static) if (int64_t(rows) * n >= (1 << 15))
      for (int r = 0; r < rows; r++) {
        const int t = t0 + r;
        float* l = tile.data() + int64_t(r) * n;
        const int32_t y = targets[t];
        if (y == ignore_index) {
          std::fill(l, l + n, 0.0f);
          continue;
        }
        const float m = lse[t];
#pragma omp simd
        for (int j = 0; j < n; j++) l[j] = scale * exp_fast(l[j] - m);
        if (y >= v0 && y < v0 + n) l[y - v0] -= scale;
      }
      if (dh)  // dh (rows, C) += dlogits (rows, n) @ w_chunk (n, C)
        gemm(false, false, rows, C, n, 1.0f, tile.data(), n, w + int64_t(v0) * C, C, 1.0f, dh + int64_t(t0) * C, C);
      if (dw)  // dw_chunk (n, C) += dlogits^T (n, rows) @ h_block (rows, C)
        gemm(true, false, n, C, rows, 1.0f, tile.data(), n, hb, C, 1.0f, dw + int64_t(v0) * C, C);
    }
  }
}

}  // namespace gsa::cpu
