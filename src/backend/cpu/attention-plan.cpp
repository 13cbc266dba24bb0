// Attention plans on the host: the causal plan builder, the plan validator, list expansion for the kernels and
// the work measures (see attention.h; the layout is backend/attn-plan.h). Everything here is O(segments) or
// O(listed keys), never O(Tq * Tk).
#include <omp.h>

#include <algorithm>
#include <string>

#include "backend/cpu/attention.h"
#include "core/error.h"

namespace gsa::cpu {

namespace {

int gist_levels(const attn_plan& p) { return p.gist_ptr.empty() ? 0 : int(p.gist_ptr.size()) - 1; }
int64_t level_units(const attn_plan& p, int l) { return int64_t(p.gist_ptr[l + 1]) - p.gist_ptr[l]; }
const int32_t* level_pos(const attn_plan& p, int l) { return p.gist_pos.data() + p.gist_ptr[l]; }

// First and last key of a non-empty segment of a valid plan (gist positions ascend per level).
int64_t seg_first(const attn_plan& p, const key_seg& s) {
  return s.level < 0 ? s.begin : level_pos(p, s.level)[s.begin];
}
int64_t seg_last(const attn_plan& p, const key_seg& s) {
  return s.level < 0 ? int64_t(s.end) - 1 : int64_t(level_pos(p, s.level)[s.end - 1]) + p.gists_per_unit - 1;
}

// Keys of segment s at or before pos.
int64_t seg_keys_upto(const attn_plan& p, const key_seg& s, int64_t pos) {
  if (s.end <= s.begin) return 0;
  if (s.level < 0) return std::clamp<int64_t>(pos - s.begin + 1, 0, int64_t(s.end) - s.begin);
  const int32_t* base = level_pos(p, s.level);
  const int64_t n = std::upper_bound(base + s.begin, base + s.end, pos) - (base + s.begin);
  if (n == 0) return 0;
  return (n - 1) * p.gists_per_unit + std::min<int64_t>(p.gists_per_unit, pos - base[s.begin + n - 1] + 1);
}

// Checks list l (segments and keys) of a plan whose structure and gist table are already valid. Returns "" or
// what is wrong. seen: a zeroed bitmap over [0, Tk), left zeroed.
std::string check_list(const attn_plan& p, size_t l, int Tk, int64_t last_pos, std::vector<uint64_t>& seen) {
  const int b = int(l / p.heads), h = int(l % p.heads);
  const int levels = gist_levels(p);
  for (int64_t i = p.seg_ptr[l]; i < p.seg_ptr[l + 1]; i++) {
    const key_seg& s = p.segs[size_t(i)];
    if (s.level < -1)
      return fmt::format("block {} head {} segment {} has level {}: -1 (stream positions) or a gist level", b, h,
                         i, s.level);
    if (s.level >= levels)
      return fmt::format("block {} head {} segment {} names gist level {} but the gist table has {} levels", b, h, i,
                         s.level, levels);
    if (s.end < s.begin)
      return fmt::format("block {} head {} segment {} is [{}, {}): begin must not pass end", b, h, i, s.begin, s.end);
    if (s.end == s.begin) continue;
    if (s.level >= 0 && (s.begin < 0 || s.end > level_units(p, s.level)))
      return fmt::format("block {} head {} segment {} names gist units [{}, {}) of level {} outside the table's {} "
                         "units", b, h, i, s.begin, s.end, s.level, level_units(p, s.level));
    const int64_t first = seg_first(p, s), last = seg_last(p, s);
    if (first < 0 || first >= Tk)
      return fmt::format("block {} head {} lists key {} outside [0, Tk = {})", b, h, first, Tk);
    if (last >= Tk) return fmt::format("block {} head {} lists key {} outside [0, Tk = {})", b, h, last, Tk);
    // A key after the block's last query can never be seen: listing it signals a bug in the plan builder.
    if (last > last_pos)
      return fmt::format("block {} head {} lists key {} after its last query position {}; such a key is never "
                         "visible", b, h, last, last_pos);
  }
  std::string dup;
  p.for_each_key(b, h, [&](int32_t j) {
    uint64_t& w = seen[size_t(j) >> 6];
    const uint64_t bit = uint64_t(1) << (j & 63);
    if ((w & bit) && dup.empty())
      dup = fmt::format("block {} head {} lists key {} twice: segments of a list must be disjoint", b, h, j);
    w |= bit;
  });
  p.for_each_key(b, h, [&](int32_t j) { seen[size_t(j) >> 6] = 0; });
  return dup;
}

}  // namespace

int64_t attended_pairs(const attn_plan& plan, int n_kv_heads) {
  int64_t pairs = 0;
  for (int b = 0; b < plan.n_blocks(); b++) {
    const int64_t rows = plan.block_q[b + 1] - plan.block_q[b];
    for (int h = 0; h < plan.heads; h++)
      for (int64_t i = plan.seg_begin(b, h); i < plan.seg_end(b, h); i++)
        pairs += rows * std::max<int64_t>(0, plan.seg_keys(plan.segs[size_t(i)]));
  }
  return plan.heads == 1 ? pairs * n_kv_heads : pairs;
}

int64_t attended_pairs(const attn_plan& plan, int n_kv_heads, int q_offset) {
  int64_t pairs = 0;
  for (int b = 0; b < plan.n_blocks(); b++) {
    const int r0 = plan.block_q[b], r1 = plan.block_q[b + 1];
    if (r0 == r1) continue;
    for (int h = 0; h < plan.heads; h++)
      for (int64_t i = plan.seg_begin(b, h); i < plan.seg_end(b, h); i++) {
        const key_seg& s = plan.segs[size_t(i)];
        if (s.end <= s.begin) continue;
        if (seg_last(plan, s) <= int64_t(q_offset) + r0) {  // every row sees the whole segment
          pairs += int64_t(r1 - r0) * plan.seg_keys(s);
          continue;
        }
        for (int r = r0; r < r1; r++) pairs += seg_keys_upto(plan, s, int64_t(q_offset) + r);
      }
  }
  return plan.heads == 1 ? pairs * n_kv_heads : pairs;
}

attn_plan plan_causal(int Tq, int q_offset, int block) {
  if (block <= 0) fail("plan_causal: block size must be positive (got {})", block);
  if (Tq < 0 || q_offset < 0) fail("plan_causal: Tq ({}) and q_offset ({}) must be >= 0", Tq, q_offset);
  attn_plan plan;
  plan.heads = 1;
  plan.block_q.push_back(0);
  plan.seg_ptr.push_back(0);
  for (int r0 = 0; r0 < Tq; r0 += block) {
    const int r1 = std::min(Tq, r0 + block);
    plan.block_q.push_back(r1);
    // Every key up to the block's last query; the causal rule cuts the rest row by row.
    plan.segs.push_back(key_range(0, q_offset + r1));
    plan.seg_ptr.push_back(int64_t(plan.segs.size()));
  }
  return plan;
}

attn_plan plan_blocks(const attn_plan& plan, int b0, int b1) {  // plan at q_offset 0: rows are stream positions
  if (b0 < 0 || b1 <= b0 || b1 > plan.n_blocks())
    fail("plan_blocks: blocks [{}, {}) of a plan of {}", b0, b1, plan.n_blocks());
  if (plan.unfold) fail("plan_blocks: a plan with per-row unfolding cannot be cut into blocks");
  attn_plan out;
  out.heads = plan.heads;
  out.gists_per_unit = plan.gists_per_unit;
  out.gist_ptr = plan.gist_ptr;
  out.gist_pos = plan.gist_pos;
  const int32_t r0 = plan.block_q[size_t(b0)], r1 = plan.block_q[size_t(b1)];
  for (int b = b0; b <= b1; b++) out.block_q.push_back(plan.block_q[size_t(b)] - r0);
  // No segment of these blocks names a unit whose gists are not all before r1.
  cut_gist_table(out, r1);
  const int64_t s0 = plan.seg_begin(b0, 0), s1 = plan.seg_ptr[size_t(plan.list_index(b1 - 1, plan.heads - 1)) + 1];
  out.segs.assign(plan.segs.begin() + s0, plan.segs.begin() + s1);
  const size_t l0 = size_t(plan.list_index(b0, 0)), l1 = size_t(plan.list_index(b1 - 1, plan.heads - 1)) + 1;
  for (size_t i = l0; i <= l1; i++) out.seg_ptr.push_back(plan.seg_ptr[i] - s0);
  return out;
}

void cut_gist_table(attn_plan& plan, int64_t end) {
  if (plan.gist_ptr.empty()) return;
  std::vector<int32_t> ptr(1, 0), pos;
  for (int l = 0; l + 1 < int(plan.gist_ptr.size()); l++) {
    for (int32_t u = plan.gist_ptr[size_t(l)]; u < plan.gist_ptr[size_t(l) + 1]; u++)
      if (int64_t(plan.gist_pos[size_t(u)]) + plan.gists_per_unit <= end) pos.push_back(plan.gist_pos[size_t(u)]);
    ptr.push_back(int32_t(pos.size()));
  }
  plan.gist_ptr = std::move(ptr);
  plan.gist_pos = std::move(pos);
}

void plan_push_keys(attn_plan& plan, const int32_t* keys, size_t n) {
  for (size_t i = 0; i < n;) {
    size_t j = i + 1;
    while (j < n && keys[j] == keys[j - 1] + 1) j++;
    plan.segs.push_back(key_range(keys[i], keys[j - 1] + 1));
    i = j;
  }
  plan.seg_ptr.push_back(int64_t(plan.segs.size()));
}

void validate_plan_layout(const attn_plan& plan, int Tq, int Tk, int q_offset, int Hkv) {
  if (Tq < 0 || Tk < 0 || q_offset < 0)
    fail("attention plan: sizes must be >= 0 (Tq={}, Tk={}, q_offset={})", Tq, Tk, q_offset);
  if (Hkv <= 0) fail("attention plan: Hkv must be positive (got {})", Hkv);
  if (plan.heads != 1 && plan.heads != Hkv)
    fail("attention plan: heads is {}, must be 1 (shared lists) or Hkv = {} (one list per KV head)", plan.heads,
         Hkv);
  if (plan.gists_per_unit < 1) fail("attention plan: gists_per_unit is {}, must be >= 1", plan.gists_per_unit);
  if (plan.block_q.empty()) fail("attention plan: block_q is empty; it needs n_blocks + 1 boundaries (at least [0])");
  const int nb = plan.n_blocks();
  if (plan.block_q[0] != 0) fail("attention plan: block_q[0] is {}, must be 0", plan.block_q[0]);
  if (plan.block_q[nb] != Tq)
    fail("attention plan: block_q ends at {} but there are Tq = {} query rows", plan.block_q[nb], Tq);
  for (int b = 0; b < nb; b++)
    if (plan.block_q[b + 1] < plan.block_q[b])
      fail("attention plan: block {} has rows [{}, {}): block_q must be non-decreasing", b, plan.block_q[b],
           plan.block_q[b + 1]);

  const size_t n_lists = size_t(nb) * plan.heads;
  if (plan.seg_ptr.size() != n_lists + 1)
    fail("attention plan: seg_ptr has {} entries, expected n_blocks * heads + 1 = {}", plan.seg_ptr.size(),
         n_lists + 1);
  if (plan.seg_ptr[0] != 0) fail("attention plan: seg_ptr[0] is {}, must be 0", plan.seg_ptr[0]);
  if (plan.seg_ptr[n_lists] != int64_t(plan.segs.size()))
    fail("attention plan: seg_ptr ends at {} but segs has {} entries", plan.seg_ptr[n_lists], plan.segs.size());
  // All offsets first, so that reading any list below stays inside segs.
  for (size_t l = 0; l < n_lists; l++)
    if (plan.seg_ptr[l + 1] < plan.seg_ptr[l])
      fail("attention plan: list of block {} head {} has seg_ptr [{}, {}): seg_ptr must be non-decreasing",
           l / plan.heads, l % plan.heads, plan.seg_ptr[l], plan.seg_ptr[l + 1]);
}

void validate_plan(const attn_plan& plan, int Tq, int Tk, int q_offset, int Hkv) {
  if (plan.unfold)
    fail("attention plan: it carries a row unfold, which these kernels do not read; run it through a backend "
         "(backend::prepare_plan expands it) or expand it with expand_row_unfold");
  validate_plan_layout(plan, Tq, Tk, q_offset, Hkv);
  const int nb = plan.n_blocks();
  const size_t n_lists = size_t(nb) * plan.heads;

  // The gist table: per level ascending, units g apart (so a gist segment's keys ascend and its bounds are O(1)).
  if (plan.gist_ptr.empty()) {
    if (!plan.gist_pos.empty())
      fail("attention plan: gist_pos has {} entries but gist_ptr is empty", plan.gist_pos.size());
  } else {
    if (plan.gist_ptr[0] != 0) fail("attention plan: gist_ptr[0] is {}, must be 0", plan.gist_ptr[0]);
    if (plan.gist_ptr.back() != int64_t(plan.gist_pos.size()))
      fail("attention plan: gist_ptr ends at {} but gist_pos has {} entries", plan.gist_ptr.back(),
           plan.gist_pos.size());
    for (int l = 0; l < gist_levels(plan); l++) {
      if (plan.gist_ptr[l + 1] < plan.gist_ptr[l])
        fail("attention plan: gist_ptr must be non-decreasing (level {}: [{}, {}))", l, plan.gist_ptr[l],
             plan.gist_ptr[l + 1]);
      const int32_t* pos = level_pos(plan, l);
      for (int64_t u = 0; u < level_units(plan, l); u++)
        if (pos[u] < 0 || (u > 0 && int64_t(pos[u]) < int64_t(pos[u - 1]) + plan.gists_per_unit))
          fail("attention plan: gist table level {} unit {} at position {}: positions must be >= 0 and ascend by at "
               "least gists_per_unit = {}", l, u, pos[u], plan.gists_per_unit);
      // The CUDA backend checks the same (every unit's gists inside the keys).
      if (level_units(plan, l) > 0 && int64_t(pos[level_units(plan, l) - 1]) + plan.gists_per_unit > Tk)
        fail("attention plan: gist table level {} puts its last unit's gists at [{}, {}), outside [0, Tk = {})", l,
             pos[level_units(plan, l) - 1], int64_t(pos[level_units(plan, l) - 1]) + plan.gists_per_unit, Tk);
    }
  }

  // Segments and keys, list by list (in parallel for big plans; the first bad list is reported).
  size_t bad = n_lists;
  const bool big = plan.segs.size() > 4096;
#pragma omp parallel if (big) reduction(min : bad)
  {
    std::vector<uint64_t> seen((size_t(Tk) + 63) / 64, 0);
#pragma omp for schedule(dynamic, 64)
    for (size_t l = 0; l < n_lists; l++) {
      const int64_t last_pos = int64_t(q_offset) + plan.block_q[l / plan.heads + 1] - 1;
      if (l < bad && !check_list(plan, l, Tk, last_pos, seen).empty()) bad = l;
    }
  }
  if (bad < n_lists) {
    std::vector<uint64_t> seen((size_t(Tk) + 63) / 64, 0);
    const int64_t last_pos = int64_t(q_offset) + plan.block_q[bad / plan.heads + 1] - 1;
    fail("attention plan: {}", check_list(plan, bad, Tk, last_pos, seen));
  }
}

void expand_list(const attn_plan& plan, int b, int h, std::vector<int32_t>& keys, std::vector<int32_t>& tmp) {
  keys.clear();
  plan.for_each_key(b, h, [&](int32_t j) { keys.push_back(j); });
  // Natural merge sort: the expansion is a few ascending runs (each segment ascends); merge them pairwise.
  const size_t n = keys.size();
  size_t runs = 1;
  for (size_t i = 1; i < n; i++) runs += keys[i] < keys[i - 1];
  if (runs <= 1) return;
  std::vector<size_t> bound;  // run starts, then n
  bound.reserve(runs + 1);
  bound.push_back(0);
  for (size_t i = 1; i < n; i++)
    if (keys[i] < keys[i - 1]) bound.push_back(i);
  bound.push_back(n);
  tmp.resize(n);
  while (bound.size() > 2) {
    size_t w = 0;
    std::vector<size_t> next;
    next.reserve(bound.size() / 2 + 2);
    for (size_t r = 0; r + 1 < bound.size(); r += 2) {
      next.push_back(bound[r]);
      const size_t mid = bound[r + 1], end = r + 2 < bound.size() ? bound[r + 2] : mid;
      w = size_t(std::merge(keys.begin() + bound[r], keys.begin() + mid, keys.begin() + mid, keys.begin() + end,
                            tmp.begin() + bound[r]) - tmp.begin());
    }
    next.push_back(n);
    GSA_ASSERT(w == n, "merge wrote {} of {} keys", w, n);
    keys.swap(tmp);
    bound.swap(next);
  }
}

}  // namespace gsa::cpu
