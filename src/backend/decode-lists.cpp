// The host reference of backend.h's decode lists (contract: decode-lists.h): gist::score_units and
// gist::select_top_fast on the pool's rows, then the lists merged in stream order and attended by decode_attention.
#include "backend/decode-lists.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "backend/backend.h"
#include "core/error.h"
#include "gist/config.h"
#include "gist/fast-select.h"
#include "gist/select.h"

namespace gsa {

int decode_lists::cap() const {
  if (router != lists_router::none) return std::clamp(k, 0, n_cand());
  if (!cfg || gist_row.empty()) return 0;
  const int G = n_q_heads / std::max(1, n_kv_heads);
  if (cfg->select == gist::select_rule::top_p) return n_cand();
  return int(std::min<int64_t>(n_cand(), int64_t(std::max(0, k)) * (cfg->group_scoring ? 1 : G)));
}

void decode_lists_merge(const decode_lists& d, bool selects, const int32_t* sel, int n_sel, std::vector<int32_t>* pos,
                        std::vector<int32_t>* rows) {
  const bool own = selects && !d.sel_base_pos.empty();
  const std::vector<int32_t>& bpos = own ? d.sel_base_pos : d.base_pos;
  const std::vector<int32_t>& brow = own ? d.sel_base_row : d.base_row;
  const size_t nb = bpos.size();
  size_t i = 0;
  auto emit = [&](int32_t p, int32_t r) {
    if (pos) pos->push_back(p);
    if (rows) rows->push_back(r);
  };
  // Base rows before position p, then p.. (the unfolded runs are ascending and disjoint from the base).
  auto base_until = [&](int32_t p) {
    for (; i < nb && bpos[i] < p; i++) emit(bpos[i], brow[i]);
  };
  auto run = [&](int32_t p0, int32_t r0, int n) {
    for (int j = 0; j < n; j++) {
      base_until(p0 + j);
      emit(p0 + j, r0 + j);
    }
  };
  for (int s = 0; s < n_sel; s++) {
    const int u = sel[s];
    GSA_ASSERT(u >= 0 && u < d.n_cand(), "selected chunk {} of {} candidates", u, d.n_cand());
    run(d.raw_pos[u], d.raw_row[u], d.raw_len[u]);
    if (d.add_gists[u]) run(d.gist_pos[u], d.gist_row[u], d.g);
  }
  base_until(INT32_MAX);
}

std::shared_ptr<const void> backend::prepare_decode_lists(const decode_lists& lists, const void* /*previous*/) {
  return std::make_shared<decode_lists>(lists);
}

namespace {

// A page router's choice (decode-lists.h): per KV head the k best complete pages under the summaries' score,
// in page_select's arithmetic (infer/select-keys.cpp), so the pool-mode session equals the host engine.
std::vector<std::vector<int32_t>> route_pages(const decode_lists& d, const float* q, const Tensor& summary) {
  const int Hq = d.n_q_heads, Hkv = d.n_kv_heads, D = d.head_dim, G = Hq / Hkv, n = d.n_cand();
  GSA_ASSERT(summary.where() == device::cpu && summary.type() == dtype::f32 && summary.dim(0) >= n &&
                 summary.dim(1) == 3 && summary.dim(2) == Hkv && summary.dim(3) == D,
             "page summaries {} for {} pages of {} x {}", shape_str(summary.shape()), n, Hkv, D);
  const bool quest = d.router == lists_router::quest;
  std::vector<std::vector<int32_t>> out(Hkv);
  std::vector<float> s(n);
  std::vector<int32_t> idx(n);
  for (int h = 0; h < Hkv; h++) {
    for (int p = 0; p < n; p++) {
      const float* mn = summary.f32() + ((size_t(p) * 3 + 0) * Hkv + h) * D;
      const float* mx = mn + size_t(Hkv) * D;
      const float* me = mx + size_t(Hkv) * D;
      s[p] = -INFINITY;
      for (int i = 0; i < G; i++) {
        const float* qh = q + size_t(h * G + i) * D;
        float v = 0;
        if (quest)
          for (int e = 0; e < D; e++) v += std::max(qh[e] * mn[e], qh[e] * mx[e]);
        else
          for (int e = 0; e < D; e++) v += qh[e] * me[e];
        s[p] = std::max(s[p], v);
      }
    }
    for (int p = 0; p < n; p++) idx[p] = p;
    std::stable_sort(idx.begin(), idx.end(), [&](int32_t x, int32_t y) { return s[x] > s[y]; });
    out[h].assign(idx.begin(), idx.begin() + d.cap());
    std::sort(out[h].begin(), out[h].end());
  }
  return out;
}

// One call of decode_attention_lists_batch on the host.
void host_lists_row(backend& be, Tensor& out, const Tensor& q, int page_rows, const backend::lists_call& c) {
  const Tensor& pool = *c.pool;
  const bool select = c.select;
  Tensor selected = c.selected;
  GSA_ASSERT(q.where() == device::cpu && pool.where() == device::cpu && q.type() == dtype::f32 &&
                 pool.type() == dtype::f32,
             "the host decode lists need f32 host tensors");
  const decode_lists& d = *static_cast<const decode_lists*>(c.prepared);
  const int Hq = int(q.dim(1)), D = int(q.dim(2)), Hkv = int(pool.dim(1));
  GSA_ASSERT(q.dim(0) == 1 && Hq == d.n_q_heads && Hkv == d.n_kv_heads && D == d.head_dim,
             "decode lists for {}x{} heads of {}, q {} and pool {}", d.n_q_heads, d.n_kv_heads, d.head_dim,
             shape_str(q.shape()), shape_str(pool.shape()));
  std::vector<std::vector<int32_t>> sel(Hkv);
  const int n = d.n_cand(), cap = d.cap();
  if (select && n > 0) {
    GSA_ASSERT((d.cfg || d.router != lists_router::none) && selected.numel() >= d.selected_size(),
               "selected holds {} of {} values", selected.numel(), d.selected_size());
    int32_t* o = static_cast<int32_t*>(selected.raw());
    if (d.router != lists_router::none) {
      GSA_ASSERT(c.summary, "decode lists: a page router's call without page summaries");
      sel = route_pages(d, q.f32(), *c.summary);
      for (int h = 0; h < Hkv; h++) o[int64_t(Hkv) * (1 + cap) + h] = n;
    } else if (d.levels() == 1) {
      std::vector<float> scores(size_t(Hq) * n);
      gist::score_units(scores.data(), q.f32(), 1, Hq, pool.f32(), int(pool.dim(0)), Hkv, D, d.gist_row.data(),
                        n, d.g);
      gist::select_top_fast(scores.data(), Hq, Hkv, n, d.k, *d.cfg, sel);
      for (int h = 0; h < Hkv; h++) o[int64_t(Hkv) * (1 + cap) + h] = n;
    } else {
      // The walk of gist::select_hierarchical_fast, scoring units at their rows in the pool (score_units' arithmetic).
      const int G = Hq / Hkv;
      const float scale = 1.0f / std::sqrt(float(D));
      const size_t rowf = size_t(Hkv) * D;
      std::vector<int64_t> scored(Hkv, 0);
      auto scorer = [&](int lv, int h, const std::vector<int32_t>& units, float* out) {
        const std::vector<int32_t>& rows = lv == 0 ? d.gist_row : d.unit_row[size_t(lv) - 1];
        for (int i = 0; i < G; i++) {
          const float* qh = q.f32() + size_t(h * G + i) * D;
          for (size_t j = 0; j < units.size(); j++) {
            GSA_ASSERT(units[j] >= 0 && units[j] < int(rows.size()), "unit {} of {} at level {}", units[j],
                       rows.size(), lv);
            float best = -INFINITY;
            for (int r = 0; r < d.g; r++) {
              const float* kp = pool.f32() + size_t(rows[size_t(units[j])] + r) * rowf + size_t(h) * D;
              float dot = 0;
              for (int e = 0; e < D; e++) dot += qh[e] * kp[e];
              best = std::max(best, dot * scale);
            }
            out[size_t(i) * units.size() + j] = best;
          }
        }
        scored[size_t(h)] += int64_t(units.size());
      };
      sel = gist::select_hierarchical_fast(n, Hq, Hkv, d.k_per_level, *d.cfg, scorer).chunks;
      for (int h = 0; h < Hkv; h++) o[int64_t(Hkv) * (1 + cap) + h] = int32_t(scored[size_t(h)]);
    }
    for (int h = 0; h < Hkv; h++) {
      GSA_ASSERT(int(sel[h].size()) <= cap, "{} chunks selected for {} slots", sel[h].size(), cap);
      o[h] = int32_t(sel[h].size());
      std::copy(sel[h].begin(), sel[h].end(), o + Hkv + size_t(h) * cap);
    }
    if (!c.stats.empty()) {
      GSA_ASSERT(c.stats.numel() >= d.stats_size(), "stats holds {} of {} values", c.stats.numel(), d.stats_size());
      Tensor stats = c.stats;
      int32_t* st = static_cast<int32_t*>(stats.raw());
      for (int h = 0; h < Hkv; h++) {
        int32_t rows = 0;
        for (int32_t u : sel[h]) rows += d.chunk_rows(u);
        st[h] = o[h];
        st[Hkv + h] = o[int64_t(Hkv) * (1 + cap) + h];
        st[2 * Hkv + h] = rows;
      }
    }
  }
  std::vector<int64_t> indptr{0};
  std::vector<int32_t> rows;
  for (int h = 0; h < Hkv; h++) {
    decode_lists_merge(d, select && n > 0, sel[h].data(), int(sel[h].size()), nullptr, &rows);
    indptr.push_back(int64_t(rows.size()));
  }
  be.decode_attention(out, q, pool, page_rows, indptr, rows, c.host);
}

}  // namespace

void backend::decode_attention_lists_batch(Tensor& out, const Tensor& q, int page_rows, std::vector<lists_call>& calls) {
  for (lists_call& c : calls) {
    Tensor out_i = out.slice_rows(c.row, c.row + 1);
    host_lists_row(*this, out_i, q.slice_rows(c.row, c.row + 1), page_rows, c);
  }
}

}  // namespace gsa
