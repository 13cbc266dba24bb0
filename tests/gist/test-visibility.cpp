// The gist mask spelled out on small hand-checked streams, its reduction to DESIGN 1.2 with one level, and
// a coverage property of the hierarchy (every earlier chunk reaches a raw query through some token).
#include <gtest/gtest.h>

#include <numeric>
#include <string>

#include "core/rng.h"
#include "gist/visibility.h"

using namespace gsa::gist;

namespace {

gsa_config make_cfg(std::vector<int> chunk, int g, int local, int sink) {
  gsa_config c;
  c.chunk = std::move(chunk);
  c.gists_per_chunk = g;
  c.local_chunks = local;
  c.sink = sink;
  for (int l = 0; l < c.levels(); l++) c.gist_token_ids.push_back(1000 + l);
  return c;
}

stream make_stream(int n, const gsa_config& cfg) {
  std::vector<int32_t> raw(n);
  std::iota(raw.begin(), raw.end(), 0);
  return build_stream(raw.data(), n, cfg);
}

void expect_mask(const stream& s, const gsa_config& cfg, const std::vector<std::string>& want) {
  visibility vis(s, cfg);
  ASSERT_EQ(int(want.size()), s.size());
  for (int q = 0; q < s.size(); q++) {
    std::string got;
    for (int k = 0; k < s.size(); k++) got += vis(q, k) ? '1' : '0';
    EXPECT_EQ(got, want[q]) << "row " << q;
  }
}

}  // namespace

// c = 3, one level, 10 raw tokens: r0 r1 r2 G0 r3 r4 r5 G1 r6 r7 r8 G2 r9.
TEST(GistVisibility, SingleLevelLocal1Sink0) {
  auto cfg = make_cfg({3}, 1, 1, 0);
  expect_mask(make_stream(10, cfg), cfg,
              {"1000000000000", "1100000000000", "1110000000000", "1111000000000", "1111100000000",
               "1111110000000", "1111111000000", "1111111100000", "0001111110000", "0001111111000",
               "0001111111100", "0001111111110", "0001000111111"});
}

TEST(GistVisibility, SingleLevelLocal0Sink0) {
  auto cfg = make_cfg({3}, 1, 0, 0);
  expect_mask(make_stream(10, cfg), cfg,
              {"1000000000000", "1100000000000", "1110000000000", "1111000000000", "0001100000000",
               "0001110000000", "0001111000000", "0001111100000", "0001000110000", "0001000111000",
               "0001000111100", "0001000111110", "0001000100011"});
}

TEST(GistVisibility, SingleLevelLocal1Sink3) {
  auto cfg = make_cfg({3}, 1, 1, 3);
  expect_mask(make_stream(10, cfg), cfg,
              {"1000000000000", "1100000000000", "1110000000000", "1111000000000", "1111100000000",
               "1111110000000", "1111111000000", "1111111100000", "1111111110000", "1111111111000",
               "1111111111100", "1111111111110", "1111000111111"});
}

TEST(GistVisibility, SingleLevelLocal0Sink3) {
  auto cfg = make_cfg({3}, 1, 0, 3);
  expect_mask(make_stream(10, cfg), cfg,
              {"1000000000000", "1100000000000", "1110000000000", "1111000000000", "1111100000000",
               "1111110000000", "1111111000000", "1111111100000", "1111000110000", "1111000111000",
               "1111000111100", "1111000111110", "1111000100011"});
}

// Two levels 2x2, 10 raw tokens:
//  0 r0  1 r1  2 a0 | 3 r2  4 r3  5 a1  6 b0 | 7 r4  8 r5  9 a2 | 10 r6 11 r7 12 a3 13 b1 | 14 r8 15 r9 16 a4
// (a = level-0 gist, b = level-1 gist). Level-0 gists are visible within the current and the previous level-1
// group: r8 (group 2) no longer sees a0 a1 (group 0) but sees b0. b1 sees a0..a3 and b0, no raw token.
TEST(GistVisibility, TwoLevels2x2Local1Sink0) {
  auto cfg = make_cfg({2, 2}, 1, 1, 0);
  expect_mask(make_stream(10, cfg), cfg,
              {"10000000000000000", "11000000000000000", "11100000000000000", "11110000000000000",
               "11111000000000000", "11111100000000000", "00100110000000000", "00111111000000000",
               "00111111100000000", "00111111110000000", "00100111111000000", "00100111111100000",
               "00100111111110000", "00100110010011000", "00000010011111100", "00000010011111110",
               "00000010011111111"});
}

TEST(GistVisibility, TwoLevels2x2Local0Sink3) {
  auto cfg = make_cfg({2, 2}, 1, 0, 3);
  expect_mask(make_stream(10, cfg), cfg,
              {"10000000000000000", "11000000000000000", "11100000000000000", "11110000000000000",
               "11111000000000000", "11111100000000000", "00100110000000000", "11110111000000000",
               "11110111100000000", "11110111110000000", "11110110011000000", "11110110011100000",
               "11110110011110000", "00100110010011000", "11010010010011100", "11010010010011110",
               "11010010010011111"});
}

// With one level the functor is DESIGN 1.2 word for word.
TEST(GistVisibility, OneLevelIsDesign12) {
  gsa::rng r(7);
  for (int it = 0; it < 40; it++) {
    auto cfg = make_cfg({1 + int(r.below(5))}, 1 + int(r.below(2)), int(r.below(3)), int(r.below(4)));
    const int n = int(r.below(40));
    stream s = make_stream(n, cfg);
    visibility vis(s, cfg);
    for (int q = 0; q < s.size(); q++)
      for (int k = 0; k < s.size(); k++) {
        bool want = false;
        if (k <= q) {
          const bool same = s.chunk[k] == s.chunk[q];
          const bool local = !s.is_gist(k) && s.chunk[k] < s.chunk[q] && s.chunk[k] >= s.chunk[q] - cfg.local_chunks;
          const bool gist = s.is_gist(k);  // a gist of the same or an earlier chunk
          const bool sink = !s.is_gist(k) && s.raw_index[k] < cfg.sink;
          want = same || local || gist || sink;
        }
        ASSERT_EQ(vis(q, k), want) << "q " << q << " k " << k;
      }
  }
}

// No blind spot: for a raw query, each earlier complete chunk is reached by its raw tokens, its level-0 gist,
// or the gist of a unit containing it; and a level-l gist (l >= 1) reaches every chunk of its own unit.
TEST(GistVisibility, HierarchyCoversThePast) {
  gsa::rng r(11);
  for (int it = 0; it < 40; it++) {
    const int L = 1 + int(r.below(3));
    std::vector<int> chunk;
    for (int l = 0; l < L; l++) chunk.push_back(1 + int(r.below(3)));
    auto cfg = make_cfg(chunk, 1 + int(r.below(2)), int(r.below(3)), int(r.below(4)));
    stream s = make_stream(int(r.below(60)), cfg);
    visibility vis(s, cfg);
    const int done = complete_chunk_count(s);
    auto reaches = [&](int q, int m) {
      for (int l = 0; l < L; l++) {
        const int u = m / chunks_per_unit(cfg, l);
        const int p = unit_gist_position(s, cfg, l, u);
        if (p >= 0 && vis(q, p)) return true;
      }
      for (int k = s.chunk_raw_begin[m]; k < s.chunk_raw_end[m]; k++)
        if (vis(q, k)) return true;
      return false;
    };
    for (int q = 0; q < s.size(); q++) {
      const int lq = s.level[q];
      if (lq < 0) {
        for (int m = 0; m < std::min(done, s.chunk[q]); m++) EXPECT_TRUE(reaches(q, m)) << "q " << q << " m " << m;
      } else if (lq >= 1) {
        const int u = s.chunk[q] / chunks_per_unit(cfg, lq);
        for (int c = 0; c < cfg.chunk[lq]; c++) {
          const int child = u * cfg.chunk[lq] + c;
          EXPECT_TRUE(vis(q, unit_gist_position(s, cfg, lq - 1, child))) << "q " << q << " child " << child;
        }
        for (int k = 0; k <= q; k++)
          if (!s.is_gist(k)) {
            EXPECT_FALSE(vis(q, k)) << "gist of gists sees raw token " << k;
          }
      }
    }
  }
}

TEST(GistVisibility, Unfold) {
  auto cfg = make_cfg({3}, 1, 0, 0);
  stream s = make_stream(10, cfg);
  visibility vis(s, cfg);
  // r9 (position 12) unfolding chunk 0 sees r0 r1 r2 on top of its gist mask; chunk 1's raw stays hidden.
  std::vector<int32_t> sel = {0};
  EXPECT_TRUE(vis(12, 0, sel));
  EXPECT_TRUE(vis(12, 2, sel));
  EXPECT_FALSE(vis(12, 4, sel));
  EXPECT_TRUE(vis(12, 7, sel));
  EXPECT_FALSE(vis(2, 3, sel));  // never a later key
  auto cfg2 = make_cfg({2, 2}, 1, 0, 0);
  cfg2.gists_all = true;
  stream s2 = make_stream(10, cfg2);
  visibility vis2(s2, cfg2);
  std::vector<int32_t> none;
  EXPECT_FALSE(vis2(14, 2));       // a0 is out of r8's level-0 range...
  EXPECT_TRUE(vis2(14, 2, none));  // ...but gists = all keeps every gist for an unfolding query
  EXPECT_FALSE(vis2(14, 0, none));
}
