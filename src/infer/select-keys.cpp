// Key selection per row, layer and KV head for every method (rules in method.h and session.h). Each list is
// ascending stream positions and always ends with the row itself. Costs read here (gist keys scored, page
// summaries) go to stats_.bytes_read; the attended rows are counted by the decode step.
#include <algorithm>
#include <cmath>
#include <functional>
#include <iterator>
#include <limits>
#include <numeric>

#include "core/error.h"
#include "gist/plan.h"
#include "gist/select.h"
#include "infer/decode-attention.h"
#include "gist/fast-select.h"
#include "infer/session.h"

namespace gsa::infer {

namespace {

void sort_unique(std::vector<int32_t>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}

void iota_list(std::vector<int32_t>& v, int32_t begin, int32_t end) {
  for (int32_t p = begin; p < end; p++) v.push_back(p);
}

// Top n of scores (ties: lower index), ascending indices.
std::vector<int32_t> top_n(const std::vector<float>& s, int n) {
  std::vector<int32_t> idx(s.size());
  std::iota(idx.begin(), idx.end(), 0);
  n = std::clamp(n, 0, int(s.size()));
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return s[a] > s[b]; });
  idx.resize(n);
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace

void session::select_keys(int layer, int pos, const float* q, std::vector<std::vector<int32_t>>& keys) {
  const int Hkv = int(m_.config.num_key_value_heads);
  keys.resize(Hkv);  // the lists keep their capacity from step to step
  for (auto& k : keys) k.clear();
  switch (opts_.meth) {
    case method::gist:
    case method::gsa:
    case method::hgsa: gsa_select(layer, pos, q, keys); return;
    case method::full:
      for (auto& k : keys) iota_list(k, 0, pos + 1);
      return;
    case method::streaming: {
      const int64_t sink = std::min<int64_t>(sink_, budget_);
      const int64_t recent = budget_ - sink;
      for (auto& k : keys) {
        const int32_t r0 = int32_t(std::max<int64_t>(0, pos + 1 - recent));
        iota_list(k, 0, int32_t(std::min<int64_t>(sink, r0)));
        iota_list(k, r0, pos + 1);
      }
      return;
    }
    case method::quest:
    case method::moba: page_select(layer, pos, q, keys); return;
    case method::h2o:
      if (!h2o_ready_) h2o_init(pos);
      for (int h = 0; h < Hkv; h++) {
        auto& kept = h2o_kept_[size_t(layer) * Hkv + h];
        kept.push_back(pos);
        h2o_score_[size_t(layer) * Hkv + h].push_back(0.0f);
        keys[h] = kept;
      }
      return;
  }
}

void session::update_base(int pos) {
  if (base_pos_ == pos) return;  // the gist-mask list is the same in every layer
  const int level = s_.level[pos], m = s_.chunk[pos];
  // A raw row right after a raw row of its chunk sees what that row saw plus itself (nothing else entered
  // the stream in between), so the list is extended; it is rebuilt once per chunk and for gist rows.
  if (pos > 0 && base_pos_ == pos - 1 && level < 0 && s_.level[pos - 1] < 0 && s_.chunk[pos - 1] == m) {
    base_keys_.push_back(pos);
  } else {
    gist::compress_keys(base_keys_, s_, *cfg_, m, level, pos);
    base_builds_++;
  }
  base_pos_ = pos;
}

void session::gsa_select(int layer, int pos, const float* q, std::vector<std::vector<int32_t>>& keys) {
  const gist::gsa_config& cfg = *cfg_;
  const int Hq = int(m_.config.num_attention_heads), Hkv = int(m_.config.num_key_value_heads);
  const int D = int(m_.config.head_dim), G = Hq / Hkv, g = cfg.gists_per_chunk;
  const int level = s_.level[pos], m = s_.chunk[pos];
  update_base(pos);
  const bool dense = std::find(cfg.dense_layers.begin(), cfg.dense_layers.end(), layer) != cfg.dense_layers.end();
  const int n_cand = opts_.meth == method::gist || dense || level > 0
                         ? 0
                         : gist::candidate_count(m, gist::complete_chunk_count(s_), cfg.local_chunks);
  if (n_cand <= 0) {
    for (auto& k : keys) k = base_keys_;
    return;
  }
  const int64_t raw_before = int64_t(m) * cfg.chunk[0];
  auto& sel = sel_;
  const int64_t key_bytes = int64_t(D) * sizeof(float);
  GSA_ASSERT(int64_t(n_cand) * g <= cache_->gist_count(layer, 0), "{} candidates but {} level-0 gists", n_cand,
             cache_->gist_count(layer, 0));
  if (opts_.meth == method::gsa) {
    scores_.resize(size_t(Hq) * n_cand);
    for (int h = 0; h < Hkv; h++)
      gist::score_unit_range(scores_.data() + size_t(h) * G * n_cand, size_t(n_cand), q + size_t(h) * G * D, G, D,
                       cache_->gist_key_tiles(layer, 0, h), g, 0, n_cand);
    stats_.bytes_read += int64_t(n_cand) * g * Hkv * key_bytes;
    const int k = gist::select_k(cfg, raw_before, G, n_cand);
    gist::select_top_fast(scores_.data(), Hq, Hkv, n_cand, k, cfg, sel);
  } else {
    auto scorer = [&](int lv, int h, const std::vector<int32_t>& units, float* out) {
      gist::score_unit_list(out, q + size_t(h) * G * D, G, D, cache_->gist_key_tiles(layer, lv, h), g, units);
    };
    std::vector<int> ks = cfg.select == gist::select_rule::fixed ? std::vector<int>(cfg.levels(), cfg.topk)
                                                                 : gist::hierarchy_k(cfg, raw_before, G, n_cand);
    gist::hier_selection hs = gist::select_hierarchical_fast(n_cand, Hq, Hkv, ks, cfg, scorer);
    stats_.bytes_read += hs.keys_scored * key_bytes;
    sel = std::move(hs.chunks);
  }
  // The unfolded keys in chunk order are already ascending (a chunk's raw tokens, then its gists, then the
  // next chunk's raw tokens), so the list is a merge of two sorted runs, not a sort.
  for (int h = 0; h < Hkv; h++) {
    auto& extra = extra_;
    extra.clear();
    for (int32_t c : sel[h]) {
      iota_list(extra, s_.chunk_raw_begin[c], s_.chunk_raw_end[c]);
      iota_list(extra, s_.chunk_gist_begin[c], s_.chunk_gist_begin[c] + g);
    }
    if (cfg.gists_all) {
      extra.insert(extra.end(), gist_positions_.begin(),
                   std::upper_bound(gist_positions_.begin(), gist_positions_.end(), pos));
      sort_unique(extra);
    }
    GSA_ASSERT(std::adjacent_find(extra.begin(), extra.end(), std::greater_equal<int32_t>()) == extra.end(),
               "unfolded keys of layer {} head {} are not strictly ascending", layer, h);
    auto& k = keys[h];
    k.clear();
    std::set_union(base_keys_.begin(), base_keys_.end(), extra.begin(), extra.end(), std::back_inserter(k));
    stats_.unfolded[size_t(layer) * Hkv + h] = sel[h];
  }
}

void session::page_select(int layer, int pos, const float* q, std::vector<std::vector<int32_t>>& keys) {
  const int Hq = int(m_.config.num_attention_heads), Hkv = int(m_.config.num_key_value_heads);
  const int D = int(m_.config.head_dim), G = Hq / Hkv, P = chunk_;
  const int cur = pos / P;  // the incomplete page holding the row (a plain stream: position = raw index)
  const int64_t own = pos - int64_t(cur) * P + 1;
  const int n_pages = int(std::max<int64_t>(0, budget_ - own) / P);
  for (int h = 0; h < Hkv; h++) {
    auto& k = keys[h];
    if (n_pages >= cur) {
      iota_list(k, 0, pos + 1);
      continue;
    }
    std::vector<float> s(cur, -std::numeric_limits<float>::infinity());
    for (int p = 0; p < cur; p++) {
      const size_t off = (size_t(p) * Hkv + h) * D;
      for (int i = 0; i < G; i++) {
        const float* qh = q + size_t(h * G + i) * D;
        float v = 0;
        if (opts_.meth == method::quest) {
          const float *mn = cache_->page_kmin(layer) + off, *mx = cache_->page_kmax(layer) + off;
          for (int d = 0; d < D; d++) v += std::max(qh[d] * mn[d], qh[d] * mx[d]);
        } else {
          const float* me = cache_->page_kmean(layer) + off;
          for (int d = 0; d < D; d++) v += qh[d] * me[d];
        }
        s[p] = std::max(s[p], v);
      }
    }
    stats_.bytes_read += int64_t(cur) * D * sizeof(float) * (opts_.meth == method::quest ? 2 : 1);
    auto sel = top_n(s, n_pages);
    for (int32_t p : sel) iota_list(k, p * P, (p + 1) * P);
    iota_list(k, cur * P, pos + 1);
    stats_.unfolded[size_t(layer) * Hkv + h] = std::move(sel);
  }
}

// The first eviction: accumulated attention of the last context queries (an observation window: the full
// H2O accumulation over every context row costs O(T^2)), then heavy hitters + the recent half of the budget.
// Each window row attends to its causal past through the decode kernel that later steps use (the host cache's,
// or the backend's over the pool, the GPU's included), which returns every key's probability summed over the
// GQA group; a layer's window rows go in one call.
void session::h2o_init(int pos) {
  const int L = int(m_.config.num_hidden_layers), Hq = int(m_.config.num_attention_heads);
  const int Hkv = int(m_.config.num_key_value_heads), D = int(m_.config.head_dim);
  const int T = pos;  // rows before the current one (a plain stream: the row's position)
  const int W = h2o_obs_rows_;
  h2o_kept_.assign(size_t(L) * Hkv, {});
  h2o_score_.assign(size_t(L) * Hkv, {});
  const int64_t recent = budget_ / 2;
  std::vector<std::vector<float>> acc(size_t(L) * Hkv, std::vector<float>(size_t(T), 0.0f));
  std::vector<float> out(size_t(Hq) * D), flat;
  std::vector<std::vector<float>> w;
  std::vector<int64_t> indptr;
  std::vector<int32_t> indices;
  // Window row r of layer l gave KV head h's keys 0 .. T - W + r the weights w.
  auto add = [&](int l, int r, int h, const float* w) {
    float* a = acc[size_t(l) * Hkv + h].data();
    for (int j = 0; j <= T - W + r; j++) a[j] += w[j];
  };
  for (int l = 0; l < L; l++) {
    const float* ql = h2o_obs_q_.data() + size_t(l) * W * Hq * D;
    if (cache_->pooled()) {
      backend& be = m_.ops();
      indptr.assign(1, 0);
      indices.clear();
      for (int r = 0; r < W; r++)
        for (int h = 0; h < Hkv; h++) {
          for (int j = 0; j <= T - W + r; j++) indices.push_back(int32_t(cache_->pool_row(l, addr_[j])));
          indptr.push_back(int64_t(indices.size()));
        }
      const Tensor q = be.upload(Tensor::borrow(const_cast<float*>(ql), {W, Hq, D}), be.act());
      Tensor o = be.alloc({W, int64_t(Hq) * D}, be.act());
      be.decode_attention(o, q, cache_->pool(l), cache_->layout().page_size, indptr, indices, cache_->host(l), &flat);
      for (int r = 0; r < W; r++)
        for (int h = 0; h < Hkv; h++) add(l, r, h, flat.data() + indptr[size_t(r) * Hkv + h]);
    } else {
      std::vector<std::vector<kv::kv_addr>> lists(Hkv);
      for (int r = 0; r < W; r++) {
        for (auto& x : lists) x.assign(addr_.begin(), addr_.begin() + (T - W + r + 1));
        decode_attention(out.data(), ql + size_t(r) * Hq * D, *cache_, l, lists, Hq, &w);
        for (int h = 0; h < Hkv; h++) add(l, r, h, w[size_t(h)].data());
      }
    }
  }
#pragma omp parallel for schedule(dynamic)
  for (int lh = 0; lh < L * Hkv; lh++) {
    const std::vector<float>& a = acc[size_t(lh)];
    // Keep budget - 1 (the next row joins): the recent part, then the heaviest of the rest.
    const int64_t keep = std::max<int64_t>(0, budget_ - 1);
    const int r0 = int(std::max<int64_t>(0, T - std::min<int64_t>(recent, keep)));
    std::vector<float> older(a.begin(), a.begin() + r0);
    auto heavy = top_n(older, int(std::min<int64_t>(keep - (T - r0), r0)));
    auto& kept = h2o_kept_[size_t(lh)];
    auto& score = h2o_score_[size_t(lh)];
    for (int32_t j : heavy) kept.push_back(j), score.push_back(a[size_t(j)]);
    for (int j = r0; j < T; j++) kept.push_back(j), score.push_back(a[size_t(j)]);
  }
  h2o_obs_q_.clear();
  h2o_ready_ = true;
}

}  // namespace gsa::infer
