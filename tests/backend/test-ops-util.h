// Helpers for the operator tests: finite-difference gradient checks and small vector utilities.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "core/rng.h"
#include "test-util.h"

namespace gsa::test {

// Checks an analytic gradient g of a scalar loss() w.r.t. x by central differences at n_probe random entries.
// loss() must read x (and should sum in double). The error of each probe is measured against max |g| so that
// entries with a tiny gradient do not demand impossible relative precision from f32 forward passes.
inline void check_grad_fd(std::vector<float>& x, const std::vector<float>& g, const std::function<double()>& loss,
                          rng& r, const char* what, int n_probe = 24, float eps = 1e-2f, double tol = 1e-2) {
  ASSERT_EQ(x.size(), g.size()) << what;
  double gmax = 1e-12;
  for (float v : g) gmax = std::max(gmax, double(std::fabs(v)));
  for (int p = 0; p < n_probe; p++) {
    const size_t i = r.below(x.size());
    const float xi = x[i];
    const float hi = xi + eps, lo = xi - eps;
    x[i] = hi;
    const double lp = loss();
    x[i] = lo;
    const double lm = loss();
    x[i] = xi;
    const double fd = (lp - lm) / (double(hi) - double(lo));
    EXPECT_LE(std::fabs(fd - g[i]), tol * gmax) << what << "[" << i << "]: fd " << fd << " analytic " << g[i];
  }
}

inline double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); i++) s += double(a[i]) * b[i];
  return s;
}

// out - before, elementwise: what an accumulating op added.
inline std::vector<float> added(const std::vector<float>& out, const std::vector<float>& before) {
  std::vector<float> d(out.size());
  for (size_t i = 0; i < out.size(); i++) d[i] = out[i] - before[i];
  return d;
}

}  // namespace gsa::test
