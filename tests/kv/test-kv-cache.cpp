// The paged KV cache: rows read back through the page table equal what was appended, in every tier; pages
// leave memory exactly when they leave the window (sink pages never); page summaries equal a naive min/max/mean;
// byte accounting adds up.
#include <cmath>

#include "core/error.h"
#include "kv/kv-cache.h"
#include "test-util.h"

namespace gsa::kv {
namespace {

cache_layout small_layout(page_tier tier) {
  cache_layout l;
  l.n_layers = 2;
  l.n_kv_heads = 2;
  l.head_dim = 4;
  l.page_size = 3;
  l.gist_levels = 2;
  l.sink = 2;
  l.window_pages = 1;
  l.tier = tier;
  l.page_summaries = true;
  return l;
}

TEST(KvCache, RowsReadBackInEveryTier) {
  for (page_tier tier : {page_tier::memory, page_tier::file, page_tier::drop}) {
    SCOPED_TRACE(page_tier_name(tier));
    cache_layout lay = small_layout(tier);
    kv_cache c(lay);
    rng r(3);
    const int n = 20, row = 8;
    auto k = test::randn(size_t(n) * row * 2, r), v = test::randn(size_t(n) * row * 2, r);
    auto gk = test::randn(5 * row, r), gv = test::randn(5 * row, r);
    for (int t = 0; t < n; t++)
      for (int l = 0; l < 2; l++) c.append_raw(l, &k[(size_t(t) * 2 + l) * row], &v[(size_t(t) * 2 + l) * row]);
    for (int i = 0; i < 5; i++) c.append_gist(1, i % 2, &gk[size_t(i) * row], &gv[size_t(i) * row]);
    EXPECT_EQ(c.raw_count(0), n);
    EXPECT_EQ(c.complete_pages(0), 6);
    EXPECT_EQ(c.gist_count(1, 0), 3);
    EXPECT_EQ(c.gist_count(1, 1), 2);
    for (int t = 0; t < n; t++) {
      const int p = t / 3;
      // Window after 6 complete pages: pages 4, 5 (window + the page whose gists close it) and 6 (incomplete).
      const bool resident = p == 0 || p >= 4;
      if (tier != page_tier::memory && !resident) {
        EXPECT_EQ(c.page_state(0, p), tier) << p;
        if (tier == page_tier::drop) continue;
      } else {
        EXPECT_EQ(c.page_state(0, p), page_tier::memory) << p;
      }
      for (int l = 0; l < 2; l++)
        for (int h = 0; h < 2; h++)
          for (int d = 0; d < 4; d++) {
            EXPECT_EQ(c.key(l, {-1, t}, h)[d], k[(size_t(t) * 2 + l) * row + h * 4 + d]);
            EXPECT_EQ(c.value(l, {-1, t}, h)[d], v[(size_t(t) * 2 + l) * row + h * 4 + d]);
          }
    }
    // Gists of level 1 are rows 1, 3 of what was appended; the store is contiguous.
    EXPECT_EQ(c.key(1, {1, 1}, 1)[2], gk[3 * row + 4 + 2]);
    EXPECT_EQ(c.gist_keys(1, 0)[row * 2], gk[4 * row]);
    const cache_bytes b = c.bytes();
    const int64_t page = 2 * 3 * row * 4;
    const int64_t pages = 2 * 7;
    EXPECT_EQ(b.resident + b.file + b.dropped, pages * page + 5 * 2 * row * 4 + 3 * 2 * 6 * row * 4);
    if (tier == page_tier::memory) {
      EXPECT_EQ(b.file + b.dropped, 0);
    } else {
      EXPECT_EQ(tier == page_tier::file ? b.file : b.dropped, 2 * 3 * page);
    }
    // Summaries of page 2 of layer 1, head 1.
    for (int d = 0; d < 4; d++) {
      float mn = INFINITY, mx = -INFINITY, me = 0;
      for (int t2 = 6; t2 < 9; t2++) {
        const float x = k[(size_t(t2) * 2 + 1) * row + 4 + d];
        mn = std::min(mn, x), mx = std::max(mx, x), me += x / 3;
      }
      const size_t off = (2 * 2 + 1) * 4 + d;
      EXPECT_EQ(c.page_kmin(1)[off], mn);
      EXPECT_EQ(c.page_kmax(1)[off], mx);
      EXPECT_NEAR(c.page_kmean(1)[off], me, 1e-6);
    }
  }
}

TEST(KvCache, BadLayoutsAndNamesAreErrors) {
  cache_layout l = small_layout(page_tier::memory);
  l.page_size = 0;
  EXPECT_THROW(kv_cache{l}, gsa::error);
  EXPECT_THROW(page_tier_from_name("disk"), gsa::error);
  EXPECT_EQ(page_tier_from_name("file"), page_tier::file);
}

}  // namespace
}  // namespace gsa::kv
