// Plan builders for the gist mask, unfolding and suffix attention. Lists are gathered from their sources
// (ascending runs), then sorted and deduplicated: the runs overlap only where the sink meets the local window.
#include "gist/plan.h"

#include <algorithm>

#include "core/error.h"

namespace gsa::gist {

namespace {

int raw_count(const stream& s) {
  if (s.n_chunks() == 0) return 0;
  const int m = s.n_chunks() - 1;
  return s.chunk_raw_end[m] - s.chunk_raw_begin[m] + m * (s.chunk_raw_end[0] - s.chunk_raw_begin[0]);
}

void finish_list(std::vector<int32_t>& v, int last) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  v.erase(std::upper_bound(v.begin(), v.end(), last), v.end());
}

// Last stream position of the block of raw tokens + level-0 gists of chunk m.
int chunk_block_end(const stream& s, const gsa_config& cfg, int m) {
  return s.chunk_gist_begin[m] >= 0 ? s.chunk_gist_begin[m] + cfg.gists_per_chunk : s.chunk_raw_end[m];
}

}  // namespace

void compress_keys(std::vector<int32_t>& out, const stream& s, const gsa_config& cfg, int m, int level,
                   int last) {
  out.clear();
  const int c0 = cfg.chunk[0], g = cfg.gists_per_chunk, L = cfg.levels();
  if (level <= 0) {
    const int n_sink = std::min(cfg.sink, raw_count(s));
    for (int t = 0; t < n_sink; t++) out.push_back(raw_position(s, c0, t));
    for (int mm = std::max(0, m - cfg.local_chunks); mm <= m; mm++)
      for (int p = s.chunk_raw_begin[mm]; p < s.chunk_raw_end[mm]; p++) out.push_back(p);
  }
  for (int j = std::max(0, level - 1); j < L; j++) {
    const int span = chunks_per_unit(cfg, j);
    int lo = 0, hi = m + 1;  // chunk range whose level-j gists may be visible
    if (j < L - 1) {
      const int up = chunks_per_unit(cfg, j + 1), pq = m / up;
      lo = std::max(0, (pq - 1) * up);
      hi = std::min((pq + 1) * up, m + 1);
    }
    hi = std::min(hi, s.n_chunks());
    for (int mm = (lo / span + 1) * span - 1; mm < hi; mm += span) {
      if (mm < lo || s.chunk_gist_begin[mm] < 0) continue;
      for (int r = 0; r < g; r++) out.push_back(s.chunk_gist_begin[mm] + j * g + r);
    }
  }
  finish_list(out, last);
}

cpu::attn_plan plan_compress(const stream& s, const gsa_config& cfg, int split_at) {
  cpu::attn_plan plan;
  plan.heads = 1;
  plan.block_q.push_back(0);
  plan.indptr.push_back(0);
  std::vector<int32_t> keys;
  const int g = cfg.gists_per_chunk;
  // A block [b0, b1) of query class (m, level); cut at split_at when it straddles it.
  auto add_block = [&](int b0, int b1, int m, int level) {
    auto emit = [&](int end) {  // the block starts where the previous one ended
      compress_keys(keys, s, cfg, m, level, end - 1);
      plan.indices.insert(plan.indices.end(), keys.begin(), keys.end());
      plan.indptr.push_back(int64_t(plan.indices.size()));
      plan.block_q.push_back(end);
    };
    if (split_at > b0 && split_at < b1) emit(split_at);
    emit(b1);
  };
  for (int m = 0; m < s.n_chunks(); m++) {
    GSA_ASSERT(plan.block_q.back() == s.chunk_raw_begin[m], "chunk {} does not start where the last block ends", m);
    add_block(s.chunk_raw_begin[m], chunk_block_end(s, cfg, m), m, 0);
    if (s.chunk_gist_begin[m] < 0) continue;
    for (int l = 1; l < cfg.levels(); l++) {
      const int p0 = s.chunk_gist_begin[m] + l * g;
      if (p0 >= s.size() || s.level[p0] != l || s.chunk[p0] != m) break;
      add_block(p0, p0 + g, m, l);
    }
  }
  GSA_ASSERT(plan.block_q.back() == s.size(), "plan covers {} of {} rows", plan.block_q.back(), s.size());
  return plan;
}

cpu::attn_plan plan_split_rows(const cpu::attn_plan& base, int first_row) {
  GSA_ASSERT(base.heads == 1, "plan_split_rows needs a plan with one list per block");
  cpu::attn_plan out;
  out.heads = 1;
  out.block_q.push_back(0);
  out.indptr.push_back(0);
  for (int b = 0; b < base.n_blocks(); b++) {
    const int r0 = base.block_q[b], r1 = base.block_q[b + 1];
    const auto first = base.indices.begin() + base.indptr[b], end = base.indices.begin() + base.indptr[b + 1];
    if (r0 < first_row) {
      out.indices.insert(out.indices.end(), first, end);
      out.block_q.push_back(r1);
      out.indptr.push_back(int64_t(out.indices.size()));
      continue;
    }
    for (int r = r0; r < r1; r++) {  // lists are ascending: keep the prefix <= r
      out.indices.insert(out.indices.end(), first, std::upper_bound(first, end, r));
      out.block_q.push_back(r + 1);
      out.indptr.push_back(int64_t(out.indices.size()));
    }
  }
  return out;
}

cpu::attn_plan plan_unfold(const stream& s, const gsa_config& cfg, const cpu::attn_plan& base,
                           const std::vector<std::vector<int32_t>>& selected, int n_kv_heads,
                           const std::vector<uint8_t>& unfolds) {
  const int nb = base.n_blocks();
  if (n_kv_heads < 1) fail("plan_unfold: n_kv_heads = {} must be >= 1", n_kv_heads);
  GSA_ASSERT(base.heads == 1, "plan_unfold needs a compress plan (one list per block)");
  GSA_ASSERT(int64_t(selected.size()) == int64_t(nb) * n_kv_heads, "selected has {} lists for {} blocks x {} heads",
             selected.size(), nb, n_kv_heads);
  GSA_ASSERT(unfolds.empty() || int(unfolds.size()) == nb, "unfolds has {} flags for {} blocks", unfolds.size(), nb);
  const int g = cfg.gists_per_chunk;

  // With gists = all, every gist is a key of every unfolding block: collect them once.
  std::vector<int32_t> all_gists;
  if (cfg.gists_all)
    for (int i = 0; i < s.size(); i++)
      if (s.is_gist(i)) all_gists.push_back(i);

  cpu::attn_plan plan;
  plan.heads = n_kv_heads;
  plan.block_q = base.block_q;
  plan.indptr.reserve(size_t(nb) * n_kv_heads + 1);
  plan.indptr.push_back(0);
  std::vector<int32_t> keys;
  for (int b = 0; b < nb; b++) {
    const int last = base.block_q[b + 1] - 1;
    const bool unfold = unfolds.empty() || unfolds[b];
    for (int h = 0; h < n_kv_heads; h++) {
      const auto& sel = selected[size_t(b) * n_kv_heads + h];
      keys.assign(base.indices.begin() + base.indptr[b], base.indices.begin() + base.indptr[b + 1]);
      if (unfold) {
        for (int32_t m : sel) {
          GSA_ASSERT(m >= 0 && m < s.n_chunks(), "selected chunk {} of {}", m, s.n_chunks());
          for (int p = s.chunk_raw_begin[m]; p < s.chunk_raw_end[m]; p++) keys.push_back(p);
          if (s.chunk_gist_begin[m] >= 0)
            for (int r = 0; r < g; r++) keys.push_back(s.chunk_gist_begin[m] + r);
        }
        if (cfg.gists_all)
          keys.insert(keys.end(), all_gists.begin(), std::upper_bound(all_gists.begin(), all_gists.end(), last));
        finish_list(keys, last);
      } else {
        GSA_ASSERT(sel.empty(), "block {} does not unfold but has a selection", b);
      }
      plan.indices.insert(plan.indices.end(), keys.begin(), keys.end());
      plan.indptr.push_back(int64_t(plan.indices.size()));
    }
  }
  return plan;
}

int first_block_at(const cpu::attn_plan& plan, int row) {
  auto it = std::lower_bound(plan.block_q.begin(), plan.block_q.end() - 1, row);
  return int(it - plan.block_q.begin());
}

cpu::attn_plan plan_suffix(const stream& s, const gsa_config& cfg, const cpu::attn_plan& base, int ctx_end,
                           const std::vector<std::vector<int32_t>>& selected, int n_kv_heads) {
  const int nb = base.n_blocks();
  const int first = first_block_at(base, ctx_end);
  if (first < nb && base.block_q[first] != ctx_end)
    fail("plan_suffix: the plan has no block boundary at the context end {}; build it with "
         "plan_compress(s, cfg, ctx_end)", ctx_end);
  GSA_ASSERT(int64_t(selected.size()) == int64_t(nb - first) * n_kv_heads,
             "selected has {} lists for {} suffix blocks x {} heads", selected.size(), nb - first, n_kv_heads);
  std::vector<std::vector<int32_t>> all(size_t(nb) * n_kv_heads);
  std::copy(selected.begin(), selected.end(), all.begin() + size_t(first) * n_kv_heads);
  std::vector<uint8_t> unfolds(nb, 0);
  std::fill(unfolds.begin() + first, unfolds.end(), 1);
  return plan_unfold(s, cfg, base, all, n_kv_heads, unfolds);
}

cpu::attn_plan plan_rows(const cpu::attn_plan& plan, int row_begin) {
  const int nb = plan.n_blocks();
  const int first = first_block_at(plan, row_begin);
  if (first == nb && row_begin == plan.block_q.back()) {
    cpu::attn_plan empty;
    empty.heads = plan.heads;
    empty.block_q = {0};
    empty.indptr = {0};
    return empty;
  }
  if (first >= nb || plan.block_q[first] != row_begin)
    fail("plan_rows: row {} is not a block boundary of the plan", row_begin);
  cpu::attn_plan out;
  out.heads = plan.heads;
  for (int b = first; b <= nb; b++) out.block_q.push_back(plan.block_q[b] - row_begin);
  const size_t i0 = size_t(first) * plan.heads;
  const int64_t base = plan.indptr[i0];
  for (size_t i = i0; i < plan.indptr.size(); i++) out.indptr.push_back(plan.indptr[i] - base);
  out.indices.assign(plan.indices.begin() + base, plan.indices.end());
  return out;
}

}  // namespace gsa::gist
