// The KV cache's tail cut and spill (kv-cache.h truncate, spill / restore): a cache cut at n raw rows and then
// given more rows is indistinguishable from one that only ever received the kept rows and the same new ones
// (rows, page states, summaries, scoring tiles, bytes), in every tier and in pool mode; the file's slots of cut
// pages are reused; a spilled cache holds nothing resident and comes back equal to one never spilled.
#include <algorithm>
#include <cmath>
#include <string>

#include "backend/backend.h"
#include "core/error.h"
#include "kv/kv-cache.h"
#include "test-util.h"

namespace gsa::kv {
namespace {

constexpr int kLayers = 2, kHeads = 2, kDim = 4, kRow = kHeads * kDim, kPage = 3;

cache_layout layout(page_tier tier) {
  cache_layout l;
  l.n_layers = kLayers;
  l.n_kv_heads = kHeads;
  l.head_dim = kDim;
  l.page_size = kPage;
  l.gist_levels = 2;
  l.sink = 2;
  l.window_pages = 1;
  l.tier = tier;
  l.page_summaries = true;
  return l;
}

// Rows by index: a data set per "version", so rows appended after a cut differ from the ones cut away.
struct rows {
  std::vector<float> raw, gist;  // (index, layer, K|V, kRow)
  explicit rows(uint64_t seed) {
    rng r(seed);
    raw = test::randn(size_t(64) * kLayers * 2 * kRow, r);
    gist = test::randn(size_t(64) * kLayers * 2 * kRow, r);
  }
  const float* at(const std::vector<float>& v, int i, int layer, int kv) const {
    return v.data() + ((size_t(i) * kLayers + layer) * 2 + kv) * kRow;
  }
};

// Level-0 gist after every chunk of kPage raw rows, a level-1 gist after every second chunk (the stream order).
std::vector<int64_t> gists_at(int n_raw) { return {n_raw / kPage, n_raw / (2 * kPage)}; }

// Appends raw rows [from, to) and the gists after each completed chunk; rows below `fresh` (raw index) and gists
// below `fresh`'s counts come from a, the rest from b.
void feed(kv_cache& c, int from, int to, const rows& a, const rows& b, int fresh) {
  const auto keep = gists_at(fresh);
  for (int t = from; t < to; t++) {
    const rows& src = t < fresh ? a : b;
    for (int l = 0; l < kLayers; l++) c.append_raw(l, src.at(src.raw, t, l, 0), src.at(src.raw, t, l, 1));
    if ((t + 1) % kPage != 0) continue;
    for (int lv = 0; lv < 2; lv++) {
      if (lv == 1 && (t + 1) % (2 * kPage) != 0) break;
      const int gi = c.gist_count(0, lv), idx = gi + 32 * lv;
      const rows& gs = gi < keep[size_t(lv)] ? a : b;
      for (int l = 0; l < kLayers; l++) c.append_gist(l, lv, gs.at(gs.gist, idx, l, 0), gs.at(gs.gist, idx, l, 1));
    }
  }
}

void expect_same(const kv_cache& a, const kv_cache& b) {
  for (int l = 0; l < kLayers; l++) {
    SCOPED_TRACE("layer " + std::to_string(l));
    ASSERT_EQ(a.raw_count(l), b.raw_count(l));
    const int pages = (a.raw_count(l) + kPage - 1) / kPage;
    for (int p = 0; p < pages; p++) EXPECT_EQ(a.page_state(l, p), b.page_state(l, p)) << "page " << p;
    for (int t = 0; t < a.raw_count(l); t++) {
      if (a.page_state(l, t / kPage) == page_tier::drop) continue;
      for (int h = 0; h < kHeads; h++)
        for (int d = 0; d < kDim; d++) {
          ASSERT_EQ(a.key(l, {-1, t}, h)[d], b.key(l, {-1, t}, h)[d]) << "raw " << t;
          ASSERT_EQ(a.value(l, {-1, t}, h)[d], b.value(l, {-1, t}, h)[d]) << "raw " << t;
        }
    }
    for (int lv = 0; lv < 2; lv++) {
      const int n = a.gist_count(l, lv);
      ASSERT_EQ(n, b.gist_count(l, lv));
      EXPECT_TRUE(std::equal(a.gist_keys(l, lv), a.gist_keys(l, lv) + size_t(n) * kRow, b.gist_keys(l, lv)));
      for (int i = 0; i < n; i++)
        for (int h = 0; h < kHeads; h++)
          EXPECT_TRUE(std::equal(a.value(l, {int8_t(lv), i}, h), a.value(l, {int8_t(lv), i}, h) + kDim,
                                 b.value(l, {int8_t(lv), i}, h)));
      const size_t tile_floats = size_t((n + gist_tile - 1) / gist_tile) * kDim * gist_tile;
      for (int h = 0; h < kHeads; h++)  // zero lanes past n included
        EXPECT_TRUE(std::equal(a.gist_key_tiles(l, lv, h), a.gist_key_tiles(l, lv, h) + tile_floats,
                               b.gist_key_tiles(l, lv, h)));
    }
    const size_t sf = size_t(a.complete_pages(l)) * kRow;
    EXPECT_TRUE(std::equal(a.page_kmin(l), a.page_kmin(l) + sf, b.page_kmin(l)));
    EXPECT_TRUE(std::equal(a.page_kmax(l), a.page_kmax(l) + sf, b.page_kmax(l)));
    EXPECT_TRUE(std::equal(a.page_kmean(l), a.page_kmean(l) + sf, b.page_kmean(l)));
  }
  const cache_bytes x = a.bytes(), y = b.bytes();
  EXPECT_EQ(x.resident, y.resident);
  EXPECT_EQ(x.file, y.file);
  EXPECT_EQ(x.dropped, y.dropped);
  EXPECT_EQ(x.scoring, y.scoring);
}

TEST(KvCut, TruncateEqualsACacheThatNeverHadTheTail) {
  const rows old_rows(1), new_rows(2);
  const int N = 20, M = 29;
  for (page_tier tier : {page_tier::memory, page_tier::file, page_tier::drop}) {
    for (int n : {0, 1, 2, 3, 5, 7, 12, 17, 18, 19, 20}) {
      SCOPED_TRACE(std::string(page_tier_name(tier)) + " cut at " + std::to_string(n));
      kv_cache a(layout(tier)), b(layout(tier));
      feed(a, 0, N, old_rows, old_rows, N);
      if (tier == page_tier::drop) {
        // Pages 1..3 left the window and were freed at 20 rows; a cut that needs one of them back cannot be made.
        const bool can = n <= 3 || n >= 18;
        EXPECT_EQ(a.truncatable(n), can);
        if (!can) {
          EXPECT_THROW(a.truncate(n, gists_at(n)), gsa::error);
          continue;
        }
      } else {
        EXPECT_TRUE(a.truncatable(n));
      }
      a.truncate(n, gists_at(n));
      feed(b, 0, n, old_rows, new_rows, n);
      expect_same(a, b);
      feed(a, n, M, old_rows, new_rows, n);
      feed(b, n, M, old_rows, new_rows, n);
      expect_same(a, b);
    }
  }
}

TEST(KvCut, BadCutsAreErrors) {
  const rows r(1);
  kv_cache c(layout(page_tier::memory));
  feed(c, 0, 10, r, r, 10);
  EXPECT_FALSE(c.truncatable(11));
  EXPECT_FALSE(c.truncatable(-1));
  EXPECT_THROW(c.truncate(11, gists_at(10)), gsa::error);  // more raw rows than held
  EXPECT_THROW(c.truncate(6, {2}), gsa::error);            // one count for two levels
  EXPECT_THROW(c.truncate(6, {4, 0}), gsa::error);         // more gists than held (3)
  EXPECT_THROW(c.truncate(6, {-1, 0}), gsa::error);
  EXPECT_EQ(c.raw_count(0), 10);  // nothing changed
  c.truncate(6, {2, 1});
  EXPECT_EQ(c.raw_count(1), 6);
}

TEST(KvCut, FileSlotsOfCutPagesAreReused) {
  const rows a(1), b(2);
  kv_cache c(layout(page_tier::file));
  feed(c, 0, 30, a, a, 30);
  const int64_t used = c.file_used();
  EXPECT_GT(used, 0);
  for (int cycle = 0; cycle < 5; cycle++) {  // a conversation cut back and continued again and again
    c.truncate(6, gists_at(6));
    feed(c, 6, 30, a, cycle % 2 ? a : b, 6);
    EXPECT_EQ(c.file_used(), used) << cycle;
  }
}

TEST(KvCut, SpillAndRestoreInEveryTier) {
  const rows a(3), b(4);
  for (page_tier tier : {page_tier::memory, page_tier::file, page_tier::drop}) {
    SCOPED_TRACE(page_tier_name(tier));
    kv_cache c(layout(tier)), ref(layout(tier));
    feed(c, 0, 20, a, a, 20);
    feed(ref, 0, 20, a, a, 20);
    const int64_t used = c.file_used();
    const cache_bytes before = c.bytes();
    c.spill();
    EXPECT_TRUE(c.spilled());
    const cache_bytes spilled = c.bytes();
    EXPECT_EQ(spilled.resident, 0);
    EXPECT_EQ(spilled.scoring, 0);
    EXPECT_EQ(spilled.file, before.resident + before.file);
    EXPECT_EQ(spilled.dropped, before.dropped);
    EXPECT_EQ(c.truncatable(18), ref.truncatable(18));       // what it could cut once restored
    EXPECT_THROW(c.truncate(18, gists_at(18)), gsa::error);  // but not before
    c.restore();
    EXPECT_FALSE(c.spilled());
    EXPECT_EQ(c.file_used(), used);  // the spill's part of the file is given back
    expect_same(c, ref);
    feed(c, 20, 27, a, b, 20);
    feed(ref, 20, 27, a, b, 20);
    expect_same(c, ref);
    // Twice more, with a cut in between: the file's bookkeeping holds across spills.
    c.spill();
    c.restore();
    if (c.truncatable(18)) {
      c.truncate(18, gists_at(18));
      ref.truncate(18, gists_at(18));
      c.spill();
      c.restore();
      expect_same(c, ref);
    }
  }
}

// Pool mode (rows on a backend; the CPU backend stands in for a GPU): a cut at a page boundary then new rows
// reads back as a pool that only had the kept rows; frames of cut rows are reused.
TEST(KvCut, PoolModeTruncate) {
  cache_layout lay = layout(page_tier::memory);
  lay.rows_on = &cpu_backend();
  const rows a(5), b(6);
  // The stream order of rows: raw t, then the gists after its chunk.
  auto addrs = [](int from, int to) {
    std::vector<std::pair<kv_addr, int>> out;  // address, raw index or gist index
    for (int t = from; t < to; t++) {
      out.push_back({{-1, t}, t});
      if ((t + 1) % kPage) continue;
      out.push_back({{0, (t + 1) / kPage - 1}, (t + 1) / kPage - 1});
      if ((t + 1) % (2 * kPage) == 0) out.push_back({{1, (t + 1) / (2 * kPage) - 1}, (t + 1) / (2 * kPage) - 1 + 32});
    }
    return out;
  };
  auto feed_pool = [&](kv_cache& c, int from, int to, const rows& src) {
    const auto at = addrs(from, to);
    std::vector<kv_addr> ad;
    for (const auto& x : at) ad.push_back(x.first);
    for (int l = 0; l < kLayers; l++) {
      Tensor k({int64_t(at.size()), kHeads, kDim}), v({int64_t(at.size()), kHeads, kDim});
      for (size_t i = 0; i < at.size(); i++) {
        const std::vector<float>& set = at[i].first.level < 0 ? src.raw : src.gist;
        std::copy_n(src.at(set, at[i].second, l, 0), kRow, k.f32() + i * kRow);
        std::copy_n(src.at(set, at[i].second, l, 1), kRow, v.f32() + i * kRow);
      }
      c.append_rows(l, ad, k, v);
    }
  };
  kv_cache c(lay), ref(lay);
  feed_pool(c, 0, 21, a);
  feed_pool(ref, 0, 9, a);
  EXPECT_FALSE(c.truncatable(10));  // page 3 is complete: its keys (for the summary) left the host
  EXPECT_THROW(c.truncate(10, gists_at(10)), gsa::error);
  ASSERT_TRUE(c.truncatable(9));
  c.truncate(9, gists_at(9));
  feed_pool(c, 9, 17, b);
  feed_pool(ref, 9, 17, b);
  for (int l = 0; l < kLayers; l++) {
    EXPECT_EQ(c.raw_count(l), 17);
    for (const auto& x : addrs(0, 17)) {
      const float* pa = c.pool(l).f32() + c.pool_row(l, x.first) * kRow;
      const float* pr = ref.pool(l).f32() + ref.pool_row(l, x.first) * kRow;
      EXPECT_TRUE(std::equal(pa, pa + kRow, pr)) << int(x.first.level) << " " << x.first.index;  // K
      EXPECT_TRUE(std::equal(pa + kPage * kRow, pa + (kPage + 1) * kRow, pr + kPage * kRow));    // V
      EXPECT_EQ(c.pool_row(l, x.first), ref.pool_row(l, x.first));  // the same frames: cut ones were reused
    }
    for (int lv = 0; lv < 2; lv++)
      for (int h = 0; h < kHeads; h++) {
        const size_t tf = size_t((c.gist_count(l, lv) + gist_tile - 1) / gist_tile) * kDim * gist_tile;
        EXPECT_TRUE(
            std::equal(c.gist_key_tiles(l, lv, h), c.gist_key_tiles(l, lv, h) + tf, ref.gist_key_tiles(l, lv, h)));
      }
    const size_t sf = size_t(c.complete_pages(l)) * kRow;
    EXPECT_TRUE(std::equal(c.page_kmin(l), c.page_kmin(l) + sf, ref.page_kmin(l)));
  }
  EXPECT_THROW(c.spill(), gsa::error);  // spilling is for host caches
}

}  // namespace
}  // namespace gsa::kv
