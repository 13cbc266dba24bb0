// Fast gist scoring and chunk selection; contract in fast-select.h.
#include "gist/fast-select.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "core/error.h"

namespace gsa::gist {

namespace {

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
    score_unit_range(out + a, n, q, G, D, tiles, g, units[a], units[b - 1] + 1);
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
  // (rank value, index) pairs side by side: the selection compares in place instead of through s[index].
  std::vector<std::pair<float, int32_t>> v(static_cast<size_t>(n));
  for (int i = 0; i < n; i++) v[size_t(i)] = {rank_value(s[i]), i};
  std::nth_element(v.begin(), v.begin() + (k - 1), v.end(),
                   [](const auto& a, const auto& b) { return before(a.first, a.second, b.first, b.second); });
  for (int i = 0; i < k; i++) out.push_back(v[size_t(i)].second);
}

void select_top_fast(const float* scores, int Hq, int Hkv, int n, int k, const gsa_config& cfg,
                     std::vector<std::vector<int32_t>>& out) {
  if (cfg.select == select_rule::top_p) {
    out = select_top(scores, Hq, Hkv, n, k, cfg);
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

hier_selection select_hierarchical_fast(int n_candidates, int Hq, int Hkv, const std::vector<int>& k_per_level,
                                              const gsa_config& cfg, const unit_scorer& score) {
  if (cfg.select == select_rule::top_p)
    return select_hierarchical(n_candidates, Hq, Hkv, k_per_level, cfg, score);
  std::vector<std::vector<int32_t>> sel;
  return select_hierarchical(n_candidates, Hq, Hkv, k_per_level, cfg, score,
                                   [&](const float* s, int G, int n, int k, std::vector<int32_t>& out) {
                                     select_top_fast(s, G, 1, n, k, cfg, sel);
                                     out.swap(sel[0]);
                                   });
}

}  // namespace gsa::gist
