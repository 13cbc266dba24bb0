// The host reference of the routing distillation loss (contract: route-loss.h).
#include "backend/route-loss.h"

#include <algorithm>
#include <cmath>

#include "backend/backend.h"
#include "core/error.h"

namespace gsa {

int route_spec::layers_on() const {
  return int(std::count(layers.begin(), layers.end(), uint8_t(1)));
}

std::vector<int32_t> route_spec::host_table() const {
  std::vector<int32_t> t;
  t.reserve(size_t(off_gist_begin() + max_cand()));
  t.insert(t.end(), rows.begin(), rows.end());
  t.insert(t.end(), n_cand.begin(), n_cand.end());
  t.insert(t.end(), raw_begin.begin(), raw_begin.end());
  t.insert(t.end(), raw_end.begin(), raw_end.end());
  t.insert(t.end(), gist_begin.begin(), gist_begin.end());
  return t;
}

void route_spec::check(int T) const {
  const int n = max_cand();
  if (g < 1) fail("route spec: {} gists per chunk", g);
  if (span < 1) fail("route spec: {} chunks per candidate", span);
  if (n_cand.size() != rows.size()) fail("route spec: {} candidate counts for {} rows", n_cand.size(), rows.size());
  if (raw_begin.size() != size_t(n) * span || raw_end.size() != size_t(n) * span)
    fail("route spec: chunk tables of {} / {} entries for {} candidates of {} chunks", raw_begin.size(),
         raw_end.size(), n, span);
  for (int r = 0; r < R(); r++) {
    if (rows[size_t(r)] < 0 || rows[size_t(r)] >= T)
      fail("route spec: row {} of a {}-row sequence", rows[size_t(r)], T);
    if (n_cand[size_t(r)] < 2 || n_cand[size_t(r)] > n)
      fail("route spec: row {} has {} candidates (2 .. {})", rows[size_t(r)], n_cand[size_t(r)], n);
  }
  for (size_t i = 0; i < raw_begin.size(); i++)
    if (raw_begin[i] < 0 || raw_end[i] < raw_begin[i] || raw_end[i] > T)
      fail("route spec: chunk {} has raw keys [{}, {}) in a {}-row sequence", i, raw_begin[i], raw_end[i], T);
  for (int u = 0; u < n; u++)
    if (gist_begin[size_t(u)] < 0 || gist_begin[size_t(u)] + g > T)
      fail("route spec: candidate {} has its gists at {} in a {}-row sequence", u, gist_begin[size_t(u)], T);
}

void route_loss_host(float* dq, float* dk, float* kl, const float* q, const float* k, int T, int Hq, int Hkv, int D,
                     const route_spec& s, float grad_scale) {
  s.check(T);
  GSA_ASSERT(Hkv > 0 && Hq % Hkv == 0, "route loss: {} query heads for {} KV heads", Hq, Hkv);
  const int G = Hq / Hkv, n_max = s.max_cand();
  const float scale = 1.0f / std::sqrt(float(D));
  auto dot = [&](const float* a, const float* b) {
    float v = 0;
    for (int d = 0; d < D; d++) v += a[d] * b[d];
    return v;
  };
  std::vector<float> m(n_max), z(n_max), p(n_max), sc(n_max);
  std::vector<int> best(n_max);
  double kl_sum = 0;
  for (int r = 0; r < s.R(); r++) {
    const int t = s.rows[size_t(r)], n = s.n_cand[size_t(r)];
    for (int h = 0; h < Hq; h++) {
      const int hk = h / G;
      const float* qh = q + (size_t(t) * Hq + h) * D;
      auto key = [&](int pos) { return k + (size_t(pos) * Hkv + hk) * D; };
      // Teacher: per chunk the max logit and the sum of exp(x - max), then the log-sum-exp over all chunks.
      float lse_m = -INFINITY;
      // f(logit) for each teacher key of candidate u: the raw keys of its span chunks.
      auto each_logit = [&](int u, auto&& f) {
        for (size_t c = size_t(u) * s.span; c < size_t(u + 1) * s.span; c++)
          for (int i = s.raw_begin[c]; i < s.raw_end[c]; i++) f(scale * dot(qh, key(i)));
      };
      for (int u = 0; u < n; u++) {
        float& mu = m[size_t(u)];
        float& zu = z[size_t(u)];
        mu = -INFINITY;
        zu = 0;
        each_logit(u, [&](float x) { mu = std::max(mu, x); });
        each_logit(u, [&](float x) { zu += std::exp(x - mu); });
        lse_m = std::max(lse_m, mu);
      }
      double total = 0;
      for (int u = 0; u < n; u++)
        if (z[size_t(u)] > 0) total += double(z[size_t(u)]) * std::exp(double(m[size_t(u)]) - lse_m);
      // Student: the best gist's score per chunk, then its log-softmax.
      float s_max = -INFINITY;
      for (int u = 0; u < n; u++) {
        best[size_t(u)] = 0;
        sc[size_t(u)] = -INFINITY;
        for (int j = 0; j < s.g; j++) {
          const float v = scale * dot(qh, key(s.gist_begin[size_t(u)] + j));
          if (v > sc[size_t(u)]) sc[size_t(u)] = v, best[size_t(u)] = j;
        }
        s_max = std::max(s_max, sc[size_t(u)]);
      }
      double s_sum = 0;
      for (int u = 0; u < n; u++) s_sum += std::exp(double(sc[size_t(u)]) - s_max);
      const double s_lse = s_max + std::log(s_sum);
      double row_kl = 0;
      float* dqh = dq + (size_t(t) * Hq + h) * D;
      for (int u = 0; u < n; u++) {
        const double pu = total > 0 && z[size_t(u)] > 0
                              ? double(z[size_t(u)]) * std::exp(double(m[size_t(u)]) - lse_m) / total
                              : 0.0;
        const double lq = double(sc[size_t(u)]) - s_lse;
        if (pu > 0) row_kl += pu * (std::log(pu) - lq);
        const float ds = grad_scale * float(std::exp(lq) - pu) * scale;
        const float* kg = key(s.gist_begin[size_t(u)] + best[size_t(u)]);
        float* dkg = dk + (size_t(s.gist_begin[size_t(u)] + best[size_t(u)]) * Hkv + hk) * D;
        for (int d = 0; d < D; d++) {
          dqh[d] += ds * kg[d];
          dkg[d] += ds * qh[d];
        }
      }
      kl_sum += row_kl;
    }
  }
  if (s.R() > 0) *kl += float(kl_sum / (double(s.R()) * Hq));
}

void backend::route_prepare(route_spec& spec, int layers) {
  GSA_ASSERT(int(spec.layers.size()) == layers, "route spec for {} layers, model of {}", spec.layers.size(), layers);
  std::vector<int32_t> t = spec.host_table();
  if (t.empty()) t.push_back(0);
  spec.table = upload(Tensor::borrow(t.data(), {int64_t(t.size())}, dtype::i32), dtype::i32);
  if (spec.kl.empty()) spec.kl = alloc({std::max(1, layers)}, dtype::f32);
  GSA_ASSERT(spec.kl.numel() >= layers && spec.kl.type() == dtype::f32 && spec.kl.where() == where(),
             "route spec: a KL accumulator of {} values for {} layers", spec.kl.numel(), layers);
}

void backend::route_loss(Tensor& dq, Tensor& dk, const Tensor& q, const Tensor& k, route_spec& spec, int layer,
                         float grad_scale) {
  GSA_ASSERT(q.where() == device::cpu && k.where() == device::cpu && dq.where() == device::cpu &&
                 dk.where() == device::cpu && q.type() == dtype::f32 && k.type() == dtype::f32 &&
                 dq.type() == dtype::f32 && dk.type() == dtype::f32 && spec.kl.where() == device::cpu,
             "the host route loss needs f32 host tensors");
  GSA_ASSERT(layer >= 0 && layer < spec.kl.numel(), "route loss: layer {} of {}", layer, spec.kl.numel());
  const int T = int(q.dim(0)), Hq = int(q.dim(1)), D = int(q.dim(2)), Hkv = int(k.dim(1));
  GSA_ASSERT(k.dim(0) == T && k.dim(2) == D && dq.numel() == q.numel() && dk.numel() == k.numel(),
             "route loss: q {}, k {}, dq {}, dk {}", shape_str(q.shape()), shape_str(k.shape()), shape_str(dq.shape()),
             shape_str(dk.shape()));
  route_loss_host(dq.f32(), dk.f32(), spec.kl.f32() + layer, q.f32(), k.f32(), T, Hq, Hkv, D, spec, grad_scale);
}

}  // namespace gsa
