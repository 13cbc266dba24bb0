// Split-K decode attention; contract in decode-attention.h.
#include "infer/decode-attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace gsa::infer {

namespace {

constexpr int kMinKeysPerPart = 512;  // below this a part's merge costs more than the parallelism saves

struct part {
  int h = 0, j0 = 0, j1 = 0;
  std::vector<float> m, l, acc;  // (G), (G), (G, D)
};

}  // namespace

void decode_attention(float* out, const float* q, const kv::kv_cache& cache, int layer,
                      const std::vector<std::vector<kv::kv_addr>>& lists, int Hq,
                      std::vector<std::vector<float>>* weights) {
  const int Hkv = cache.layout().n_kv_heads, D = cache.layout().head_dim;
  GSA_ASSERT(int(lists.size()) == Hkv && Hq % Hkv == 0, "{} lists for {} KV heads, Hq {}", lists.size(), Hkv, Hq);
  const int G = Hq / Hkv;
  const float scale = 1.0f / std::sqrt(float(D));
  const float ninf = -std::numeric_limits<float>::infinity();
  // The probabilities for H2O need the final normaliser, so that path keeps scores per key: no split there.
  const int threads = weights ? 1 : omp_get_max_threads();
  std::vector<part> parts;
  for (int h = 0; h < Hkv; h++) {
    const int n = int(lists[h].size());
    const int np = std::clamp(n / kMinKeysPerPart, 1, std::max(1, threads));
    for (int i = 0; i < np; i++) parts.push_back({h, int(int64_t(n) * i / np), int(int64_t(n) * (i + 1) / np), {}, {}, {}});
  }
  if (weights) weights->assign(Hkv, {});
  int64_t work = 0;
  for (auto& l : lists) work += int64_t(l.size());
#pragma omp parallel for schedule(dynamic) if (work * G * D > (1 << 16) && parts.size() > 1)
  for (size_t pi = 0; pi < parts.size(); pi++) {
    part& pt = parts[pi];
    const auto& list = lists[pt.h];
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
    for (int j = 0; j < std::min(n, ahead); j++) prefetch_row(cache.key(layer, list[pt.j0 + j], pt.h));
    for (int j = 0; j < n; j++) {
      if (j + ahead < n) prefetch_row(cache.key(layer, list[pt.j0 + j + ahead], pt.h));
      const float* k = cache.key(layer, list[pt.j0 + j], pt.h);
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
    for (int j = 0; j < std::min(n, ahead); j++) prefetch_row(cache.value(layer, list[pt.j0 + j], pt.h));
    for (int j = 0; j < n; j++) {
      if (j + ahead < n) prefetch_row(cache.value(layer, list[pt.j0 + j + ahead], pt.h));
      const float* v = cache.value(layer, list[pt.j0 + j], pt.h);
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

}  // namespace gsa::infer
