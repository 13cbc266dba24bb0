// Chunk selection on constructed scores: ties, union vs group scoring, adaptive k, top-p, the hierarchy, and
// gist scoring against hand-computed dot products.
#include <gtest/gtest.h>

#include <climits>
#include <cmath>
#include <numeric>

#include "core/rng.h"
#include "gist/select.h"
#include "gist/stream.h"

using namespace gsa::gist;
using VV = std::vector<std::vector<int32_t>>;

namespace {

gsa_config make_cfg(std::vector<int> chunk, int g) {
  gsa_config c;
  c.chunk = std::move(chunk);
  c.gists_per_chunk = g;
  for (int l = 0; l < c.levels(); l++) c.gist_token_ids.push_back(300 + l);
  return c;
}

}  // namespace

TEST(GistSelect, CandidateCount) {
  EXPECT_EQ(candidate_count(5, 5, 1), 4);
  EXPECT_EQ(candidate_count(5, 4, 0), 4);  // the query's own chunk is not complete
  EXPECT_EQ(candidate_count(1, 1, 1), 0);
  EXPECT_EQ(candidate_count(0, 0, 2), 0);
  EXPECT_EQ(candidate_count(9, 3, 1), 3);
}

TEST(GistSelect, TiesPreferLowerIndex) {
  auto cfg = make_cfg({4}, 1);
  cfg.select = select_rule::fixed;
  std::vector<float> s = {1, 2, 2, 1, 2};
  EXPECT_EQ(select_top(s.data(), 1, 1, 5, 2, cfg), (VV{{1, 2}}));
  EXPECT_EQ(select_top(s.data(), 1, 1, 5, 4, cfg), (VV{{0, 1, 2, 4}}));
  std::vector<float> flat(6, 0.5f);
  EXPECT_EQ(select_top(flat.data(), 1, 1, 6, 3, cfg), (VV{{0, 1, 2}}));
  std::vector<float> nan = {NAN, -1, NAN};
  EXPECT_EQ(select_top(nan.data(), 1, 1, 3, 1, cfg), (VV{{1}}));
  EXPECT_EQ(select_top(s.data(), 1, 1, 5, 9, cfg), (VV{{0, 1, 2, 3, 4}}));  // k > n: all
  EXPECT_EQ(select_top(s.data(), 1, 1, 5, 0, cfg), (VV{{}}));
}

TEST(GistSelect, UnionVersusGroup) {
  auto cfg = make_cfg({4}, 1);
  cfg.select = select_rule::fixed;
  // Hq = 4, Hkv = 2: heads 0,1 -> KV 0; heads 2,3 -> KV 1. n = 4 chunks.
  std::vector<float> s = {
      9, 0, 0, 5,  // head 0: best 0
      0, 8, 0, 5,  // head 1: best 1
      0, 0, 3, 0,  // head 2: best 2
      0, 0, 3, 1,  // head 3: best 2 (tie with nothing)
  };
  EXPECT_EQ(select_top(s.data(), 4, 2, 4, 1, cfg), (VV{{0, 1}, {2}}));
  cfg.group_scoring = true;
  // sums: KV 0 -> {9, 8, 0, 10}: chunk 3; KV 1 -> {0, 0, 6, 1}: chunk 2.
  EXPECT_EQ(select_top(s.data(), 4, 2, 4, 1, cfg), (VV{{3}, {2}}));
  EXPECT_EQ(select_top(s.data(), 4, 2, 4, 2, cfg), (VV{{0, 3}, {2, 3}}));
}

TEST(GistSelect, AdaptiveK) {
  auto cfg = make_cfg({16}, 1);  // c = 16, r = 16
  EXPECT_EQ(adaptive_k(0, cfg, 1, 100), 1);
  EXPECT_EQ(adaptive_k(255, cfg, 1, 100), 1);
  EXPECT_EQ(adaptive_k(256, cfg, 1, 100), 2);       // 256 / 16 / 1 / 16 + 1
  EXPECT_EQ(adaptive_k(3072, cfg, 4, 100), 4);      // 3072 / 16 / 4 / 16 + 1
  EXPECT_EQ(adaptive_k(32768, cfg, 1, 100), 25);    // 129 capped at 25% of 100
  EXPECT_EQ(adaptive_k(32768, cfg, 1, 8), 2);       // capped at ceil(8 / 4)
  EXPECT_EQ(adaptive_k(32768, cfg, 1, 1), 1);
  EXPECT_EQ(adaptive_k(32768, cfg, 1, 0), 0);
  auto cfg2 = make_cfg({8}, 2);                      // r = 4 need not divide anything
  EXPECT_EQ(adaptive_k(64, cfg2, 1, 100), 3);        // 64 / 4 / 1 / 8 + 1
  EXPECT_EQ(adaptive_k(64, cfg2, 2, 100), 2);
  // Two levels: r is the whole hierarchy's (4 x 4 / 1 = 16), so the budget is L / 16 as for one level of 16,
  // in chunks of 4: k = L / 16 / G / 4 + 1 (not L / 4 / G / 4 + 1, four times the budget).
  auto cfg3 = make_cfg({4, 4}, 1);
  EXPECT_FLOAT_EQ(cfg3.ratio(), 16.0f);
  EXPECT_EQ(adaptive_k(1024, cfg3, 1, 200), 17);     // 1024 / 16 / 1 / 4 + 1
  EXPECT_EQ(adaptive_k(3072, cfg3, 3, 700), 17);     // 3072 / 16 / 3 / 4 + 1
  // A session's --ratio replaces r: c = 16 at r = 32 halves the budget; 4 x 4 at r = 4 quadruples it.
  auto cfg4 = make_cfg({16}, 1);
  cfg4.budget_ratio = 32;
  EXPECT_EQ(adaptive_k(32768, cfg4, 1, 1000), 65);   // 32768 / 32 / 1 / 16 + 1 (129 at r = 16)
  cfg3.budget_ratio = 4;
  EXPECT_EQ(adaptive_k(1024, cfg3, 1, 200), 50);     // min(1024 / 4 / 1 / 4 + 1, ceil(200 / 4))
  EXPECT_EQ(adaptive_k(1024, cfg3, 1, 400), 65);
  cfg.select = select_rule::fixed;
  cfg.topk = 6;
  EXPECT_EQ(select_k(cfg, 0, 1, 4), 4);
  EXPECT_EQ(select_k(cfg, 0, 1, 40), 6);
  // select_chunks picks adaptive k: 2 of 10 candidates.
  cfg.select = select_rule::adaptive;
  std::vector<float> s = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  EXPECT_EQ(select_chunks(s.data(), 1, 1, 10, 256, cfg), (VV{{8, 9}}));
}

TEST(GistSelect, TopP) {
  auto cfg = make_cfg({4}, 1);
  cfg.select = select_rule::top_p;
  std::vector<float> s = {std::log(0.3f), std::log(0.5f), std::log(0.2f)};
  cfg.top_p = 0.5f;
  EXPECT_EQ(select_top(s.data(), 1, 1, 3, 0, cfg), (VV{{1}}));
  cfg.top_p = 0.79f;
  EXPECT_EQ(select_top(s.data(), 1, 1, 3, 0, cfg), (VV{{0, 1}}));
  cfg.top_p = 0.81f;
  EXPECT_EQ(select_top(s.data(), 1, 1, 3, 0, cfg), (VV{{0, 1, 2}}));
  cfg.top_p = 1.0f;
  EXPECT_EQ(select_top(s.data(), 1, 1, 3, 0, cfg), (VV{{0, 1, 2}}));
  cfg.top_p = 0.01f;  // at least one
  EXPECT_EQ(select_top(s.data(), 1, 1, 3, 0, cfg), (VV{{1}}));
  // Group scoring: softmax over summed scores; two heads, sums {0, 0, 10}: mass on chunk 2.
  std::vector<float> g = {0, 0, 5, 0, 0, 5};
  cfg.group_scoring = true;
  cfg.top_p = 0.9f;
  EXPECT_EQ(select_top(g.data(), 2, 1, 3, 0, cfg), (VV{{2}}));
}

TEST(GistSelect, ScoreUnits) {
  // Tq = 2 queries, Hq = 2, Hkv = 1, D = 4; keys at 5 positions; units with g = 2 at positions 1 and 3.
  const int D = 4;
  std::vector<float> q = {1, 0, 0, 0, 0, 1, 0, 0,    // query 0: head 0 e0, head 1 e1
                          0, 0, 2, 0, 0, 0, 0, -1};  // query 1: head 0 2 e2, head 1 -e3
  std::vector<float> k = {9, 9, 9, 9,  // 0 (not a gist)
                          1, 0, 1, 0,  // 1
                          0, 3, 0, 0,  // 2
                          0, 0, 0, -2, // 3
                          4, 0, 0, 0}; // 4
  std::vector<int32_t> gb = {1, 3};
  std::vector<float> sc(4);
  score_units(sc.data(), q.data(), 2, 2, k.data(), 5, 1, D, gb.data(), 2, 2);
  // head 0: unit 0 keys {1,2}: q0.k1 = 1, q1.k1 = 2 -> 2; unit 1 keys {3,4}: q0.k4 = 4 -> 4. / sqrt(4) = 2
  // head 1: unit 0: q0.k2 = 3 -> 3; unit 1: q1.k3 = 2 -> 2.
  EXPECT_FLOAT_EQ(sc[0], 1.0f);
  EXPECT_FLOAT_EQ(sc[1], 2.0f);
  EXPECT_FLOAT_EQ(sc[2], 1.5f);
  EXPECT_FLOAT_EQ(sc[3], 1.0f);
}

TEST(GistSelect, HierarchyHandChecked) {
  auto cfg = make_cfg({4, 2}, 1);
  cfg.select = select_rule::fixed;
  // 7 candidate chunks: level-1 units 0..2 are whole (chunks 0-5), chunk 6 is loose.
  std::vector<float> top = {1, 5, 3};
  std::vector<float> chunk = {9, 9, 2, 1, 9, 9, 4};
  std::vector<std::vector<int32_t>> asked(2);
  auto scorer = [&](int level, int h, const std::vector<int32_t>& units, float* out) {
    asked[level] = units;
    for (size_t i = 0; i < units.size(); i++) out[i] = level == 1 ? top[units[i]] : chunk[units[i]];
  };
  auto res = select_hierarchical(7, 1, 1, {1, 1}, cfg, scorer);
  EXPECT_EQ(asked[1], (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(asked[0], (std::vector<int32_t>{2, 3, 6}));  // children of unit 1, and the loose chunk
  EXPECT_EQ(res.chunks, (VV{{6}}));
  EXPECT_EQ(res.keys_scored, 6);
}

// With unlimited k at the upper levels the top-down selection equals the flat one (all candidates are scored
// at level 0); with unlimited k everywhere it selects every candidate chunk.
TEST(GistSelect, HierarchyUnlimitedEqualsFlat) {
  gsa::rng r(5);
  for (int it = 0; it < 60; it++) {
    const int L = 1 + int(r.below(3));
    std::vector<int> ch;
    for (int l = 0; l < L; l++) ch.push_back(1 + int(r.below(3)));
    auto cfg = make_cfg(ch, 1 + int(r.below(2)));
    cfg.select = select_rule::fixed;
    cfg.group_scoring = r.below(2) == 1;
    const int Hkv = 1 + int(r.below(2)), Hq = Hkv * (1 + int(r.below(3)));
    const int n = int(r.below(40));
    std::vector<float> flat(size_t(Hq) * n);
    for (auto& x : flat) x = float(r.below(5));  // many ties on purpose
    auto scorer = [&](int level, int h, const std::vector<int32_t>& units, float* out) {
      const int G = Hq / Hkv;
      for (int i = 0; i < G; i++)
        for (size_t u = 0; u < units.size(); u++)
          out[i * units.size() + u] = level == 0 ? flat[size_t(h * G + i) * n + units[u]] : float(r.below(5));
    };
    const int k0 = int(r.below(4));
    std::vector<int> ks(L, INT_MAX);
    ks[0] = k0;
    auto res = select_hierarchical(n, Hq, Hkv, ks, cfg, scorer);
    EXPECT_EQ(res.chunks, select_top(flat.data(), Hq, Hkv, n, k0, cfg));
    auto all = select_hierarchical(n, Hq, Hkv, std::vector<int>(L, INT_MAX), cfg, scorer);
    std::vector<int32_t> every(n);
    std::iota(every.begin(), every.end(), 0);
    for (int h = 0; h < Hkv; h++) EXPECT_EQ(all.chunks[h], every);
  }
}

TEST(GistSelect, HierarchyK) {
  auto cfg = make_cfg({16, 4}, 1);
  cfg.select = select_rule::fixed;
  cfg.topk = 3;
  EXPECT_EQ(hierarchy_k(cfg, 0, 1, 10), (std::vector<int>{3, 3}));
  cfg.select = select_rule::adaptive;
  EXPECT_EQ(hierarchy_k(cfg, 256, 1, 100), (std::vector<int>{1, 1}));   // r = 64: 256 / 64 / 16 + 1
  EXPECT_EQ(hierarchy_k(cfg, 1024, 1, 100), (std::vector<int>{2, 2}));
}

// select_block, the training / prefill selection of one block, on a real stream: with one level (or
// unfold_select flat) it is score_units + select_chunks over the level-0 gists; with two levels it walks: the
// level-1 gists decide which groups' chunks may be picked at all. Keys are built so that the best chunk by its own
// gist sits in the group whose level-1 gist scores worst: flat picks it, the walk cannot.
TEST(GistSelect, SelectBlockWalksTheHierarchyOrSelectsFlat) {
  auto cfg = make_cfg({2, 2}, 1);
  cfg.select = select_rule::fixed;
  cfg.topk = 1;
  cfg.local_chunks = 1;
  const int n_raw = 20;  // 10 chunks of 2, 5 level-1 units
  std::vector<int32_t> raw(n_raw, 5);
  const stream s = build_stream(raw.data(), n_raw, cfg);
  const auto tables = unit_gist_tables(s, cfg);
  ASSERT_EQ(tables.size(), 2u);
  ASSERT_EQ(tables[0].size(), 10u);
  ASSERT_EQ(tables[1].size(), 5u);
  for (int u = 0; u < 5; u++) EXPECT_EQ(tables[1][u], unit_gist_position(s, cfg, 1, u));
  // D 2, one head: q = (1, 0). A level-0 gist's key is (score, 0); a level-1 gist's key is (score, 0) too.
  const int D = 2, T = s.size();
  std::vector<float> k(size_t(T) * D, 0.0f);
  const float chunk_score[10] = {1, 2, 9, 1, 3, 4, 1, 1, 1, 1};  // chunk 2 best alone, in unit 1
  const float unit_score[5] = {2, -5, 6, 1, 1};                   // unit 1 worst, unit 2 (chunks 4, 5) best
  for (int c = 0; c < 10; c++) k[size_t(tables[0][c]) * D] = chunk_score[c];
  for (int u = 0; u < 5; u++) k[size_t(tables[1][u]) * D] = unit_score[u];
  const std::vector<float> q = {1, 0};
  const int chunk = 9, n_cand = candidate_count(chunk, complete_chunk_count(s), cfg.local_chunks);  // 8
  ASSERT_EQ(n_cand, 8);
  std::vector<std::vector<float>> scores;
  const VV walked = select_block(q.data(), 1, k.data(), T, 1, 1, D, tables, chunk, n_cand, cfg, &scores);
  ASSERT_EQ(scores.size(), 2u);
  EXPECT_EQ(scores[1].size(), 4u);  // units 0..3 are whole inside the 8 candidates
  EXPECT_FLOAT_EQ(scores[1][2], 6.0f / std::sqrt(2.0f));
  EXPECT_EQ(walked, (VV{{5}}));  // unit 2 kept (topk 1), then its better chunk
  cfg.unfold_walk = false;
  EXPECT_EQ(select_block(q.data(), 1, k.data(), T, 1, 1, D, tables, chunk, n_cand, cfg), (VV{{2}}));
  EXPECT_FALSE(walks(cfg));
  // One level: the walk setting changes nothing.
  auto one = make_cfg({2}, 1);
  one.select = select_rule::fixed;
  one.topk = 1;
  EXPECT_FALSE(walks(one));
  const stream s1 = build_stream(raw.data(), n_raw, one);
  const auto t1 = unit_gist_tables(s1, one);
  std::vector<float> k1(size_t(s1.size()) * D, 0.0f);
  for (int c = 0; c < 10; c++) k1[size_t(t1[0][c]) * D] = chunk_score[c];
  EXPECT_EQ(select_block(q.data(), 1, k1.data(), s1.size(), 1, 1, D, t1, chunk, n_cand, one), (VV{{2}}));
}

// select_block scoring from transposed tiles (gist_key_tiles + score_unit_range, what the training selection uses)
// gives the scores of score_units bit for bit (a zero's sign aside) and so the same selection, for one-row and
// several-row blocks, one and two levels, g 1 and 2.
TEST(GistSelect, SelectBlockFromTilesEqualsScoreUnits) {
  gsa::rng r(11);
  for (const auto& [chunk, g] : {std::pair{std::vector<int>{4}, 1}, {std::vector<int>{2, 3}, 2}, {std::vector<int>{3}, 2}}) {
    auto cfg = make_cfg(chunk, g);
    cfg.select = select_rule::fixed;
    cfg.topk = 2;
    const int n_raw = 150, Hq = 4, Hkv = 2, D = 20;  // D not a multiple of the vector width
    std::vector<int32_t> raw(n_raw, 5);
    const stream s = build_stream(raw.data(), n_raw, cfg);
    const int T = s.size();
    std::vector<float> q(size_t(T) * Hq * D), k(size_t(T) * Hkv * D);
    for (auto& x : q) x = float(r.uniform() * 2 - 1);
    for (auto& x : k) x = float(r.uniform() * 2 - 1);
    const auto gb = unit_gist_tables(s, cfg);
    level_tiles tiles;
    for (const auto& t : gb) tiles.push_back(gist_key_tiles(k.data(), T, Hkv, D, t.data(), int(t.size()), g));
    const int n_complete = complete_chunk_count(s);
    int compared = 0;
    for (int row = 0; row < T; row += 7) {
      if (s.level[row] > 0) continue;
      const int c = s.chunk[row], n_cand = candidate_count(c, n_complete, cfg.local_chunks);
      if (n_cand <= 0) continue;
      for (int rows : {1, 3}) {
        if (row + rows > T) continue;
        std::vector<std::vector<float>> want_s, got_s;
        const VV want = select_block(q.data() + size_t(row) * Hq * D, rows, k.data(), T, Hq, Hkv, D, gb, c, n_cand,
                                     cfg, &want_s);
        const VV got = select_block(q.data() + size_t(row) * Hq * D, rows, k.data(), T, Hq, Hkv, D, gb, c, n_cand,
                                    cfg, &got_s, &tiles);
        EXPECT_EQ(got, want) << "row " << row << " rows " << rows;
        // Without scores asked for, a walk scores level 0 only where it goes: the same selection.
        EXPECT_EQ(select_block(q.data() + size_t(row) * Hq * D, rows, k.data(), T, Hq, Hkv, D, gb, c, n_cand, cfg,
                               nullptr, &tiles),
                  want)
            << "row " << row << " rows " << rows << " (level 0 scored where the walk goes)";
        ASSERT_EQ(got_s.size(), want_s.size());
        for (size_t l = 0; l < want_s.size(); l++) {
          ASSERT_EQ(got_s[l].size(), want_s[l].size());
          for (size_t i = 0; i < want_s[l].size(); i++)
            ASSERT_TRUE(got_s[l][i] == want_s[l][i]) << "level " << l << " score " << i << ": " << got_s[l][i]
                                                     << " vs " << want_s[l][i];
        }
        compared++;
      }
    }
    EXPECT_GT(compared, 20);
  }
}
