// The routing distillation loss's host reference (backend/route-loss.h): against a construction of its own in
// double precision, its gist-key gradient against finite differences of the KL, no gradient into the teacher's
// raw keys, descent along it lowering the KL, and bad specs refused.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "backend/route-loss.h"
#include "backend/route-test-util.h"
#include "core/error.h"
#include "core/rng.h"
#include "test-ops-util.h"

namespace gsa {
namespace {

// The synthetic stream of route-test-util.h: 7 chunks of 4 raw tokens and 2 gists, 4 / 2 heads of 8.
struct layout {
  int c = 4, g = 2, chunks = 7, Hq = 4, Hkv = 2, D = 8;
  int T() const { return chunks * (c + g); }
  route_spec spec(int sink, int span = 1) const { return test::synthetic_route_spec(c, g, chunks, sink, 2, span); }
};

std::vector<float> randn(size_t n, rng& r, float sd) {
  std::vector<float> v(n);
  for (float& x : v) x = sd * r.normal();
  return v;
}

// The loss and its gradients written out again, in double: per (row, head) the softmax over every teacher key,
// summed per chunk; the best gist per chunk; KL and the student-side gradient.
struct reference {
  double kl = 0;
  std::vector<double> dq, dk;
};
reference construct(const layout& L, const route_spec& s, const std::vector<float>& q, const std::vector<float>& k) {
  reference out;
  out.dq.assign(q.size(), 0.0);
  out.dk.assign(k.size(), 0.0);
  const int G = L.Hq / L.Hkv;
  const double scale = 1.0 / std::sqrt(double(L.D));
  auto qk = [&](int t, int h, int pos) {
    double v = 0;
    for (int d = 0; d < L.D; d++)
      v += double(q[(size_t(t) * L.Hq + h) * L.D + d]) * k[(size_t(pos) * L.Hkv + h / G) * L.D + d];
    return v * scale;
  };
  for (int r = 0; r < s.R(); r++) {
    const int t = s.rows[size_t(r)], n = s.n_cand[size_t(r)];
    for (int h = 0; h < L.Hq; h++) {
      std::vector<double> mass(n, 0.0), sc(n);
      std::vector<int> best(n, 0);
      double z = 0;
      // Candidate u's teacher keys: the raw keys of its span chunks.
      auto keys = [&](int u) {
        std::vector<int> out;
        for (int c = u * s.span; c < (u + 1) * s.span; c++)
          for (int i = s.raw_begin[size_t(c)]; i < s.raw_end[size_t(c)]; i++) out.push_back(i);
        return out;
      };
      for (int u = 0; u < n; u++)
        for (int i : keys(u)) z += std::exp(qk(t, h, i));
      for (int u = 0; u < n; u++) {
        for (int i : keys(u)) mass[u] += std::exp(qk(t, h, i)) / z;
        sc[u] = -1e300;
        for (int j = 0; j < s.g; j++)
          if (qk(t, h, s.gist_begin[size_t(u)] + j) > sc[u]) sc[u] = qk(t, h, s.gist_begin[size_t(u)] + j), best[u] = j;
      }
      double zs = 0;
      for (int u = 0; u < n; u++) zs += std::exp(sc[u]);
      for (int u = 0; u < n; u++) {
        const double pq = std::exp(sc[u]) / zs;
        if (mass[u] > 0) out.kl += mass[u] * std::log(mass[u] / pq);
        const double ds = (pq - mass[u]) * scale;
        const int gp = s.gist_begin[size_t(u)] + best[u];
        for (int d = 0; d < L.D; d++) {
          out.dq[(size_t(t) * L.Hq + h) * L.D + d] += ds * k[(size_t(gp) * L.Hkv + h / G) * L.D + d];
          out.dk[(size_t(gp) * L.Hkv + h / G) * L.D + d] += ds * q[(size_t(t) * L.Hq + h) * L.D + d];
        }
      }
    }
  }
  out.kl /= double(s.R()) * L.Hq;
  return out;
}

TEST(RouteLoss, EqualsAConstructionInDouble) {
  for (int span : {1, 2})
    for (int sink : {0, 3}) {
      SCOPED_TRACE("sink " + std::to_string(sink) + " span " + std::to_string(span));
      layout L;
      const route_spec s = L.spec(sink, span);
      ASSERT_GT(s.R(), 0);
      rng r(7 + sink + 10 * span);
      const std::vector<float> q = randn(size_t(L.T()) * L.Hq * L.D, r, 1.0f);
      const std::vector<float> k = randn(size_t(L.T()) * L.Hkv * L.D, r, 1.0f);
      std::vector<float> dq(q.size(), 0.25f), dk(k.size(), -0.5f);  // accumulates onto what is there
      float kl = 1.0f;
      route_loss_host(dq.data(), dk.data(), &kl, q.data(), k.data(), L.T(), L.Hq, L.Hkv, L.D, s, 2.0f);
      const reference ref = construct(L, s, q, k);
      EXPECT_GT(ref.kl, 0.01);
      EXPECT_NEAR(kl - 1.0f, ref.kl, 1e-5 * (1 + ref.kl));
      double worst_q = 0, worst_k = 0, max_q = 0, max_k = 0;
      for (size_t i = 0; i < q.size(); i++) {
        worst_q = std::max(worst_q, std::fabs(dq[i] - 0.25 - 2.0 * ref.dq[i]));
        max_q = std::max(max_q, std::fabs(2.0 * ref.dq[i]));
      }
      for (size_t i = 0; i < k.size(); i++) {
        worst_k = std::max(worst_k, std::fabs(dk[i] + 0.5 - 2.0 * ref.dk[i]));
        max_k = std::max(max_k, std::fabs(2.0 * ref.dk[i]));
      }
      EXPECT_GT(max_q, 1e-3);
      EXPECT_GT(max_k, 1e-3);
      EXPECT_LT(worst_q, 1e-5 * max_q);
      EXPECT_LT(worst_k, 1e-5 * max_k);
    }
}

// The teacher is a target, not a path for gradients: the raw keys get none; the gist keys get exactly the
// derivative of the KL (finite differences, which see the teacher unchanged because it does not read gists).
TEST(RouteLoss, GistKeysGetTheKlsDerivativeAndRawKeysNone) {
  layout L;
  const route_spec s = L.spec(2);
  rng r(11);
  const std::vector<float> q = randn(size_t(L.T()) * L.Hq * L.D, r, 1.0f);
  std::vector<float> k = randn(size_t(L.T()) * L.Hkv * L.D, r, 1.0f);
  std::vector<float> dq(q.size(), 0.0f), dk(k.size(), 0.0f);
  float kl = 0;
  route_loss_host(dq.data(), dk.data(), &kl, q.data(), k.data(), L.T(), L.Hq, L.Hkv, L.D, s, 1.0f);
  const size_t row = size_t(L.Hkv) * L.D;
  for (int u = 0; u < L.chunks; u++)
    for (int i = u * (L.c + L.g); i < u * (L.c + L.g) + L.c; i++)
      for (size_t e = 0; e < row; e++) ASSERT_EQ(dk[size_t(i) * row + e], 0.0f) << "raw key " << i;
  // The gradient (grad_scale 1) is of the KLs' sum over the R x Hq (row, head) pairs; kl is their mean.
  const double pairs = double(s.R()) * L.Hq;
  auto loss = [&] {
    std::vector<float> a(q.size()), b(k.size());
    float v = 0;
    route_loss_host(a.data(), b.data(), &v, q.data(), k.data(), L.T(), L.Hq, L.Hkv, L.D, s, 1.0f);
    return double(v);
  };
  // Probe the gist rows only (the raw rows' KL derivative is the teacher's, which the loss does not follow).
  std::vector<float> gk, gg;
  std::vector<size_t> at;
  for (int u = 0; u < L.chunks - 1; u++)
    for (int j = 0; j < L.g; j++)
      for (size_t e = 0; e < row; e++) at.push_back(size_t(u * (L.c + L.g) + L.c + j) * row + e);
  double gmax = 0;
  for (size_t i : at) gmax = std::max(gmax, double(std::fabs(dk[i])));
  ASSERT_GT(gmax, 1e-4);
  for (int p = 0; p < 40; p++) {
    const size_t i = at[r.below(at.size())];
    const float x = k[i];
    k[i] = x + 1e-2f;
    const double hi = loss();
    k[i] = x - 1e-2f;
    const double lo = loss();
    k[i] = x;
    EXPECT_NEAR(pairs * (hi - lo) / 2e-2, dk[i], 2e-2 * gmax) << "gist key entry " << i;
  }
}

TEST(RouteLoss, DescentAlongTheGradientLowersTheKl) {
  layout L;
  const route_spec s = L.spec(0);
  rng r(5);
  std::vector<float> q = randn(size_t(L.T()) * L.Hq * L.D, r, 1.0f), k = randn(size_t(L.T()) * L.Hkv * L.D, r, 1.0f);
  float first = 0, last = 0;
  for (int step = 0; step < 30; step++) {
    std::vector<float> dq(q.size(), 0.0f), dk(k.size(), 0.0f);
    float kl = 0;
    route_loss_host(dq.data(), dk.data(), &kl, q.data(), k.data(), L.T(), L.Hq, L.Hkv, L.D, s, 1.0f);
    if (step == 0) first = kl;
    last = kl;
    for (size_t i = 0; i < k.size(); i++) k[i] -= 0.1f * dk[i];  // (dk: the gradient of the KLs' sum)
  }
  EXPECT_LT(last, 0.5f * first) << "KL " << first << " -> " << last;
}

TEST(RouteLoss, BadSpecsAreRefused) {
  layout L;
  std::vector<float> q(size_t(L.T()) * L.Hq * L.D), k(size_t(L.T()) * L.Hkv * L.D), dq(q.size()), dk(k.size());
  float kl = 0;
  auto run = [&](const route_spec& s) {
    route_loss_host(dq.data(), dk.data(), &kl, q.data(), k.data(), L.T(), L.Hq, L.Hkv, L.D, s, 1.0f);
  };
  route_spec a = L.spec(0);
  a.rows[0] = L.T();
  EXPECT_THROW(run(a), error);
  route_spec b = L.spec(0);
  b.n_cand[0] = 1;  // one candidate: nothing to rank
  EXPECT_THROW(run(b), error);
  route_spec c = L.spec(0);
  c.gist_begin.back() = L.T() - 1;  // g = 2 gists past the end
  EXPECT_THROW(run(c), error);
  route_spec d = L.spec(0);
  d.raw_end.pop_back();
  EXPECT_THROW(run(d), error);
  route_spec e = L.spec(0, 2);  // units of two chunks: a chunk table entry per chunk, not per unit
  ASSERT_GT(e.R(), 0);
  run(e);
  e.raw_begin.resize(size_t(e.max_cand()));
  e.raw_end.resize(size_t(e.max_cand()));
  EXPECT_THROW(run(e), error);
}

}  // namespace
}  // namespace gsa
