// build_stream on hand-checked cases: ids, positions, labels, levels, chunks, and the unit helpers.
#include <gtest/gtest.h>

#include <numeric>

#include "core/error.h"
#include "gist/stream.h"

using namespace gsa::gist;

namespace {

gsa_config make_cfg(std::vector<int> chunk, int g, std::vector<int32_t> ids) {
  gsa_config c;
  c.chunk = std::move(chunk);
  c.gists_per_chunk = g;
  c.gist_token_ids = std::move(ids);
  return c;
}

std::vector<int32_t> iota_ids(int n, int first) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), first);
  return v;
}

using V32 = std::vector<int32_t>;
using V8 = std::vector<int8_t>;
constexpr int32_t X = ignore_label;

}  // namespace

TEST(GistStream, SingleLevelPartialChunk) {
  auto cfg = make_cfg({3}, 1, {99});
  auto raw = iota_ids(7, 10);  // 10..16
  stream s = build_stream(raw.data(), 7, cfg);
  // r0 r1 r2 G r3 r4 r5 G r6
  EXPECT_EQ(s.ids, (V32{10, 11, 12, 99, 13, 14, 15, 99, 16}));
  EXPECT_EQ(s.pos, (V32{0, 1, 2, 2, 3, 4, 5, 5, 6}));
  EXPECT_EQ(s.labels, (V32{11, 12, X, 13, 14, 15, X, 16, X}));
  EXPECT_EQ(s.level, (V8{-1, -1, -1, 0, -1, -1, -1, 0, -1}));
  EXPECT_EQ(s.chunk, (V32{0, 0, 0, 0, 1, 1, 1, 1, 2}));
  EXPECT_EQ(s.raw_index, (V32{0, 1, 2, -1, 3, 4, 5, -1, 6}));
  EXPECT_EQ(s.chunk_raw_begin, (V32{0, 4, 8}));
  EXPECT_EQ(s.chunk_raw_end, (V32{3, 7, 9}));
  EXPECT_EQ(s.chunk_gist_begin, (V32{3, 7, -1}));
  EXPECT_EQ(complete_chunk_count(s), 2);
}

TEST(GistStream, TwoGistsCompleteLastChunk) {
  auto cfg = make_cfg({2}, 2, {7});
  auto raw = iota_ids(4, 20);
  stream s = build_stream(raw.data(), 4, cfg);
  // r0 r1 G G r2 r3 G G: the last gist of a chunk predicts the next raw token; the stream's last is ignored.
  EXPECT_EQ(s.ids, (V32{20, 21, 7, 7, 22, 23, 7, 7}));
  EXPECT_EQ(s.pos, (V32{0, 1, 1, 1, 2, 3, 3, 3}));
  EXPECT_EQ(s.labels, (V32{21, X, X, 22, 23, X, X, X}));
  EXPECT_EQ(s.chunk, (V32{0, 0, 0, 0, 1, 1, 1, 1}));
  EXPECT_EQ(s.chunk_gist_begin, (V32{2, 6}));
  EXPECT_EQ(unit_gist_position(s, cfg, 0, 1), 6);
}

TEST(GistStream, TwoLevels2x2) {
  auto cfg = make_cfg({2, 2}, 1, {90, 91});
  auto raw = iota_ids(9, 0);
  stream s = build_stream(raw.data(), 9, cfg);
  // r0 r1 a | r2 r3 a b | r4 r5 a | r6 r7 a b | r8
  EXPECT_EQ(s.ids, (V32{0, 1, 90, 2, 3, 90, 91, 4, 5, 90, 6, 7, 90, 91, 8}));
  EXPECT_EQ(s.pos, (V32{0, 1, 1, 2, 3, 3, 3, 4, 5, 5, 6, 7, 7, 7, 8}));
  EXPECT_EQ(s.level, (V8{-1, -1, 0, -1, -1, 0, 1, -1, -1, 0, -1, -1, 0, 1, -1}));
  EXPECT_EQ(s.chunk, (V32{0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 4}));
  EXPECT_EQ(s.labels, (V32{1, X, 2, 3, X, X, 4, 5, X, 6, 7, X, X, 8, X}));
  EXPECT_EQ(s.chunk_gist_begin, (V32{2, 5, 9, 12, -1}));
  EXPECT_EQ(chunks_per_unit(cfg, 1), 2);
  EXPECT_EQ(unit_count(s, cfg, 0), 4);
  EXPECT_EQ(unit_count(s, cfg, 1), 2);
  EXPECT_EQ(unit_gist_position(s, cfg, 1, 0), 6);
  EXPECT_EQ(unit_gist_position(s, cfg, 1, 1), 13);
  EXPECT_EQ(unit_gist_position(s, cfg, 1, 2), -1);
  EXPECT_EQ(unit_gist_position(s, cfg, 0, 3), 12);
}

TEST(GistStream, ThreeLevelsTwoGists) {
  auto cfg = make_cfg({1, 2, 2}, 2, {50, 51, 52});
  auto raw = iota_ids(4, 0);
  stream s = build_stream(raw.data(), 4, cfg);
  // r0 aa | r1 aa bb | r2 aa | r3 aa bb cc
  EXPECT_EQ(s.ids, (V32{0, 50, 50, 1, 50, 50, 51, 51, 2, 50, 50, 3, 50, 50, 51, 51, 52, 52}));
  EXPECT_EQ(s.pos, (V32{0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3}));
  EXPECT_EQ(s.labels, (V32{X, X, 1, X, X, X, X, 2, X, X, 3, X, X, X, X, X, X, X}));
  EXPECT_EQ(unit_gist_position(s, cfg, 2, 0), 16);
  EXPECT_EQ(unit_gist_position(s, cfg, 1, 1), 14);
}

TEST(GistStream, EmptyAndBadConfig) {
  auto cfg = make_cfg({4}, 1, {1});
  stream s = build_stream(nullptr, 0, cfg);
  EXPECT_EQ(s.size(), 0);
  EXPECT_EQ(s.n_chunks(), 0);
  auto bad = make_cfg({4}, 1, {});
  int32_t t = 0;
  EXPECT_THROW(build_stream(&t, 1, bad), gsa::error);
}
