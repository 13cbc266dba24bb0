// Fast decode scoring and selection; contract in fast-select.h.
#include "infer/fast-select.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "gist/stream.h"
#include "kv/kv-cache.h"

namespace gsa::infer {

namespace {

constexpr int kBufferMax = 64;  // above this k, nth_element beats the insertion buffer

float rank_value(float x) { return std::isnan(x) ? -INFINITY : x; }

// a ranks before b: score descending, then index ascending.
bool before(float va, int32_t a, float vb, int32_t b) { return va > vb || (va == vb && a < b); }

void sort_unique(std::vector<int32_t>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}

}  // namespace

void score_unit_list(float* out, const float* q, int G, int D, const float* tiles, int g,
                     const std::vector<int32_t>& units) {
  const size_t n = units.size();
  for (size_t a = 0; a < n;) {
    size_t b = a + 1;
    while (b < n && units[b] == units[b - 1] + 1) b++;
    gist::score_unit_range(out + a, n, q, G, D, tiles, g, units[a], units[b - 1] + 1);
    a = b;
  }
}

void top_k_append(const float* s, int n, int k, std::vector<int32_t>& out) {
  k = std::clamp(k, 0, n);
  if (k == 0) return;
  if (k == n) {
    for (int i = 0; i < n; i++) out.push_back(i);
    return;
  }
  if (k <= kBufferMax) {
    // buf holds the best k so far in rank order; indices arrive ascending, so a newcomer equal to the worst
    // loses the tie and only a strictly greater score enters.
    float bv[kBufferMax];
    int32_t bi[kBufferMax];
    for (int i = 0; i < k; i++) bv[i] = rank_value(s[i]), bi[i] = i;
    for (int i = 1; i < k; i++)  // insertion sort of the first k (stable: ties keep index order)
      for (int p = i; p > 0 && bv[p - 1] < bv[p]; p--) std::swap(bv[p - 1], bv[p]), std::swap(bi[p - 1], bi[p]);
    float worst = bv[k - 1];
    for (int i = k; i < n; i++) {
      const float v = rank_value(s[i]);
      if (!(v > worst)) continue;
      int p = k - 1;
      for (; p > 0 && bv[p - 1] < v; p--) bv[p] = bv[p - 1], bi[p] = bi[p - 1];
      bv[p] = v, bi[p] = i;
      worst = bv[k - 1];
    }
    out.insert(out.end(), bi, bi + k);
    return;
  }
  std::vector<int32_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::nth_element(idx.begin(), idx.begin() + (k - 1), idx.end(), [&](int32_t a, int32_t b) {
    return before(rank_value(s[a]), a, rank_value(s[b]), b);
  });
  out.insert(out.end(), idx.begin(), idx.begin() + k);
}

void select_top_fast(const float* scores, int Hq, int Hkv, int n, int k, const gist::gsa_config& cfg,
                     std::vector<std::vector<int32_t>>& out) {
  if (cfg.select == gist::select_rule::top_p) {
    out = gist::select_top(scores, Hq, Hkv, n, k, cfg);
    return;
  }
  GSA_ASSERT(Hkv >= 1 && Hq % Hkv == 0, "Hq {} is not a multiple of Hkv {}", Hq, Hkv);
  const int G = Hq / Hkv;
  out.resize(Hkv);
  std::vector<float> sum;
  for (int h = 0; h < Hkv; h++) {
    out[h].clear();
    if (n <= 0) continue;
    if (cfg.group_scoring) {
      sum.assign(n, 0.0f);
      for (int i = 0; i < G; i++)  // rows summed in the reference's order
        for (int j = 0; j < n; j++) sum[j] += scores[size_t(h * G + i) * n + j];
      top_k_append(sum.data(), n, k, out[h]);
    } else {
      for (int i = 0; i < G; i++) top_k_append(scores + size_t(h * G + i) * n, n, k, out[h]);
    }
    sort_unique(out[h]);
  }
}

gist::hier_selection select_hierarchical_fast(int n_candidates, int Hq, int Hkv, const std::vector<int>& k_per_level,
                                              const gist::gsa_config& cfg, const gist::unit_scorer& score) {
  if (cfg.select == gist::select_rule::top_p)
    return gist::select_hierarchical(n_candidates, Hq, Hkv, k_per_level, cfg, score);
  std::vector<std::vector<int32_t>> sel;
  return gist::select_hierarchical(n_candidates, Hq, Hkv, k_per_level, cfg, score,
                                   [&](const float* s, int G, int n, int k, std::vector<int32_t>& out) {
                                     select_top_fast(s, G, 1, n, k, cfg, sel);
                                     out.swap(sel[0]);
                                   });
}

}  // namespace gsa::infer
