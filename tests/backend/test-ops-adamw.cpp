// AdamW against a naive scalar implementation of torch.optim.AdamW over several steps; gradient-norm helpers.
#include <gtest/gtest.h>

#include "backend/cpu/ops.h"
#include "test-ops-util.h"

using namespace gsa;
using namespace gsa::test;

TEST(ops_adamw, matches_scalar_reference_over_steps) {
  rng r(40);
  const int64_t n = 50001;  // above the OpenMP threshold, odd
  cpu::adamw_params hp;
  hp.lr = 3e-3f;
  hp.beta1 = 0.9f;
  hp.beta2 = 0.95f;
  hp.eps = 1e-8f;
  hp.weight_decay = 0.1f;
  auto p = randn(n, r);
  std::vector<float> m(n, 0.0f), v(n, 0.0f);
  std::vector<double> rp(p.begin(), p.end()), rm(n, 0.0), rv(n, 0.0);
  for (int64_t t = 1; t <= 6; t++) {
    auto g = randn(n, r, t == 3 ? 1e-3f : 1.0f);  // one step of tiny gradients exercises eps / bias correction
    cpu::adamw_step(p.data(), g.data(), m.data(), v.data(), n, t, hp);
    const double bc1 = 1 - std::pow(double(hp.beta1), double(t)), bc2 = 1 - std::pow(double(hp.beta2), double(t));
    for (int64_t i = 0; i < n; i++) {
      rp[i] *= 1 - double(hp.lr) * hp.weight_decay;
      rm[i] = hp.beta1 * rm[i] + (1 - double(hp.beta1)) * g[i];
      rv[i] = hp.beta2 * rv[i] + (1 - double(hp.beta2)) * double(g[i]) * g[i];
      rp[i] -= hp.lr * (rm[i] / bc1) / (std::sqrt(rv[i] / bc2) + hp.eps);
    }
  }
  // m and v are compared relative to their own size, floored at the gradient scale (cancellation makes some ~0).
  double err_p = 0, err_m = 0, err_v = 0;
  for (int64_t i = 0; i < n; i++) {
    err_p = std::max(err_p, std::fabs(p[i] - rp[i]));
    err_m = std::max(err_m, std::fabs(m[i] - rm[i]) / (std::fabs(rm[i]) + 0.1));
    err_v = std::max(err_v, std::fabs(v[i] - rv[i]) / (std::fabs(rv[i]) + 1e-2));
  }
  EXPECT_LT(err_p, 1e-5);  // p ~ 1, each step moves it by ~lr
  EXPECT_LT(err_m, 1e-5);
  EXPECT_LT(err_v, 1e-5);
}

TEST(ops_adamw, first_step_moves_by_lr) {
  // At t = 1 with zero state, mhat / sqrt(vhat) = sign(g): every parameter moves by lr (no decay).
  std::vector<float> p = {1.0f, -2.0f, 0.5f}, g = {0.3f, -7.0f, 1e-2f}, m(3), v(3);
  cpu::adamw_params hp;
  hp.lr = 0.01f;
  cpu::adamw_step(p.data(), g.data(), m.data(), v.data(), 3, 1, hp);
  EXPECT_NEAR(p[0], 0.99f, 1e-6);
  EXPECT_NEAR(p[1], -1.99f, 1e-6);
  EXPECT_NEAR(p[2], 0.49f, 1e-5);
}

TEST(ops_grad_norm, sum_squares_clip_scale) {
  rng r(41);
  const int64_t n = 70001;
  auto g = randn(n, r);
  double ref = 0;
  for (float x : g) ref += double(x) * x;
  EXPECT_NEAR(cpu::sum_squares(g.data(), n), ref, 1e-9 * ref);

  EXPECT_NEAR(cpu::clip_factor(10.0, 1.0f), 1.0 / (10.0 + 1e-6), 1e-7);
  EXPECT_EQ(cpu::clip_factor(0.5, 1.0f), 1.0f);  // never scales up
  EXPECT_EQ(cpu::clip_factor(0.0, 1.0f), 1.0f);
  EXPECT_TRUE(std::isnan(cpu::clip_factor(std::nan(""), 1.0f)));

  auto h = g;
  cpu::scale_inplace(h.data(), n, 0.25f);
  for (int64_t i = 0; i < n; i++) ASSERT_EQ(h[i], g[i] * 0.25f);
}
