// Attention plans shared by every backend (the Plan half of FlashInfer's Plan/Run split): which keys each block
// of query rows sees. A plan names key *structures* (ranges of stream positions, ranges of gist units of one
// level) instead of listing key positions, so its memory is O(blocks * segments), never O(Tq * Tk):
// a compress plan at 128k rows with c = 16 is a few segments per chunk; an unfold plan adds one range per
// unfolded chunk.
//
// Layout (all plain arrays, uploaded to a device as they are):
//   block_q  (n_blocks + 1)          query row boundaries: block b = rows [block_q[b], block_q[b+1])
//   seg_ptr  (n_blocks * heads + 1)  CSR offsets into segs; the list of (b, h) is list index b * heads + h
//                                    (heads == 1: one list per block, shared by every KV head)
//   segs                             key segments, see key_seg
//   gist_ptr (levels + 1), gist_pos  the gist table: unit u of level l has its g = gists_per_unit gists at
//                                    stream positions gist_pos[gist_ptr[l] + u] + [0, g)
//
// Masking rule applied by every kernel: query row i (stream position q_offset + i) sees key j iff j belongs to
// one of its block's segments AND j <= q_offset + i. Segments of one list are disjoint (no key twice); their
// order is free (kernels must not assume ascending keys). Builders trim keys after the block's last row.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace gsa {

struct row_unfold;  // backend/row-unfold.h

struct key_seg {
  int32_t level;  // -1: stream positions [begin, end); l >= 0: the gists of level-l units [begin, end)
  int32_t begin, end;
  int32_t pad = 0;  // 16 bytes: one vector load on a GPU
};
static_assert(sizeof(key_seg) == 16);

inline key_seg key_range(int32_t begin, int32_t end) { return {-1, begin, end, 0}; }
inline key_seg gist_units(int level, int32_t begin, int32_t end) { return {int32_t(level), begin, end, 0}; }

struct attn_plan {
  int heads = 1;
  int gists_per_unit = 1;
  std::vector<int32_t> block_q;
  std::vector<int64_t> seg_ptr;
  std::vector<key_seg> segs;
  std::vector<int32_t> gist_ptr;  // empty when no segment names gists
  std::vector<int32_t> gist_pos;
  // Optional per-row unfolding on top of these lists (backend/row-unfold.h): when set, row r also sees its
  // selected chunks' keys. Backends run it directly or expand it (expand_row_unfold); bytes() leaves it out.
  std::shared_ptr<const row_unfold> unfold;

  int n_blocks() const { return int(block_q.size()) - 1; }
  int64_t list_index(int b, int h) const { return int64_t(b) * heads + (heads == 1 ? 0 : h); }
  int64_t seg_begin(int b, int h) const { return seg_ptr[size_t(list_index(b, h))]; }
  int64_t seg_end(int b, int h) const { return seg_ptr[size_t(list_index(b, h)) + 1]; }

  // Number of keys a segment names (before the causal cut).
  int64_t seg_keys(const key_seg& s) const {
    return s.level < 0 ? int64_t(s.end) - s.begin : (int64_t(s.end) - s.begin) * gists_per_unit;
  }
  // Calls f(key) for every key of list (b, h), segment by segment (not sorted across segments).
  template <typename F>
  void for_each_key(int b, int h, F&& f) const {
    for (int64_t i = seg_begin(b, h); i < seg_end(b, h); i++) {
      const key_seg& s = segs[size_t(i)];
      if (s.level < 0) {
        for (int32_t j = s.begin; j < s.end; j++) f(j);
      } else {
        const int32_t* base = gist_pos.data() + gist_ptr[size_t(s.level)];
        for (int32_t u = s.begin; u < s.end; u++)
          for (int r = 0; r < gists_per_unit; r++) f(base[u] + r);
      }
    }
  }
  // The keys of list (b, h), ascending (overwrites out).
  void list_keys(int b, int h, std::vector<int32_t>& out) const {
    out.clear();
    for_each_key(b, h, [&](int32_t j) { out.push_back(j); });
    std::sort(out.begin(), out.end());
  }
  // Bytes the plan holds (what `gsa bench attention --json` reports as plan_bytes).
  size_t bytes() const {
    return block_q.size() * sizeof(int32_t) + seg_ptr.size() * sizeof(int64_t) + segs.size() * sizeof(key_seg) +
           (gist_ptr.size() + gist_pos.size()) * sizeof(int32_t);
  }
};

}  // namespace gsa
