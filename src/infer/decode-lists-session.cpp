// A session's side of the device-side key lists (backend/decode-lists.h): once per decode row, the row's lists
// as the backend's description (base rows: the gist mask, the full prefix or the streaming window; for gsa the
// candidate chunks' gist and raw rows), then after the step the backend's selection back into the statistics
// and records. The rules are the host path's (select-keys.cpp), which stays for what the description does not
// cover: h2o and caches off the pool.
#include <algorithm>
#include <cstring>

#include "backend/backend.h"
#include "core/dtype.h"
#include "core/error.h"
#include "gist/select.h"
#include "gist/stream.h"
#include "infer/session.h"

namespace gsa::infer {

namespace {

void iota_list(std::vector<int32_t>& v, int32_t begin, int32_t end) {
  for (int32_t p = begin; p < end; p++) v.push_back(p);
}

// bp = positions 0 .. pos: the last row's list extended by the row itself when it was 0 .. pos - 1.
void whole_prefix(std::vector<int32_t>& bp, int pos) {
  if (int(bp.size()) != pos || (pos > 0 && bp.front() != 0)) {
    bp.clear();
    iota_list(bp, 0, pos);
  }
  bp.push_back(pos);
}

}  // namespace

// Kept as the next row's `previous` (backend.h prepare_decode_lists), or dropped when the host path takes over.
std::shared_ptr<const void> session::prepared(std::shared_ptr<const void> p) {
  dl_prev_ = p;
  return p;
}

namespace {

// rows = the pool rows of positions pos (addr: position -> cache address), translating only those past the common
// prefix with rows_of, the positions rows was last translated for (cleared by the caller when pages moved);
// returns that prefix's length.
int64_t translate_rows(const kv::kv_cache& cache, const std::vector<kv::kv_addr>& addr, const std::vector<int32_t>& pos,
                       std::vector<int32_t>& rows, std::vector<int32_t>& rows_of) {
  // The common case, a list that only grew (full attention's prefix, a window before it slides): one memcmp over
  // the old list (a step at 1M tokens compares 4 MB), and only the new tail translated and kept.
  size_t keep = 0;
  if (rows_of.empty() || (rows_of.size() <= pos.size() &&
                          std::memcmp(pos.data(), rows_of.data(), rows_of.size() * sizeof(int32_t)) == 0))
    keep = rows_of.size();
  else
    keep = size_t(std::mismatch(pos.begin(), pos.end(), rows_of.begin(), rows_of.end()).first - pos.begin());
  rows.resize(keep);
  for (size_t i = keep; i < pos.size(); i++) rows.push_back(int32_t(cache.pool_row(0, addr[size_t(pos[i])])));
  rows_of.resize(keep);
  rows_of.insert(rows_of.end(), pos.begin() + int64_t(keep), pos.end());
  return int64_t(keep);
}

}  // namespace

// dl_.base_row from dl_.base_pos (the frames are allocated alike in every layer: layer 0's table serves all); only
// the positions past the common prefix with the last row's list are translated, unless pages moved off the device
// since (tier host: their rows changed), when every row is translated again. Returns whether they moved.
bool session::base_rows() {
  const bool moved = cache_->pages_moved() != dl_moved_;
  dl_moved_ = cache_->pages_moved();
  if (moved) dl_rows_of_.clear();
  dl_.base_same = translate_rows(*cache_, addr_, dl_.base_pos, dl_.base_row, dl_rows_of_);
  return moved;
}

void session::sel_base_rows(int pos, bool moved) {
  decode_lists& d = dl_;
  d.sel_base_pos.clear();
  const auto gists_end = std::upper_bound(gist_positions_.begin(), gist_positions_.end(), pos);
  std::set_union(d.base_pos.begin(), d.base_pos.end(), gist_positions_.begin(), gists_end,
                 std::back_inserter(d.sel_base_pos));
  if (moved) dl_sel_rows_of_.clear();
  d.sel_base_same = translate_rows(*cache_, addr_, d.sel_base_pos, dl_sel_rows_, dl_sel_rows_of_);
  d.sel_base_row = dl_sel_rows_;
}

std::shared_ptr<const void> session::prepare_lists(int pos) {
  const method meth = opts_.meth;
  const bool gist_method = meth == method::gist || meth == method::gsa || meth == method::hgsa;
  const bool router = meth == method::quest || meth == method::moba;
  if (!cache_->pooled() || (meth != method::full && meth != method::streaming && !gist_method && !router))
    return nullptr;
  const auto& c = m_.config;
  decode_lists& d = dl_;
  d.n_q_heads = int(c.num_attention_heads);
  d.n_kv_heads = int(c.num_key_value_heads);
  d.head_dim = int(c.head_dim);
  if (router) return prepare_pages(pos);
  // The base positions.
  std::vector<int32_t>& bp = d.base_pos;
  switch (meth) {
    case method::full:
      whole_prefix(bp, pos);
      break;
    case method::streaming: {
      const int64_t sink = std::min<int64_t>(sink_, budget_);
      const int64_t recent = budget_ - sink;
      const int32_t r0 = int32_t(std::max<int64_t>(0, pos + 1 - recent));
      bp.clear();
      iota_list(bp, 0, int32_t(std::min<int64_t>(sink, r0)));
      iota_list(bp, r0, pos + 1);
      break;
    }
    default:
      update_base(pos);
      bp = base_keys_;
      break;
  }
  const bool moved = base_rows();
  // Candidates (gsa rows of level <= 0 past the local window).
  const int level = s_.level[pos], m = s_.chunk[pos];
  const bool selects = meth == method::gsa || meth == method::hgsa;
  const int n_cand = selects && level <= 0
                         ? gist::candidate_count(m, gist::complete_chunk_count(s_), cfg_->local_chunks)
                         : 0;
  dl_selects_ = n_cand > 0;
  d.sel_base_pos.clear(), d.sel_base_row.clear();
  if (!dl_selects_) {
    d.clear_candidates();
    d.unit_row.clear();
    d.cfg = nullptr;
    dl_cand_build_ = -1;
    return prepared(m_.ops().prepare_decode_lists(d, dl_prev_.get()));
  }
  const gist::gsa_config& cfg = *cfg_;
  const int G = d.n_q_heads / d.n_kv_heads;
  d.g = cfg.gists_per_chunk;
  d.cfg = &cfg;
  if (meth == method::gsa) {
    d.k = gist::select_k(cfg, int64_t(m) * cfg.chunk[0], G, n_cand);
    d.unit_row.clear();
  } else {  // the host path's k per level (select-keys.cpp)
    d.k_per_level = cfg.select == gist::select_rule::fixed
                        ? std::vector<int>(cfg.levels(), cfg.topk)
                        : gist::hierarchy_k(cfg, int64_t(m) * cfg.chunk[0], G, n_cand);
    d.k = d.k_per_level[0];
    d.chunk = cfg.chunk;
    d.unit_row.resize(size_t(cfg.levels() - 1));
  }
  if (moved) dl_cand_build_ = -1;  // the candidates' raw rows too
  if (dl_cand_build_ != base_builds_ || d.n_cand() > n_cand) {  // the base changed: every flag may have
    d.clear_candidates();
    for (auto& u : d.unit_row) u.clear();
    dl_cand_build_ = base_builds_;
  }
  // hgsa: the whole units of each higher level, at their first gist's row (level l's store: unit u's gists are
  // rows [u g, (u + 1) g) of the store).
  for (int l = 1; l < d.levels(); l++) {
    auto& ur = d.unit_row[size_t(l) - 1];
    const int whole = n_cand / gist::chunks_per_unit(cfg, l);
    if (int(ur.size()) > whole) ur.clear();
    for (int u = int(ur.size()); u < whole; u++) {
      const int32_t r0 = int32_t(cache_->pool_row(0, kv::kv_addr{int8_t(l), u * d.g}));
      if (int32_t(cache_->pool_row(0, kv::kv_addr{int8_t(l), u * d.g + d.g - 1})) != r0 + d.g - 1) {
        dl_cand_build_ = -1;
        return prepared(nullptr);
      }
      ur.push_back(r0);
    }
  }
  // gists_all: the selecting layers' base holds every gist before the row too (decode-lists.h sel_base), so no
  // candidate adds its gists there.
  if (cfg.gists_all) sel_base_rows(pos, moved);
  const std::vector<int32_t>& sbp = cfg.gists_all ? d.sel_base_pos : bp;
  auto in_base = [&](int32_t p) { return std::binary_search(sbp.begin(), sbp.end(), p); };
  for (int u = d.n_cand(); u < n_cand; u++) {
    const int32_t gp = s_.chunk_gist_begin[u];
    int32_t r0 = s_.chunk_raw_begin[u];
    const int32_t r1 = s_.chunk_raw_end[u];
    while (r0 < r1 && in_base(r0)) r0++;  // the sink's rows are in the base already
    bool gists_in_base = true;
    for (int r = 0; r < d.g; r++) gists_in_base &= in_base(gp + r);
    const int32_t grow = int32_t(cache_->pool_row(0, addr_[gp]));
    const int32_t rrow = r0 < r1 ? int32_t(cache_->pool_row(0, addr_[r0])) : 0;
    // The kernels read a chunk's rows as one run: true while g divides the page size (and always for raw
    // chunks, one page each); a layout where it is not takes the host path.
    if (int32_t(cache_->pool_row(0, addr_[gp + d.g - 1])) != grow + d.g - 1 ||
        (r0 < r1 && int32_t(cache_->pool_row(0, addr_[r1 - 1])) != rrow + (r1 - r0) - 1)) {
      dl_cand_build_ = -1;
      return prepared(nullptr);
    }
    d.gist_pos.push_back(gp);
    d.gist_row.push_back(grow);
    d.raw_pos.push_back(r0);
    d.raw_row.push_back(rrow);
    d.raw_len.push_back(r1 - r0);
    d.add_gists.push_back(gists_in_base ? 0 : 1);
  }
  return prepared(m_.ops().prepare_decode_lists(d, dl_prev_.get()));
}

// quest / moba (page_select's rule): the incomplete page holding the row and the best k = (budget - own) / P
// complete pages per KV head under the page summaries, or the whole prefix when the budget holds every page.
// (prepare_lists set the heads.)
std::shared_ptr<const void> session::prepare_pages(int pos) {
  decode_lists& d = dl_;
  const int P = chunk_;
  GSA_ASSERT(cache_->layout().page_size == P, "page router: pages of {} rows, cache pages of {}", P,
             cache_->layout().page_size);
  d.router = opts_.meth == method::quest ? lists_router::quest : lists_router::moba;
  d.cfg = nullptr;
  d.g = 1;
  d.unit_row.clear();
  const int cur = pos / P;
  const int64_t own = pos - int64_t(cur) * P + 1;
  const int n_pages = int(std::max<int64_t>(0, budget_ - own) / P);
  std::vector<int32_t>& bp = d.base_pos;
  dl_selects_ = n_pages < cur && n_pages > 0;
  if (n_pages >= cur) {  // every page: the whole prefix
    whole_prefix(bp, pos);
  } else {
    bp.clear();
    iota_list(bp, cur * P, pos + 1);
  }
  const bool moved = base_rows();
  // Candidates: the complete pages before the row's, kept from row to row (a page's frame does not move
  // unless pages moved off the device).
  if (moved || !dl_selects_ || d.n_cand() > cur) {
    d.clear_candidates();
  }
  dl_cand_build_ = -1;
  if (dl_selects_) {
    d.k = n_pages;
    for (int p = d.n_cand(); p < cur; p++) {
      const int32_t r0 = int32_t(cache_->pool_row(0, addr_[p * P]));
      GSA_ASSERT(int32_t(cache_->pool_row(0, addr_[p * P + P - 1])) == r0 + P - 1,
                 "page {}: its rows are not one run of the pool", p);
      d.raw_pos.push_back(p * P);
      d.raw_row.push_back(r0);
      d.raw_len.push_back(P);
      d.gist_pos.push_back(p * P);
      d.gist_row.push_back(r0);
      d.add_gists.push_back(0);
    }
  } else {
    d.k = 0;
  }
  return prepared(m_.ops().prepare_decode_lists(d, dl_prev_.get()));
}

bool session::lists_select(int layer) const {
  if (!dl_selects_) return false;
  if (dl_.router != lists_router::none) return true;
  const auto& dl = cfg_->dense_layers;
  return std::find(dl.begin(), dl.end(), layer) == dl.end();
}

int64_t session::kv_elem_bytes() const {
  return cache_->pooled() ? int64_t(dtype_size(cache_->layout().rows_on->act())) : int64_t(sizeof(float));
}

void session::lists_done(const int32_t* stats, const int32_t* selected) {
  listed_rows_++;
  const int L = int(m_.config.num_hidden_layers), Hkv = dl_.n_kv_heads, D = dl_.head_dim;
  const int cap = dl_.cap();
  const int64_t row_bytes = int64_t(2) * D * kv_elem_bytes();
  const int n_cand = dl_.n_cand();
  GSA_ASSERT(stats || !selected, "the ids of a step's selection come with its stats");
  for (int l = 0; l < L; l++) {
    const bool sel = stats && lists_select(l);
    const int64_t nb = int64_t(sel && !dl_.sel_base_pos.empty() ? dl_.sel_base_pos.size() : dl_.base_pos.size());
    const int32_t* st = sel ? stats + size_t(l) * dl_.stats_size() : nullptr;
    const int32_t* lay = sel && selected ? selected + size_t(l) * dl_.selected_size() : nullptr;
    for (int h = 0; h < Hkv; h++) {
      int64_t n = nb;
      const int32_t* ids = nullptr;
      int n_ids = 0;
      if (sel) {
        n_ids = st[h];
        const int64_t scored = st[Hkv + h], added = st[2 * Hkv + h];
        GSA_ASSERT(n_ids >= 0 && n_ids <= cap && scored >= 0 && scored <= n_cand * int64_t(dl_.levels()) &&
                       added >= 0,
                   "layer {} head {}: {} chunks selected for {} slots, {} units scored of {}, {} rows added", l, h,
                   n_ids, cap, scored, n_cand, added);
        n += added;
        if (lay) {  // the ids: checked, and kept for the statistics and records
          GSA_ASSERT(lay[h] == n_ids, "layer {} head {}: {} ids for a count of {}", l, h, lay[h], n_ids);
          ids = lay + Hkv + size_t(h) * cap;
          int32_t prev = -1;
          int64_t rows = 0;
          for (int j = 0; j < n_ids; j++) {
            const int32_t u = ids[j];
            if (u <= prev || u >= n_cand) [[unlikely]]
              GSA_ASSERT(u > prev && u < n_cand, "layer {} head {}: selected chunk {} of {} candidates (after {})", l,
                         h, u, n_cand, prev);
            rows += dl_.chunk_rows(u);
            prev = u;
          }
          GSA_ASSERT(rows == added, "layer {} head {}: the selected chunks hold {} rows, the lists {}", l, h, rows,
                     added);
          stats_.unfolded[size_t(l) * Hkv + h].assign(ids, ids + n_ids);
        }
        // Gist keys are pool rows; page routers read f32 summary planes per page (quest: min and max).
        if (dl_.router == lists_router::none)
          stats_.bytes_read += scored * dl_.g * D * kv_elem_bytes();
        else
          stats_.bytes_read += scored * (dl_.router == lists_router::quest ? 2 : 1) * D * int64_t(sizeof(float));
      }
      stats_.bytes_read += n * row_bytes;
      stats_.attended_tokens += double(n) / (double(L) * Hkv);
      if (opts_.record) {
        GSA_ASSERT(!sel || lay, "a recording session's step brings its ids back");
        std::vector<int32_t> keys;
        decode_lists_merge(dl_, sel, ids, n_ids, &keys, nullptr);
        records_.back().keys.push_back(std::move(keys));
      }
    }
  }
}

}  // namespace gsa::infer
