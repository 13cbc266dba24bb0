// RMSNorm and SwiGLU vs naive references, finite differences, accumulate semantics.
#include <gtest/gtest.h>

#include "backend/cpu/ops.h"
#include "test-ops-util.h"

using namespace gsa;
using namespace gsa::test;

TEST(ops_rmsnorm, forward_matches_naive) {
  rng r(10);
  for (auto [T, C] : {std::pair{1, 1}, {3, 7}, {17, 129}, {300, 256}}) {
    auto x = randn(size_t(T) * C, r, 3.0f), w = randn(C, r);
    const float eps = 1e-5f;
    std::vector<float> y(x.size(), 9.0f), rstd(T, 9.0f);
    cpu::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), T, C, eps);
    std::vector<float> ry(x.size()), rr(T);
    for (int t = 0; t < T; t++) {
      double ss = 0;
      for (int c = 0; c < C; c++) ss += double(x[size_t(t) * C + c]) * x[size_t(t) * C + c];
      const double k = 1.0 / std::sqrt(ss / C + eps);
      rr[t] = float(k);
      for (int c = 0; c < C; c++) ry[size_t(t) * C + c] = float(x[size_t(t) * C + c] * k * w[c]);
    }
    EXPECT_LT(max_rel_err(y, ry), 1e-6) << T << "x" << C;
    EXPECT_LT(max_rel_err(rstd, rr), 1e-6) << T << "x" << C;
  }
}

TEST(ops_rmsnorm, backward_matches_finite_differences_and_accumulates) {
  rng r(11);
  for (auto [T0, C0] : {std::pair{1, 5}, {4, 70}}) {
    const auto T = T0, C = C0;  // plain copies: clang 14 cannot capture structured bindings in lambdas
    auto x = randn(size_t(T) * C, r), w = randn(C, r), rr = randn(size_t(T) * C, r);
    const float eps = 1e-5f;
    std::vector<float> y(x.size()), rstd(T);
    auto loss = [&] {
      cpu::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), T, C, eps);
      return dot(y, rr);
    };
    loss();
    std::vector<float> dx(x.size()), dw(C);
    cpu::rmsnorm_backward(dx.data(), dw.data(), rr.data(), x.data(), w.data(), rstd.data(), T, C);
    check_grad_fd(x, dx, loss, r, "dx", 24, 1e-2f, 1e-2);
    check_grad_fd(w, dw, loss, r, "dw", 24, 1e-2f, 1e-2);
    // a second call doubles; nullptr skips
    loss();
    auto dx2 = dx, dw2 = dw;
    cpu::rmsnorm_backward(dx2.data(), dw2.data(), rr.data(), x.data(), w.data(), rstd.data(), T, C);
    cpu::rmsnorm_backward(nullptr, nullptr, rr.data(), x.data(), w.data(), rstd.data(), T, C);
    for (size_t i = 0; i < dx.size(); i++) EXPECT_NEAR(dx2[i], 2 * dx[i], 1e-5 * (1 + std::fabs(dx[i])));
    for (int c = 0; c < C; c++) EXPECT_NEAR(dw2[c], 2 * dw[c], 1e-5 * (1 + std::fabs(dw[c])));
  }
}

TEST(ops_swiglu, forward_matches_naive) {
  rng r(12);
  const int64_t n = 40000;  // above the OpenMP threshold
  auto g = randn(n, r, 4.0f), u = randn(n, r);
  g[0] = -200.0f;  // exp overflow side: silu -> 0
  g[1] = 200.0f;   // silu -> g
  std::vector<float> y(n, 5.0f);
  cpu::swiglu_forward(y.data(), g.data(), u.data(), n);
  std::vector<float> ref(n);
  for (int64_t i = 0; i < n; i++) ref[i] = float(double(g[i]) / (1.0 + std::exp(-double(g[i]))) * u[i]);
  EXPECT_LT(max_rel_err(y, ref), 1e-6);
  EXPECT_EQ(y[0], 0.0f);
}

TEST(ops_swiglu, backward_matches_finite_differences_and_accumulates) {
  rng r(13);
  const int64_t n = 301;
  auto g = randn(n, r, 3.0f), u = randn(n, r), rr = randn(n, r);
  std::vector<float> y(n);
  auto loss = [&] {
    cpu::swiglu_forward(y.data(), g.data(), u.data(), n);
    return dot(y, rr);
  };
  std::vector<float> dg(n), du(n);
  cpu::swiglu_backward(dg.data(), du.data(), rr.data(), g.data(), u.data(), n);
  check_grad_fd(g, dg, loss, r, "dgate", 40, 1e-3f, 2e-3);
  check_grad_fd(u, du, loss, r, "dup", 40, 1e-2f, 1e-3);
  auto dg2 = dg, du2 = du;
  cpu::swiglu_backward(dg2.data(), du2.data(), rr.data(), g.data(), u.data(), n);
  cpu::swiglu_backward(nullptr, nullptr, rr.data(), g.data(), u.data(), n);
  for (int64_t i = 0; i < n; i++) {
    EXPECT_NEAR(dg2[i], 2 * dg[i], 1e-6 * (1 + std::fabs(dg[i])));
    EXPECT_NEAR(du2[i], 2 * du[i], 1e-6 * (1 + std::fabs(du[i])));
  }
}
