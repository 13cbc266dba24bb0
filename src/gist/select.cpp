// Chunk selection (flat and hierarchical) and gist scoring; rules in select.h.
#include "gist/select.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "gist/fast-select.h"
#include "gist/stream.h"

namespace gsa::gist {

namespace {

float rank_value(float x) { return std::isnan(x) ? -INFINITY : x; }

// Indices 0..n-1 by descending score, ties by ascending index.
std::vector<int32_t> ranked(const float* s, int n) {
  std::vector<int32_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return rank_value(s[a]) > rank_value(s[b]); });
  return idx;
}

// Selection for one score row: the first k of the ranking, or the top-p prefix. (The reference: fast-select.h
// takes the same sets without sorting every score.)
void select_row(const float* s, int n, int k, const gsa_config& cfg, std::vector<int32_t>& out) {
  if (n == 0) return;
  std::vector<int32_t> idx = ranked(s, n);
  int take = 0;
  if (cfg.select == select_rule::top_p) {
    const double mx = rank_value(s[idx[0]]);
    if (!std::isfinite(mx)) {
      take = 1;  // all scores -inf / NaN: no mass to speak of; unfold the first in rank order
    } else {
      double z = 0;
      for (int i = 0; i < n; i++) z += std::exp(double(rank_value(s[i])) - mx);
      double cum = 0;
      while (take < n) {
        cum += std::exp(double(rank_value(s[idx[take]])) - mx) / z;
        take++;
        if (cum >= double(cfg.top_p) * (1 - 1e-12)) break;
      }
    }
  } else {
    take = std::clamp(k, 0, n);
  }
  out.insert(out.end(), idx.begin(), idx.begin() + take);
}

void sort_unique(std::vector<int32_t>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}

}  // namespace

int candidate_count(int query_chunk, int n_complete_chunks, int local_chunks) {
  return std::clamp(query_chunk - local_chunks, 0, std::max(0, n_complete_chunks));
}

bool row_unfolds(const stream& s, int row, int n_complete_chunks, int local_chunks) {
  return s.level[row] <= 0 && candidate_count(s.chunk[row], n_complete_chunks, local_chunks) > 0;
}

int adaptive_k(int64_t raw_before, const gsa_config& cfg, int group_size, int n_candidates) {
  if (n_candidates <= 0) return 0;
  GSA_ASSERT(group_size >= 1 && raw_before >= 0, "group_size {} raw_before {}", group_size, raw_before);
  // The released rule k = L_raw / r / G / c_0 + 1 with r = cfg.ratio() = span / g (span: raw tokens per top-level
  // unit), so that k chunks of c_0 per query head, over a group of G, unfold about L / r raw tokens per KV head at
  // every number of levels (one level: L g / (c_0^2 G) + 1).
  const int64_t span = cfg.span();
  const int64_t k = cfg.budget_ratio > 0  // a session's --ratio r: floor(L_raw / (r G c_0)) + 1
                        ? int64_t(std::floor(double(raw_before) / (double(cfg.budget_ratio) * group_size *
                                                                   cfg.chunk[0]))) + 1
                        : raw_before * cfg.gists_per_chunk / (span * cfg.chunk[0] * group_size) + 1;
  const int64_t cap = (int64_t(n_candidates) + 3) / 4;
  return int(std::min(k, cap));
}

int select_k(const gsa_config& cfg, int64_t raw_before, int group_size, int n_candidates) {
  switch (cfg.select) {
    case select_rule::fixed: return std::clamp(cfg.topk, 0, std::max(0, n_candidates));
    case select_rule::adaptive: return adaptive_k(raw_before, cfg, group_size, n_candidates);
    case select_rule::top_p: return std::max(0, n_candidates);
  }
  return 0;
}

std::vector<std::vector<int32_t>> select_top(const float* scores, int Hq, int Hkv, int n, int k,
                                             const gsa_config& cfg) {
  GSA_ASSERT(Hkv >= 1 && Hq % Hkv == 0, "Hq {} is not a multiple of Hkv {}", Hq, Hkv);
  const int G = Hq / Hkv;
  std::vector<std::vector<int32_t>> out(Hkv);
  std::vector<float> sum(n);
  for (int h = 0; h < Hkv; h++) {
    if (cfg.group_scoring) {
      std::fill(sum.begin(), sum.end(), 0.0f);
      for (int i = 0; i < G; i++)
        for (int j = 0; j < n; j++) sum[j] += scores[size_t(h * G + i) * n + j];
      select_row(sum.data(), n, k, cfg, out[h]);
    } else {
      for (int i = 0; i < G; i++) select_row(scores + size_t(h * G + i) * n, n, k, cfg, out[h]);
    }
    sort_unique(out[h]);
  }
  return out;
}

std::vector<std::vector<int32_t>> select_chunks(const float* scores, int Hq, int Hkv, int n_candidates,
                                                int64_t raw_before, const gsa_config& cfg) {
  const int k = select_k(cfg, raw_before, Hq / Hkv, n_candidates);
  return select_top(scores, Hq, Hkv, n_candidates, k, cfg);
}

void score_units(float* scores, const float* q, int Tq, int Hq, const float* k, int Tk, int Hkv, int D,
                 const int32_t* gist_begin, int n_units, int g) {
  GSA_ASSERT(Hkv >= 1 && Hq % Hkv == 0, "Hq {} is not a multiple of Hkv {}", Hq, Hkv);
  const int G = Hq / Hkv;
  const float scale = 1.0f / std::sqrt(float(D));
  for (int h = 0; h < Hq; h++) {
    const int hk = h / G;
    for (int u = 0; u < n_units; u++) {
      float best = -INFINITY;
      for (int r = 0; r < g; r++) {
        const int p = gist_begin[u] + r;
        GSA_ASSERT(p >= 0 && p < Tk, "gist position {} outside the {} keys", p, Tk);
        const float* kp = k + (size_t(p) * Hkv + hk) * D;
        for (int t = 0; t < Tq; t++) {
          const float* qp = q + (size_t(t) * Hq + h) * D;
          float dot = 0;
          for (int d = 0; d < D; d++) dot += qp[d] * kp[d];
          best = std::max(best, dot * scale);
        }
      }
      scores[size_t(h) * n_units + u] = best;
    }
  }
}

hier_selection select_hierarchical(int n_candidates, int Hq, int Hkv, const std::vector<int>& k_per_level,
                                   const gsa_config& cfg, const unit_scorer& score, const level_selector& select) {
  const int L = cfg.levels();
  GSA_ASSERT(int(k_per_level.size()) == L, "k_per_level has {} entries for {} levels", k_per_level.size(), L);
  GSA_ASSERT(Hkv >= 1 && Hq % Hkv == 0, "Hq {} is not a multiple of Hkv {}", Hq, Hkv);
  const int G = Hq / Hkv;
  std::vector<int> whole(L + 1, 0);  // whole[l] = level-l units inside the candidate prefix; whole[L] = 0
  for (int l = 0; l < L; l++) whole[l] = std::max(0, n_candidates) / chunks_per_unit(cfg, l);

  hier_selection res;
  res.chunks.resize(Hkv);
  std::vector<int32_t> kept, units, sel;
  std::vector<float> buf;
  for (int h = 0; h < Hkv; h++) {
    kept.clear();
    for (int l = L - 1; l >= 0; l--) {
      units.clear();
      if (l < L - 1)
        for (int32_t u : kept)
          for (int c = 0; c < cfg.chunk[l + 1]; c++) units.push_back(u * cfg.chunk[l + 1] + c);
      // Loose units: whole at level l but their parent is not whole, so no higher level can select them.
      const int loose0 = l < L - 1 ? whole[l + 1] * cfg.chunk[l + 1] : 0;
      for (int u = loose0; u < whole[l]; u++) units.push_back(u);
      sort_unique(units);
      kept.clear();
      if (units.empty()) continue;
      const int n = int(units.size());
      buf.assign(size_t(G) * n, 0.0f);
      score(l, h, units, buf.data());
      res.keys_scored += int64_t(n) * cfg.gists_per_chunk;
      if (select) {
        sel.clear();
        select(buf.data(), G, n, k_per_level[l], sel);
      } else {
        sel = std::move(select_top(buf.data(), G, 1, n, k_per_level[l], cfg)[0]);
      }
      for (int32_t i : sel) kept.push_back(units[i]);
    }
    res.chunks[h] = kept;
  }
  return res;
}

// The project builds with -ffp-contract=off (CMakeLists.txt), so each lane rounds multiply-then-add exactly like
// the scalar reference; TiledScoresEqualReferenceBitwise guards this.
void score_unit_range(float* out, size_t ld, const float* q, int G, int D, const float* tiles, int g, int u0, int u1) {
  constexpr int T = score_tile;
  if (u1 <= u0) return;
  const float scale = 1.0f / std::sqrt(float(D));
  const int i0 = u0 * g, i1 = u1 * g;  // gist rows
  for (int i = 0; i < G; i++) std::fill_n(out + size_t(i) * ld, u1 - u0, -INFINITY);
  for (int t = i0 / T; t * T < i1; t++) {
    const float* tile = tiles + size_t(t) * D * T;
    const int j0 = std::max(i0 - t * T, 0), j1 = std::min(i1 - t * T, T);
    for (int i = 0; i < G; i++) {
      const float* qi = q + size_t(i) * D;
      float acc[T] = {};
      // Lane j sums q_d k_jd over d in order, as the reference's scalar loop does.
      for (int d = 0; d < D; d++) {
        const float qd = qi[d];
        const float* row = tile + size_t(d) * T;
        for (int j = 0; j < T; j++) acc[j] += qd * row[j];
      }
      float* o = out + size_t(i) * ld;
      for (int j = j0; j < j1; j++) {
        const int u = (t * T + j) / g - u0;
        o[u] = std::max(o[u], acc[j] * scale);
      }
    }
  }
}

std::vector<std::vector<float>> gist_key_tiles(const float* k, int Tk, int Hkv, int D, const int32_t* gist_begin,
                                               int n, int g) {
  constexpr int T = score_tile;
  const int n_gists = n * g, n_tiles = (n_gists + T - 1) / T;
  std::vector<std::vector<float>> out(size_t(Hkv), std::vector<float>(size_t(n_tiles) * D * T, 0.0f));
  for (int i = 0; i < n_gists; i++) {
    const int p = gist_begin[i / g] + i % g;
    GSA_ASSERT(p >= 0 && p < Tk, "gist position {} outside the {} keys", p, Tk);
    for (int h = 0; h < Hkv; h++) {
      const float* kp = k + (size_t(p) * Hkv + h) * D;
      float* tile = out[size_t(h)].data() + size_t(i / T) * D * T + i % T;
      for (int d = 0; d < D; d++) tile[size_t(d) * T] = kp[d];
    }
  }
  return out;
}

std::vector<std::vector<int32_t>> select_block(const float* q_rows, int rows, const float* k, int Tk, int Hq, int Hkv,
                                               int D, const std::vector<std::vector<int32_t>>& gist_begin, int chunk,
                                               int n_cand, const gsa_config& cfg,
                                               std::vector<std::vector<float>>* scores, const level_tiles* tiles) {
  const int levels = walks(cfg) ? cfg.levels() : 1, g = cfg.gists_per_chunk, G = Hq / Hkv;
  const int64_t raw_before = int64_t(chunk) * cfg.chunk[0];
  GSA_ASSERT(int(gist_begin.size()) >= levels, "select_block: gist tables for {} levels, {} needed", gist_begin.size(),
             levels);
  std::vector<std::vector<float>> own;
  std::vector<std::vector<float>>& sc = scores ? *scores : own;
  sc.assign(size_t(levels), {});
  // A walk that need not report its scores scores level 0 only at the units it allows (tiles: score_unit_list,
  // the same values as the whole range), as the GPU walk does.
  const bool lazy0 = levels > 1 && !scores && tiles;
  // o (G, w) with row stride ld = the max over the block's rows of score(dst, stride, q of KV head h's group).
  auto block_scores = [&](float* o, size_t ld, size_t w, int h, auto&& score) {
    score(o, ld, q_rows + size_t(h) * G * D);
    if (rows == 1) return;
    std::vector<float> row_scores(size_t(G) * w);
    for (int r = 1; r < rows; r++) {
      score(row_scores.data(), w, q_rows + (size_t(r) * Hq + size_t(h) * G) * D);
      for (int i = 0; i < G; i++)
        for (size_t u = 0; u < w; u++) o[size_t(i) * ld + u] = std::max(o[size_t(i) * ld + u], row_scores[i * w + u]);
    }
  };
  for (int l = lazy0 ? 1 : 0; l < levels; l++) {
    const int n = std::max(0, n_cand) / chunks_per_unit(cfg, l);
    GSA_ASSERT(n <= int(gist_begin[size_t(l)].size()), "select_block: {} level-{} units, {} with gists", n, l,
               gist_begin[size_t(l)].size());
    std::vector<float>& out = sc[size_t(l)];
    out.resize(size_t(Hq) * n);
    if (n == 0) continue;
    if (!tiles) {
      score_units(out.data(), q_rows, rows, Hq, k, Tk, Hkv, D, gist_begin[size_t(l)].data(), n, g);
      continue;
    }
    GSA_ASSERT(int(tiles->size()) >= levels && int((*tiles)[size_t(l)].size()) == Hkv &&
                   (*tiles)[size_t(l)][0].size() >= size_t((int64_t(n) * g + score_tile - 1) / score_tile) * D * score_tile,
               "select_block: level {} tiles do not hold {} units", l, n);
    for (int h = 0; h < Hkv; h++) {
      const float* t = (*tiles)[size_t(l)][size_t(h)].data();
      block_scores(out.data() + size_t(h) * G * n, size_t(n), size_t(n), h, [&](float* o, size_t ld, const float* q) {
        score_unit_range(o, ld, q, G, D, t, g, 0, n);
      });
    }
  }
  std::vector<std::vector<int32_t>> chosen;
  if (levels == 1) {
    select_top_fast(sc[0].data(), Hq, Hkv, n_cand, select_k(cfg, raw_before, G, n_cand), cfg, chosen);
    return chosen;
  }
  const unit_scorer from_tables = [&](int level, int kv_head, const std::vector<int32_t>& units, float* out) {
    if (level == 0 && lazy0) {  // units ascend (select_hierarchical)
      const float* t = (*tiles)[0][size_t(kv_head)].data();
      block_scores(out, units.size(), units.size(), kv_head, [&](float* o, size_t, const float* q) {
        score_unit_list(o, q, G, D, t, g, units);  // (G, units.size())
      });
      return;
    }
    const std::vector<float>& s = sc[size_t(level)];
    const size_t n = s.size() / size_t(Hq);
    for (int j = 0; j < G; j++)
      for (size_t i = 0; i < units.size(); i++) out[j * units.size() + i] = s[size_t(kv_head * G + j) * n + units[i]];
  };
  return select_hierarchical_fast(n_cand, Hq, Hkv, hierarchy_k(cfg, raw_before, G, n_cand), cfg, from_tables).chunks;
}

std::vector<int> hierarchy_k(const gsa_config& cfg, int64_t raw_before, int group_size, int n_candidates) {
  int k = INT_MAX;
  if (cfg.select == select_rule::fixed) k = std::max(0, cfg.topk);
  else if (cfg.select == select_rule::adaptive) k = adaptive_k(raw_before, cfg, group_size, n_candidates);
  return std::vector<int>(cfg.levels(), k);
}

}  // namespace gsa::gist
