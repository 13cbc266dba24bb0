// Split-K decode attention over gathered rows (the CPU reference of backend::decode_attention, and the CPU
// engine's attention over its paged host cache, infer/decode-attention.h): one query row q (Hq, D) attends, per
// KV head h, to rows.count(h) keys whose K and V rows (D floats each) rows.key(h, j) / rows.value(h, j) return
// (any order; only the listed rows are touched). GQA: query head hq uses KV head hq / (Hq / Hkv).
// Overwrites out (Hq, D). Each part of a list keeps a running max, sum and unnormalised output, merged at the
// end (flash-decoding), so long lists use every thread. If weights != nullptr, weights[h] (count(h) values)
// receives the attention probabilities summed over the GQA group of KV head h (H2O accumulates these).
// A template over the row source, so the cache's page lookup inlines into the loops.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace gsa::cpu {

namespace detail {
constexpr int kMinKeysPerPart = 512;  // below this a part's merge costs more than the parallelism saves
struct decode_part {
  int h = 0, j0 = 0, j1 = 0;
  std::vector<float> m, l, acc;  // (G), (G), (G, D)
};
}  // namespace detail

template <class Rows>
void decode_attention_rows(float* out, const float* q, int Hq, int Hkv, int D, const Rows& rows,
                           std::vector<std::vector<float>>* weights = nullptr) {
  const int G = Hq / Hkv;
  const float scale = 1.0f / std::sqrt(float(D));
  const float ninf = -std::numeric_limits<float>::infinity();
  // The probabilities for H2O need the final normaliser, so that path keeps scores per key: no split there.
  const int threads = weights ? 1 : omp_get_max_threads();
  std::vector<detail::decode_part> parts;
  int64_t work = 0;
  for (int h = 0; h < Hkv; h++) {
    const int n = rows.count(h);
    work += n;
    const int np = std::clamp(n / detail::kMinKeysPerPart, 1, std::max(1, threads));
    for (int i = 0; i < np; i++)
      parts.push_back({h, int(int64_t(n) * i / np), int(int64_t(n) * (i + 1) / np), {}, {}, {}});
  }
  if (weights) weights->assign(Hkv, {});
#pragma omp parallel for schedule(dynamic) if (work * G * D > (1 << 16) && parts.size() > 1)
  for (size_t pi = 0; pi < parts.size(); pi++) {
    detail::decode_part& pt = parts[pi];
    const int n = pt.j1 - pt.j0;
    pt.m.assign(G, ninf);
    pt.l.assign(G, 0.0f);
    pt.acc.assign(size_t(G) * D, 0.0f);
    std::vector<float> s(size_t(G) * std::max(n, 1));
    // Unfolded chunks sit in pages spread over the whole cache, so rows are fetched ahead of use: the loop is
    // bound by memory latency, not arithmetic.
    constexpr int ahead = 8;
    auto prefetch_row = [&](const float* r) {
      for (int d = 0; d < D; d += 16) __builtin_prefetch(r + d);
    };
    for (int j = 0; j < std::min(n, ahead); j++) prefetch_row(rows.key(pt.h, pt.j0 + j));
    for (int j = 0; j < n; j++) {
      if (j + ahead < n) prefetch_row(rows.key(pt.h, pt.j0 + j + ahead));
      const float* k = rows.key(pt.h, pt.j0 + j);
      for (int g = 0; g < G; g++) {
        const float* qg = q + size_t(pt.h * G + g) * D;
        float dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int d = 0; d < D; d++) dot += qg[d] * k[d];
        s[size_t(g) * n + j] = dot * scale;
        pt.m[g] = std::max(pt.m[g], dot * scale);
      }
    }
    for (int g = 0; g < G; g++)
      for (int j = 0; j < n; j++) pt.l[g] += s[size_t(g) * n + j] = std::exp(s[size_t(g) * n + j] - pt.m[g]);
    for (int j = 0; j < std::min(n, ahead); j++) prefetch_row(rows.value(pt.h, pt.j0 + j));
    for (int j = 0; j < n; j++) {
      if (j + ahead < n) prefetch_row(rows.value(pt.h, pt.j0 + j + ahead));
      const float* v = rows.value(pt.h, pt.j0 + j);
      for (int g = 0; g < G; g++) {
        const float p = s[size_t(g) * n + j];
        float* a = pt.acc.data() + size_t(g) * D;
#pragma omp simd
        for (int d = 0; d < D; d++) a[d] += p * v[d];
      }
    }
    if (weights) {  // one part per head here
      auto& w = (*weights)[pt.h];
      w.assign(n, 0.0f);
      for (int g = 0; g < G; g++)
        for (int j = 0; j < n; j++) w[j] += s[size_t(g) * n + j] / pt.l[g];
    }
  }
  // Merge the parts of each head: out = sum_p e^{m_p - M} acc_p / sum_p e^{m_p - M} l_p.
  std::fill_n(out, size_t(Hq) * D, 0.0f);
  std::vector<float> M(Hq, ninf), L(Hq, 0.0f);
  for (const auto& pt : parts)
    for (int g = 0; g < G; g++) M[pt.h * G + g] = std::max(M[pt.h * G + g], pt.m[g]);
  for (const auto& pt : parts)
    for (int g = 0; g < G; g++) {
      const int hq = pt.h * G + g;
      if (pt.m[g] == ninf) continue;
      const float f = std::exp(pt.m[g] - M[hq]);
      L[hq] += f * pt.l[g];
      for (int d = 0; d < D; d++) out[size_t(hq) * D + d] += f * pt.acc[size_t(g) * D + d];
    }
  for (int hq = 0; hq < Hq; hq++)
    if (L[hq] > 0)
      for (int d = 0; d < D; d++) out[size_t(hq) * D + d] /= L[hq];
}

}  // namespace gsa::cpu
