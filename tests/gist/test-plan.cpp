// Plans vs the visibility functor, exactly, for every query: { k in list(block(q), h) : k <= q } must equal
// { k : visible(q, k) } (compress), or the unfolding form with the block's selection (unfold, suffix).
// Plans are compared as sets; no attention kernel runs here.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "core/rng.h"
#include "gist/plan.h"
#include "gist/visibility.h"

using namespace gsa::gist;

namespace {

gsa_config random_cfg(gsa::rng& r) {
  gsa_config c;
  const int L = 1 + int(r.below(3));
  c.chunk.clear();
  for (int l = 0; l < L; l++) c.chunk.push_back(1 + int(r.below(l == 0 ? 4 : 3)));
  c.gists_per_chunk = 1 + int(r.below(2));
  c.local_chunks = int(r.below(3));
  c.sink = int(r.below(4));
  c.gists_all = r.below(2) == 1;
  for (int l = 0; l < L; l++) c.gist_token_ids.push_back(500 + l);
  return c;
}

stream make_stream(int n, const gsa_config& cfg) {
  std::vector<int32_t> raw(n);
  std::iota(raw.begin(), raw.end(), 0);
  return build_stream(raw.data(), n, cfg);
}

// Structure every plan must have: blocks tile [0, n), the validator accepts it, no key twice in a list (the
// sorted expansion strictly ascends), no key after the block.
void check_shape(const gsa::cpu::attn_plan& p, int n, int heads) {
  ASSERT_EQ(p.heads, heads);
  ASSERT_GE(p.block_q.size(), 1u);
  ASSERT_EQ(p.block_q.front(), 0);
  ASSERT_EQ(p.block_q.back(), n);
  ASSERT_EQ(p.seg_ptr.size(), size_t(p.n_blocks()) * heads + 1);
  ASSERT_NO_THROW(gsa::cpu::validate_plan(p, n, n, 0, heads));
  std::vector<int32_t> keys;
  for (int b = 0; b < p.n_blocks(); b++) {
    ASSERT_LT(p.block_q[b], p.block_q[b + 1]);
    for (int h = 0; h < heads; h++) {
      p.list_keys(b, h, keys);
      for (size_t i = 0; i < keys.size(); i++) {
        ASSERT_GE(keys[i], 0);
        ASSERT_LT(keys[i], p.block_q[b + 1]);
        if (i > 0) {
          ASSERT_LT(keys[i - 1], keys[i]);
        }
      }
    }
  }
}

// want(q, k, b, h): the predicate the plan must realise.
template <typename Want>
void check_exact(const gsa::cpu::attn_plan& p, int n, Want want) {
  for (int b = 0; b < p.n_blocks(); b++)
    for (int h = 0; h < p.heads; h++) {
      std::vector<uint8_t> listed(n, 0);
      p.for_each_key(b, h, [&](int32_t k) { listed[k] = 1; });
      for (int q = p.block_q[b]; q < p.block_q[b + 1]; q++)
        for (int k = 0; k < n; k++) {
          const bool got = listed[k] && k <= q;
          ASSERT_EQ(got, want(q, k, b, h)) << "block " << b << " head " << h << " q " << q << " k " << k;
        }
    }
}

}  // namespace

TEST(GistPlan, CompressMatchesVisibility) {
  gsa::rng r(1);
  for (int it = 0; it < 150; it++) {
    gsa_config cfg = random_cfg(r);
    const int n = int(r.below(50));
    stream s = make_stream(n, cfg);
    visibility vis(s, cfg);
    auto p = plan_compress(s, cfg);
    check_shape(p, s.size(), 1);
    check_exact(p, s.size(), [&](int q, int k, int, int) { return vis(q, k); });
  }
}

TEST(GistPlan, CompressBlocksOnTwoLevels) {
  gsa_config cfg;
  cfg.chunk = {2, 2};
  cfg.gist_token_ids = {90, 91};
  stream s = make_stream(9, cfg);
  // r0 r1 a | r2 r3 a | b | r4 r5 a | r6 r7 a | b | r8: the level-1 gists get blocks of their own.
  auto p = plan_compress(s, cfg);
  EXPECT_EQ(p.block_q, (std::vector<int32_t>{0, 3, 6, 7, 10, 13, 14, 15}));
  // b1's list: level-0 gists of its group and the previous group, and the level-1 gists.
  std::vector<int32_t> b1;
  p.list_keys(5, 0, b1);
  EXPECT_EQ(b1, (std::vector<int32_t>{2, 5, 6, 9, 12, 13}));
  // As segments: the level-0 units 0..3 and the level-1 units 0..1, through the gist table.
  ASSERT_EQ(p.seg_end(5, 0) - p.seg_begin(5, 0), 2);
  EXPECT_EQ(p.gist_ptr, (std::vector<int32_t>{0, 4, 6}));
  EXPECT_EQ(p.gist_pos, (std::vector<int32_t>{2, 5, 9, 12, 6, 13}));
  // A split inside a chunk block keeps both halves exact.
  auto ps = plan_compress(s, cfg, 8);
  EXPECT_EQ(ps.block_q, (std::vector<int32_t>{0, 3, 6, 7, 8, 10, 13, 14, 15}));
  visibility vis(s, cfg);
  check_exact(ps, s.size(), [&](int q, int k, int, int) { return vis(q, k); });
}

TEST(GistPlan, UnfoldMatchesVisibility) {
  gsa::rng r(2);
  for (int it = 0; it < 120; it++) {
    gsa_config cfg = random_cfg(r);
    const int n = int(r.below(50));
    const int H = 1 + int(r.below(3));
    stream s = make_stream(n, cfg);
    visibility vis(s, cfg);
    auto base = plan_compress(s, cfg);
    const int nb = base.n_blocks();
    std::vector<uint8_t> unfolds(nb);
    std::vector<std::vector<int32_t>> sel(size_t(nb) * H), sorted_sel(size_t(nb) * H);
    for (int b = 0; b < nb; b++) {
      unfolds[b] = r.below(4) != 0;
      if (!unfolds[b] || s.n_chunks() == 0) continue;
      for (int h = 0; h < H; h++) {
        auto& v = sel[size_t(b) * H + h];
        const int cnt = int(r.below(4));
        for (int i = 0; i < cnt; i++) v.push_back(int32_t(r.below(s.n_chunks())));  // any chunk, dups too
        sorted_sel[size_t(b) * H + h] = v;
        std::sort(sorted_sel[size_t(b) * H + h].begin(), sorted_sel[size_t(b) * H + h].end());
      }
    }
    auto p = plan_unfold(s, cfg, base, sel, H, unfolds);
    check_shape(p, s.size(), H);
    check_exact(p, s.size(), [&](int q, int k, int b, int h) {
      return unfolds[b] ? vis(q, k, sorted_sel[size_t(b) * H + h]) : vis(q, k);
    });
  }
}

// One block per row from first_row on, each with exactly the row's visible keys; earlier blocks untouched. Then
// an unfold plan on the split blocks realises each row's own selection.
TEST(GistPlan, SplitRowsKeepsVisibilityPerRow) {
  gsa::rng r(4);
  for (int it = 0; it < 100; it++) {
    gsa_config cfg = random_cfg(r);
    const int n = int(r.below(50));
    stream s = make_stream(n, cfg);
    visibility vis(s, cfg);
    auto base = plan_compress(s, cfg);
    const int first_row = s.size() == 0 ? 0 : int(r.below(uint64_t(s.size())));
    auto p = plan_split_rows(base, first_row);
    check_shape(p, s.size(), 1);
    check_exact(p, s.size(), [&](int q, int k, int, int) { return vis(q, k); });
    for (int b = 0; b < p.n_blocks(); b++) {
      if (p.block_q[b] >= first_row) {
        ASSERT_EQ(p.block_q[b + 1], p.block_q[b] + 1) << "one row per block from " << first_row;
        p.for_each_key(b, 0, [&](int32_t k) { ASSERT_LE(k, p.block_q[b]); });
      } else {
        ASSERT_NE(std::find(base.block_q.begin(), base.block_q.end(), p.block_q[b + 1]), base.block_q.end())
            << "blocks before first_row are the base's";
      }
    }
    if (s.n_chunks() == 0) continue;
    const int nb = p.n_blocks();
    std::vector<std::vector<int32_t>> sel(static_cast<size_t>(nb));
    for (auto& v : sel) v.push_back(int32_t(r.below(s.n_chunks())));
    auto u = plan_unfold(s, cfg, p, sel, 1, {});
    check_shape(u, s.size(), 1);
    check_exact(u, s.size(), [&](int q, int k, int b, int) { return vis(q, k, sel[size_t(b)]); });
  }
}

// Unfolding every earlier chunk (and keeping all gists) reaches every earlier raw token: full visibility.
TEST(GistPlan, UnfoldAllIsFullCausalOverRaw) {
  gsa_config cfg;
  cfg.chunk = {4, 2};
  cfg.gist_token_ids = {90, 91};
  cfg.local_chunks = 0;
  cfg.sink = 0;
  stream s = make_stream(37, cfg);
  auto base = plan_compress(s, cfg);
  std::vector<std::vector<int32_t>> sel(base.n_blocks());
  for (int b = 0; b < base.n_blocks(); b++)
    for (int m = 0; m < s.n_chunks(); m++) sel[b].push_back(m);
  auto p = plan_unfold(s, cfg, base, sel, 1);
  for (int b = 0; b < p.n_blocks(); b++) {
    if (s.level[p.block_q[b]] >= 1) continue;  // a gist of gists does not read raw tokens to begin with
    std::vector<uint8_t> listed(s.size(), 0);
    p.for_each_key(b, 0, [&](int32_t k) { listed[k] = 1; });
    for (int k = 0; k < p.block_q[b]; k++)
      if (!s.is_gist(k)) {
        EXPECT_TRUE(listed[k]) << "block " << b << " misses raw " << k;
      }
  }
}

TEST(GistPlan, SuffixAndRows) {
  gsa::rng r(3);
  for (int it = 0; it < 80; it++) {
    gsa_config cfg = random_cfg(r);
    const int n = 1 + int(r.below(50));
    const int H = 1 + int(r.below(2));
    stream s = make_stream(n, cfg);
    visibility vis(s, cfg);
    const int ctx_end = int(r.below(s.size() + 1));
    auto base = plan_compress(s, cfg, ctx_end);
    check_shape(base, s.size(), 1);
    const int first = first_block_at(base, ctx_end);
    ASSERT_TRUE(first == base.n_blocks() || base.block_q[first] == ctx_end);
    std::vector<std::vector<int32_t>> sel(size_t(base.n_blocks() - first) * H);
    for (auto& v : sel) {
      for (int i = 0; i < 2 && s.n_chunks() > 0; i++) v.push_back(int32_t(r.below(s.n_chunks())));
      std::sort(v.begin(), v.end());
      v.erase(std::unique(v.begin(), v.end()), v.end());
    }
    auto p = plan_suffix(s, cfg, base, ctx_end, sel, H);
    check_shape(p, s.size(), H);
    check_exact(p, s.size(), [&](int q, int k, int b, int h) {
      if (q < ctx_end) return vis(q, k);
      return vis(q, k, sel[size_t(b - first) * H + h]);
    });
    // The suffix rows alone, rebased: same lists (same segments, same gist table), rows shifted by ctx_end.
    auto rows = plan_rows(p, ctx_end);
    ASSERT_EQ(rows.n_blocks(), p.n_blocks() - first);
    ASSERT_EQ(rows.block_q.back(), s.size() - ctx_end);
    EXPECT_EQ(rows.gist_ptr, p.gist_ptr);
    EXPECT_EQ(rows.gist_pos, p.gist_pos);
    EXPECT_EQ(rows.gists_per_unit, p.gists_per_unit);
    EXPECT_NO_THROW(gsa::cpu::validate_plan(rows, s.size() - ctx_end, s.size(), ctx_end, H));
    std::vector<int32_t> got, want;
    for (int b = 0; b < rows.n_blocks(); b++) {
      EXPECT_EQ(rows.block_q[b] + ctx_end, p.block_q[first + b]);
      for (int h = 0; h < H; h++) {
        rows.list_keys(b, h, got);
        p.list_keys(first + b, h, want);
        EXPECT_EQ(got, want);
      }
    }
  }
}

// The list sizes follow the cost model: per raw block at most sink + c (1 + local) + gists, never O(n); and a
// list is a few segments (sink, local chunks, one per gist level), whatever its length.
TEST(GistPlan, ListSizesStayBoundedInAHierarchy) {
  gsa_config cfg;
  cfg.chunk = {8, 4, 4};
  cfg.gist_token_ids = {90, 91, 92};
  stream s = make_stream(8 * 4 * 4 * 6, cfg);  // 6 top-level units
  auto p = plan_compress(s, cfg);
  size_t longest = 0;
  int64_t most_segs = 0;
  std::vector<int32_t> keys;
  for (int b = 0; b < p.n_blocks(); b++) {
    p.list_keys(b, 0, keys);
    longest = std::max(longest, keys.size());
    most_segs = std::max(most_segs, p.seg_end(b, 0) - p.seg_begin(b, 0));
  }
  // sink 3 + 2 chunks of 8 raw + own gist + 2 groups of 4 level-0 + 2 groups of 4 level-1 + 6 level-2.
  EXPECT_LE(longest, size_t(3 + 16 + 1 + 8 + 8 + 6));
  // sink, previous chunk, own chunk, one segment per level.
  EXPECT_LE(most_segs, 3 + 3);
}
