// LM head + cross-entropy vs a naive reference that materialises the logits in double; chunking edge cases
// (chunks that do not divide V, more rows than one row block), ignored rows, finite differences, accumulation.
#include <gtest/gtest.h>

#include "backend/cpu/ops.h"
#include "core/error.h"
#include "test-ops-util.h"

using namespace gsa;
using namespace gsa::test;

namespace {

struct xent_case {
  int T, C, V, chunk;
};

struct xent_ref {
  std::vector<double> lse;
  double loss = 0;
  int64_t valid = 0;
  std::vector<float> dh, dw;
};

xent_ref naive_xent(const std::vector<float>& h, const std::vector<float>& w, const std::vector<int32_t>& y, int T,
                    int C, int V, float scale) {
  xent_ref r;
  r.lse.resize(T);
  r.dh.assign(size_t(T) * C, 0.0f);
  r.dw.assign(size_t(V) * C, 0.0f);
  std::vector<double> dwd(size_t(V) * C, 0.0), logit(V);
  for (int t = 0; t < T; t++) {
    double mx = -1e300;
    for (int v = 0; v < V; v++) {
      double s = 0;
      for (int c = 0; c < C; c++) s += double(h[size_t(t) * C + c]) * w[size_t(v) * C + c];
      logit[v] = s;
      mx = std::max(mx, s);
    }
    double se = 0;
    for (int v = 0; v < V; v++) se += std::exp(logit[v] - mx);
    r.lse[t] = mx + std::log(se);
    if (y[t] == -100) continue;
    r.loss += r.lse[t] - logit[y[t]];
    r.valid++;
    for (int v = 0; v < V; v++) {
      const double d = scale * (std::exp(logit[v] - r.lse[t]) - (v == y[t] ? 1.0 : 0.0));
      for (int c = 0; c < C; c++) {
        r.dh[size_t(t) * C + c] += float(d * w[size_t(v) * C + c]);
        dwd[size_t(v) * C + c] += d * h[size_t(t) * C + c];
      }
    }
  }
  for (size_t i = 0; i < dwd.size(); i++) r.dw[i] = float(dwd[i]);
  return r;
}

std::vector<int32_t> random_targets(int T, int V, rng& r) {
  std::vector<int32_t> y(T);
  for (auto& v : y) v = r.below(5) == 0 ? -100 : int32_t(r.below(V));
  y[0] = V - 1;  // the last class sits in the (partial) last chunk
  return y;
}

}  // namespace

TEST(ops_xent, matches_naive) {
  rng r(30);
  const xent_case cases[] = {{1, 4, 3, 4096}, {7, 19, 103, 16}, {37, 11, 50, 50}, {300, 8, 61, 7}};
  for (auto [T, C, V, chunk] : cases) {
    auto h = randn(size_t(T) * C, r), w = randn(size_t(V) * C, r, 0.5f);
    auto y = random_targets(T, V, r);
    const float scale = 0.37f;
    auto ref = naive_xent(h, w, y, T, C, V, scale);
    std::vector<float> lse(T);
    int64_t valid = -1;
    const double loss = cpu::lm_head_xent_forward(lse.data(), h.data(), w.data(), y.data(), T, C, V, &valid, chunk);
    EXPECT_EQ(valid, ref.valid);
    EXPECT_NEAR(loss, ref.loss, 1e-5 * (1 + std::fabs(ref.loss))) << T << "," << C << "," << V << "," << chunk;
    for (int t = 0; t < T; t++) EXPECT_NEAR(lse[t], ref.lse[t], 1e-5 * (1 + std::fabs(ref.lse[t]))) << t;

    // backward into non-zero buffers: it must add
    auto dh0 = randn(ref.dh.size(), r), dw0 = randn(ref.dw.size(), r);
    auto dh = dh0, dw = dw0;
    cpu::lm_head_xent_backward(dh.data(), dw.data(), h.data(), w.data(), y.data(), lse.data(), T, C, V, scale,
                               chunk);
    EXPECT_LT(max_rel_err(added(dh, dh0), ref.dh), 1e-4);
    EXPECT_LT(max_rel_err(added(dw, dw0), ref.dw), 1e-4);
    // twice from zero = doubled; nullptr outputs skipped
    std::vector<float> dh2(ref.dh.size()), dw2(ref.dw.size());
    for (int rep = 0; rep < 2; rep++)
      cpu::lm_head_xent_backward(dh2.data(), rep ? nullptr : dw2.data(), h.data(), w.data(), y.data(), lse.data(),
                                 T, C, V, scale, chunk);
    cpu::lm_head_xent_backward(nullptr, dw2.data(), h.data(), w.data(), y.data(), lse.data(), T, C, V, scale, chunk);
    for (auto* v : {&ref.dh, &ref.dw})
      for (auto& e : *v) e *= 2;
    EXPECT_LT(max_rel_err(dh2, ref.dh), 1e-4);
    EXPECT_LT(max_rel_err(dw2, ref.dw), 1e-4);
  }
}

TEST(ops_xent, large_logits_are_stable) {
  // Logits around 1e3 would overflow a naive exp; the online max keeps everything finite.
  const int T = 2, C = 1, V = 5;
  std::vector<float> h = {1000.0f, -1000.0f}, w = {1.0f, 0.999f, 0.5f, -1.0f, -0.999f};
  std::vector<int32_t> y = {0, 3};
  std::vector<float> lse(T);
  int64_t valid = 0;
  const double loss = cpu::lm_head_xent_forward(lse.data(), h.data(), w.data(), y.data(), T, C, V, &valid, 2);
  // row 0: logits 1000, 999, 500, -1000, -999 -> lse = 1000 + log(1 + e^-1); row 1 mirrors it (class 3).
  const double want = 2 * std::log1p(std::exp(-1.0));
  EXPECT_NEAR(loss, want, 1e-4);
  EXPECT_EQ(valid, 2);
  EXPECT_NEAR(lse[0], 1000.0 + std::log1p(std::exp(-1.0)), 1e-3);
}

TEST(ops_xent, backward_matches_finite_differences) {
  rng r(31);
  const int T = 5, C = 6, V = 23, chunk = 8;
  auto h = randn(size_t(T) * C, r), w = randn(size_t(V) * C, r);
  auto y = random_targets(T, V, r);
  y[1] = -100;
  std::vector<float> lse(T);
  const float scale = 0.5f;
  auto loss = [&] {
    int64_t valid;
    return scale * cpu::lm_head_xent_forward(lse.data(), h.data(), w.data(), y.data(), T, C, V, &valid, chunk);
  };
  loss();
  std::vector<float> dh(h.size()), dw(w.size());
  cpu::lm_head_xent_backward(dh.data(), dw.data(), h.data(), w.data(), y.data(), lse.data(), T, C, V, scale, chunk);
  for (int c = 0; c < C; c++) EXPECT_EQ(dh[1 * C + c], 0.0f);  // the ignored row gets no gradient
  check_grad_fd(h, dh, loss, r, "dh", 30, 1e-2f, 1e-2);
  check_grad_fd(w, dw, loss, r, "dw", 30, 1e-2f, 1e-2);
}

TEST(ops_xent, rejects_bad_targets) {
  std::vector<float> h(4, 1.0f), w(6, 1.0f), lse(2);
  std::vector<int32_t> y = {0, 3};  // V = 3: class 3 does not exist
  int64_t valid;
  EXPECT_THROW(cpu::lm_head_xent_forward(lse.data(), h.data(), w.data(), y.data(), 2, 2, 3, &valid), gsa::error);
  y[1] = -1;
  EXPECT_THROW(cpu::lm_head_xent_forward(lse.data(), h.data(), w.data(), y.data(), 2, 2, 3, &valid), gsa::error);
}
