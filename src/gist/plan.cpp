// Plan builders for the gist mask, unfolding and suffix attention. Every list is assembled from its sources
// (ranges of raw tokens, intervals of gist units per level) by list_builder, which makes them disjoint, cuts
// them at the block's last row and sorts them by first key: O(s log s) for s sources, never per key.
#include "gist/plan.h"

#include <algorithm>
#include <utility>

#include "core/error.h"
#include "gist/select.h"

namespace gsa::gist {

namespace {

using cpu::attn_plan;
using cpu::key_seg;

int raw_count(const stream& s) {
  if (s.n_chunks() == 0) return 0;
  const int m = s.n_chunks() - 1;
  return s.chunk_raw_end[m] - s.chunk_raw_begin[m] + m * (s.chunk_raw_end[0] - s.chunk_raw_begin[0]);
}

// Last stream position of the block of raw tokens + level-0 gists of chunk m.
int chunk_block_end(const stream& s, const gsa_config& cfg, int m) {
  return s.chunk_gist_begin[m] >= 0 ? s.chunk_gist_begin[m] + cfg.gists_per_chunk : s.chunk_raw_end[m];
}

int table_units(const attn_plan& p, int level) {
  return level + 1 < int(p.gist_ptr.size()) ? p.gist_ptr[level + 1] - p.gist_ptr[level] : 0;
}
const int32_t* table_pos(const attn_plan& p, int level) { return p.gist_pos.data() + p.gist_ptr[level]; }

// One list under construction: ranges of stream positions and intervals of gist units (per level), in any order
// and possibly overlapping. finish() turns them into disjoint segments with no key after `last`.
struct list_builder {
  std::vector<std::pair<int32_t, int32_t>> ranges;
  std::vector<key_seg> units;
  std::vector<key_seg> out;

  void clear() {
    ranges.clear();
    units.clear();
  }
  void range(int32_t begin, int32_t end) {
    if (begin < end) ranges.emplace_back(begin, end);
  }
  void unit_span(int level, int32_t begin, int32_t end) {
    if (begin < end) units.push_back(cpu::gist_units(level, begin, end));
  }
  // The segments of list (b, h) of p as sources.
  void load(const attn_plan& p, int b, int h) {
    for (int64_t i = p.seg_begin(b, h); i < p.seg_end(b, h); i++) {
      const key_seg& s = p.segs[size_t(i)];
      if (s.level < 0) range(s.begin, s.end);
      else unit_span(s.level, s.begin, s.end);
    }
  }
  // Normalised segments of the sources, resolved through t's gist table, into out.
  void finish(const attn_plan& t, int last) {
    out.clear();
    const int g = t.gists_per_unit;
    // Units: merge overlapping intervals per level; a unit whose gists pass `last` ends the segment, and its
    // gists up to `last` (g > 1) become a range.
    std::sort(units.begin(), units.end(), [](const key_seg& a, const key_seg& b) {
      return a.level != b.level ? a.level < b.level : a.begin < b.begin;
    });
    for (size_t i = 0; i < units.size();) {
      key_seg cur = units[i++];
      while (i < units.size() && units[i].level == cur.level && units[i].begin <= cur.end)
        cur.end = std::max(cur.end, units[i++].end);
      GSA_ASSERT(cur.end <= table_units(t, cur.level), "gist units [{}, {}) of level {} past the table's {}", cur.begin,
                 cur.end, cur.level, table_units(t, cur.level));
      const int32_t* pos = table_pos(t, cur.level);
      const int32_t cut = int32_t(
          std::partition_point(pos + cur.begin, pos + cur.end, [&](int32_t p) { return p + g - 1 <= last; }) - pos);
      if (cut > cur.begin) out.push_back(cpu::gist_units(cur.level, cur.begin, cut));
      if (cut < cur.end && pos[cut] <= last) range(pos[cut], last + 1);
    }
    // Ranges: cut at last, merge overlapping or touching ones (the sink inside a local chunk, a chunk unfolded twice).
    for (auto& r : ranges) r.second = std::min(r.second, last + 1);
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 0; i < ranges.size();) {
      auto cur = ranges[i++];
      while (i < ranges.size() && ranges[i].first <= cur.second) cur.second = std::max(cur.second, ranges[i++].second);
      if (cur.first < cur.second) out.push_back(cpu::key_range(cur.first, cur.second));
    }
    auto first_key = [&](const key_seg& s) { return s.level < 0 ? s.begin : table_pos(t, s.level)[s.begin]; };
    std::sort(out.begin(), out.end(), [&](const key_seg& a, const key_seg& b) { return first_key(a) < first_key(b); });
  }
  void append_to(attn_plan& p) const {
    p.segs.insert(p.segs.end(), out.begin(), out.end());
    p.seg_ptr.push_back(int64_t(p.segs.size()));
  }
};

// The sources of the gist-mask keys of chunk m's queries of class `level` (see compress_segments).
void add_compress_sources(list_builder& lb, const attn_plan& t, const stream& s, const gsa_config& cfg, int m,
                          int level) {
  const int c0 = cfg.chunk[0], L = cfg.levels();
  if (level <= 0) {
    const int n_sink = std::min(cfg.sink, raw_count(s));
    for (int mm = 0; mm * c0 < n_sink; mm++)
      lb.range(s.chunk_raw_begin[mm], s.chunk_raw_begin[mm] + std::min(c0, n_sink - mm * c0));
    for (int mm = std::max(0, m - cfg.local_chunks); mm <= m; mm++)
      lb.range(s.chunk_raw_begin[mm], s.chunk_raw_end[mm]);
  }
  for (int j = std::max(0, level - 1); j < L; j++) {
    const int span = chunks_per_unit(cfg, j);
    int lo = 0, hi = m + 1;  // chunk range whose level-j gists may be visible
    if (j < L - 1) {
      const int up = chunks_per_unit(cfg, j + 1), pq = m / up;
      lo = std::max(0, (pq - 1) * up);
      hi = std::min((pq + 1) * up, m + 1);
    }
    // Unit u's gists follow its last chunk (u + 1) span - 1: units [lo / span, hi / span), those in the table.
    lb.unit_span(j, lo / span, std::min(hi / span, table_units(t, j)));
  }
}

}  // namespace

void set_gist_table(attn_plan& plan, const stream& s, const gsa_config& cfg) {
  const int g = cfg.gists_per_chunk, n_complete = complete_chunk_count(s);
  plan.gists_per_unit = g;
  plan.gist_ptr.assign(1, 0);
  plan.gist_pos.clear();
  for (int l = 0; l < cfg.levels(); l++) {
    const int span = chunks_per_unit(cfg, l);
    for (int u = 0; u < n_complete / span; u++) {
      const int p = s.chunk_gist_begin[size_t(u + 1) * span - 1] + l * g;
      if (p >= s.size()) break;  // a stream being extended row by row: this unit's gists are not in yet
      plan.gist_pos.push_back(p);
    }
    plan.gist_ptr.push_back(int32_t(plan.gist_pos.size()));
  }
}

void compress_segments(std::vector<key_seg>& out, const attn_plan& plan, const stream& s, const gsa_config& cfg,
                       int m, int level, int last) {
  list_builder lb;
  add_compress_sources(lb, plan, s, cfg, m, level);
  lb.finish(plan, last);
  out = std::move(lb.out);
}

void compress_keys(std::vector<int32_t>& out, const stream& s, const gsa_config& cfg, int m, int level,
                   int last) {
  attn_plan t;
  set_gist_table(t, s, cfg);
  std::vector<key_seg> segs;
  compress_segments(segs, t, s, cfg, m, level, last);
  t.segs = std::move(segs);
  t.seg_ptr = {0, int64_t(t.segs.size())};
  t.block_q = {0, 1};
  t.list_keys(0, 0, out);
}

attn_plan plan_compress(const stream& s, const gsa_config& cfg, int split_at) {
  attn_plan plan;
  plan.heads = 1;
  set_gist_table(plan, s, cfg);
  plan.block_q.push_back(0);
  plan.seg_ptr.push_back(0);
  const int g = cfg.gists_per_chunk;
  list_builder lb;
  // A block [b0, b1) of query class (m, level); cut at split_at when it straddles it.
  auto add_block = [&](int b0, int b1, int m, int level) {
    auto emit = [&](int end) {  // the block starts where the previous one ended
      lb.clear();
      add_compress_sources(lb, plan, s, cfg, m, level);
      lb.finish(plan, end - 1);
      lb.append_to(plan);
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

namespace {

// An empty plan with base's gist table.
attn_plan with_table_of(const attn_plan& base, int heads) {
  attn_plan p;
  p.heads = heads;
  p.gists_per_unit = base.gists_per_unit;
  p.gist_ptr = base.gist_ptr;
  p.gist_pos = base.gist_pos;
  return p;
}

void copy_list(attn_plan& to, const attn_plan& from, int b, int h) {
  to.segs.insert(to.segs.end(), from.segs.begin() + from.seg_begin(b, h), from.segs.begin() + from.seg_end(b, h));
  to.seg_ptr.push_back(int64_t(to.segs.size()));
}

}  // namespace

attn_plan plan_split_rows(const attn_plan& base, int first_row) {
  GSA_ASSERT(base.heads == 1, "plan_split_rows needs a plan with one list per block");
  attn_plan out = with_table_of(base, 1);
  out.block_q.push_back(0);
  out.seg_ptr.push_back(0);
  list_builder lb;
  for (int b = 0; b < base.n_blocks(); b++) {
    const int r0 = base.block_q[b], r1 = base.block_q[b + 1];
    if (r0 < first_row) {
      copy_list(out, base, b, 0);
      out.block_q.push_back(r1);
      continue;
    }
    for (int r = r0; r < r1; r++) {  // the block's keys up to r
      lb.clear();
      lb.load(base, b, 0);
      lb.finish(base, r);
      lb.append_to(out);
      out.block_q.push_back(r + 1);
    }
  }
  return out;
}

attn_plan plan_unfold(const stream& s, const gsa_config& cfg, const attn_plan& base,
                      const std::vector<std::vector<int32_t>>& selected, int n_kv_heads,
                      const std::vector<uint8_t>& unfolds, int b_begin, int b_end) {
  const int nb = b_end < 0 ? base.n_blocks() : b_end;
  if (n_kv_heads < 1) fail("plan_unfold: n_kv_heads = {} must be >= 1", n_kv_heads);
  GSA_ASSERT(base.heads == 1, "plan_unfold needs a compress plan (one list per block)");
  GSA_ASSERT(b_begin >= 0 && b_begin <= nb && nb <= base.n_blocks(), "plan_unfold: blocks [{}, {}) of {}", b_begin,
             nb, base.n_blocks());
  GSA_ASSERT(int64_t(selected.size()) == int64_t(nb - b_begin) * n_kv_heads,
             "selected has {} lists for {} blocks x {} heads", selected.size(), nb - b_begin, n_kv_heads);
  GSA_ASSERT(unfolds.empty() || int(unfolds.size()) >= nb, "unfolds has {} flags for {} blocks", unfolds.size(), nb);
  GSA_ASSERT(base.gists_per_unit == cfg.gists_per_chunk && int(base.gist_ptr.size()) == cfg.levels() + 1,
             "plan_unfold: the base plan's gist table is not this stream's (build it with plan_compress)");
  const int n_gist0 = table_units(base, 0), g = cfg.gists_per_chunk;

  attn_plan plan = with_table_of(base, n_kv_heads);
  const int32_t r0 = base.block_q[size_t(b_begin)];
  for (int b = b_begin; b <= nb; b++) plan.block_q.push_back(base.block_q[size_t(b)] - r0);
  plan.seg_ptr.reserve(size_t(nb - b_begin) * n_kv_heads + 1);
  plan.seg_ptr.push_back(0);
  list_builder lb;
  for (int b = b_begin; b < nb; b++) {
    const int last = base.block_q[b + 1] - 1;
    const bool unfold = unfolds.empty() || unfolds[b];
    for (int h = 0; h < n_kv_heads; h++) {
      const auto& sel = selected[size_t(b - b_begin) * n_kv_heads + h];
      if (!unfold) {
        GSA_ASSERT(sel.empty(), "block {} does not unfold but has a selection", b);
        copy_list(plan, base, b, 0);
        continue;
      }
      lb.clear();
      lb.load(base, b, 0);
      const size_t n_base_units = lb.units.size();
      auto gist_listed = [&](int32_t m) {  // level-0 unit m already in a unit segment of the list
        if (cfg.gists_all) return true;      // (every unit joins below)
        for (size_t i = 0; i < n_base_units; i++)
          if (lb.units[i].level == 0 && lb.units[i].begin <= m && m < lb.units[i].end) return true;
        return false;
      };
      // Each unfolded chunk: its raw tokens, and its level-0 gists unless a gist segment holds them already. The
      // gists follow the raw tokens, so both are one range (touching ranges of neighbours merge).
      for (int32_t m : sel) {
        GSA_ASSERT(m >= 0 && m < s.n_chunks(), "selected chunk {} of {}", m, s.n_chunks());
        if (m >= n_gist0 || gist_listed(m)) {
          lb.range(s.chunk_raw_begin[m], s.chunk_raw_end[m]);
        } else if (s.chunk_gist_begin[m] == s.chunk_raw_end[m]) {
          lb.range(s.chunk_raw_begin[m], s.chunk_raw_end[m] + g);
        } else {
          lb.range(s.chunk_raw_begin[m], s.chunk_raw_end[m]);
          lb.unit_span(0, m, m + 1);
        }
      }
      if (cfg.gists_all)
        for (int l = 0; l < cfg.levels(); l++) lb.unit_span(l, 0, table_units(base, l));
      lb.finish(base, last);
      lb.append_to(plan);
    }
  }
  if (nb < base.n_blocks()) cpu::cut_gist_table(plan, base.block_q[size_t(nb)]);
  return plan;
}

attn_plan plan_unfold_base(const stream& s, const gsa_config& cfg, const attn_plan& base, int first_row) {
  if (!cfg.gists_all) return base;
  const int nb = base.n_blocks(), n_complete = complete_chunk_count(s);
  std::vector<uint8_t> unfolds(size_t(nb), 0);
  for (int b = first_block_at(base, first_row); b < nb; b++)
    unfolds[size_t(b)] = row_unfolds(s, base.block_q[size_t(b)], n_complete, cfg.local_chunks);
  // An unfolding block with nothing selected: its list plus every gist (plan_unfold with gists_all).
  return plan_unfold(s, cfg, base, std::vector<std::vector<int32_t>>(size_t(nb)), 1, unfolds);
}

int first_block_at(const attn_plan& plan, int row) {
  auto it = std::lower_bound(plan.block_q.begin(), plan.block_q.end() - 1, row);
  return int(it - plan.block_q.begin());
}

attn_plan plan_suffix(const stream& s, const gsa_config& cfg, const attn_plan& base, int ctx_end,
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

attn_plan plan_rows(const attn_plan& plan, int row_begin) {
  const int nb = plan.n_blocks();
  const int first = first_block_at(plan, row_begin);
  attn_plan out = with_table_of(plan, plan.heads);
  if (first == nb && row_begin == plan.block_q.back()) {
    out.block_q = {0};
    out.seg_ptr = {0};
    return out;
  }
  if (first >= nb || plan.block_q[first] != row_begin)
    fail("plan_rows: row {} is not a block boundary of the plan", row_begin);
  for (int b = first; b <= nb; b++) out.block_q.push_back(plan.block_q[b] - row_begin);
  const size_t i0 = size_t(first) * plan.heads;
  const int64_t base = plan.seg_ptr[i0];
  for (size_t i = i0; i < plan.seg_ptr.size(); i++) out.seg_ptr.push_back(plan.seg_ptr[i] - base);
  out.segs.assign(plan.segs.begin() + base, plan.segs.end());
  return out;
}

}  // namespace gsa::gist
