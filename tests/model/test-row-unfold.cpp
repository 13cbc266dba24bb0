// Row unfolds (backend/row-unfold.h): the gist mask plus per-row chunk tables must see exactly what the per-row
// unfold plan (gist::plan_unfold over plan_split_rows) sees, for random selections on streams with every sink /
// local window / gists-per-chunk combination; the CPU backend runs a plan carrying one as that plan; the CPU
// kernels refuse to ignore one; bad tables get errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "backend/backend.h"
#include "backend/row-unfold.h"
#include "core/error.h"
#include "core/rng.h"
#include "gist/plan.h"
#include "gist/select.h"
#include "gist/stream.h"
#include "model/gsa-plans.h"
#include "test-models.h"
#include "test-util.h"

namespace gsa {
namespace {

struct unfold_case {
  int c, g, sink, local, n_raw, Hkv;
  int c1 = 0;  // > 0: a second gist level (H-GSA) of c1 chunks per unit
};

gist::gsa_config config_of(const unfold_case& uc) {
  gist::gsa_config cfg = test::tiny_gsa(test::tiny_vocab, uc.c1 > 0 ? std::vector<int>{uc.c, uc.c1}
                                                                    : std::vector<int>{uc.c});
  cfg.gists_per_chunk = uc.g;
  cfg.sink = uc.sink;
  cfg.local_chunks = uc.local;
  return cfg;
}

// Random per-row selections (rows from row_begin on, level-0 rows only, like the trainer's): each (row, head)
// picks up to 3 distinct candidates, sometimes none.
std::vector<std::vector<int32_t>> random_rows(const gist::stream& s, const gist::gsa_config& cfg, int Hkv,
                                              int row_begin, rng& r) {
  const int T = s.size(), n_complete = gist::complete_chunk_count(s);
  std::vector<std::vector<int32_t>> sel(size_t(T - row_begin) * Hkv);
  for (int row = row_begin; row < T; row++) {
    if (s.level[row] > 0) continue;
    const int n_cand = gist::candidate_count(s.chunk[row], n_complete, cfg.local_chunks);
    for (int h = 0; h < Hkv; h++) {
      auto& v = sel[size_t(row - row_begin) * Hkv + h];
      const int want = n_cand > 0 ? int(r.below(4)) : 0;
      for (int i = 0; i < want; i++) {
        const int32_t m = int32_t(r.below(uint64_t(n_cand)));
        if (std::find(v.begin(), v.end(), m) == v.end()) v.push_back(m);
      }
    }
  }
  return sel;
}

// Visible keys of row `row` (list AND causal) for KV head h.
std::set<int32_t> visible(const cpu::attn_plan& p, int row, int h) {
  const int b = gist::first_block_at(p, row + 1) - 1;
  std::set<int32_t> keys;
  p.for_each_key(b, h, [&](int32_t k) {
    if (k <= row) keys.insert(k);
  });
  return keys;
}

TEST(RowUnfold, SeesWhatThePerRowUnfoldPlanSees) {
  // The last four have two gist levels: a row's list holds the level-0 gists of its own group only, so an
  // unfolded chunk of an earlier group also brings its level-0 gists.
  const unfold_case cases[] = {{4, 1, 2, 1, 70, 2},       {4, 2, 0, 0, 61, 1},      {8, 1, 11, 1, 90, 2},
                               {8, 3, 3, 2, 101, 3},      {4, 1, 6, 0, 45, 2},      {16, 2, 40, 1, 150, 1},
                               {4, 1, 2, 1, 120, 2, 2},   {4, 2, 0, 0, 150, 1, 4},  {8, 1, 5, 1, 200, 2, 3},
                               {4, 1, 0, 2, 170, 3, 2}};
  rng r(5);
  int two_level_gists = 0;  // keys of the overlay that are level-0 gists (the two-level cases must add some)
  for (const unfold_case& uc : cases) {
    const gist::gsa_config cfg = config_of(uc);
    auto raw = test::tiny_tokens(uc.n_raw, uint64_t(uc.n_raw));
    gist::stream s = gist::build_stream(raw.data(), int(raw.size()), cfg);
    ASSERT_TRUE(row_unfold_applies(s, cfg));
    for (int ctx_end : {0, s.size() / 2}) {
      const cpu::attn_plan base = gist::plan_compress(s, cfg, ctx_end > 0 ? ctx_end : -1);
      const cpu::attn_plan rows = gist::plan_split_rows(base, ctx_end);
      const int b0 = gist::first_block_at(rows, ctx_end);
      auto sel = random_rows(s, cfg, uc.Hkv, ctx_end, r);
      // The reference: plan_unfold over the per-row split (blocks before b0 keep the gist mask).
      std::vector<std::vector<int32_t>> per_block(size_t(rows.n_blocks()) * uc.Hkv);
      std::vector<uint8_t> unfolds(size_t(rows.n_blocks()), 0);
      for (int b = b0; b < rows.n_blocks(); b++) {
        unfolds[size_t(b)] = 1;
        for (int h = 0; h < uc.Hkv; h++)
          per_block[size_t(b) * uc.Hkv + h] = sel[size_t(rows.block_q[b] - ctx_end) * uc.Hkv + h];
      }
      const cpu::attn_plan ref = gist::plan_unfold(s, cfg, rows, per_block, uc.Hkv, unfolds);
      const row_unfold u = host_row_unfold(s, cfg, uc.Hkv, ctx_end, sel, &base);
      const cpu::attn_plan got = expand_row_unfold(base, u, 0);
      cpu::validate_plan(got, s.size(), s.size(), 0, uc.Hkv);
      int64_t chunks = 0;
      for (auto& v : sel) chunks += int64_t(v.size());
      EXPECT_EQ(unfold_totals(u).chunks, chunks);
      // The overlay adds only keys the gist mask lacks (the contract the GPU merge relies on), and the total.
      int64_t added = 0;
      for (int row = 0; row < s.size(); row++)
        for (int h = 0; h < uc.Hkv; h++) {
          const auto want = visible(ref, row, h), have = visible(got, row, h), in_base = visible(base, row, 0);
          ASSERT_EQ(have, want) << "c " << uc.c << " g " << uc.g << " sink " << uc.sink << " row " << row << " h " << h;
          added += int64_t(have.size() - in_base.size());
          for (int32_t k : in_base) ASSERT_TRUE(have.count(k)) << "base key " << k << " lost, row " << row;
          if (uc.c1 > 0)
            for (int32_t k : have) two_level_gists += !in_base.count(k) && s.level[k] == 0 && s.is_gist(k);
        }
      EXPECT_EQ(unfold_totals(u).keys, added);
    }
  }
  EXPECT_GT(two_level_gists, 0) << "no two-level case unfolded a chunk of an earlier group";
}

// "gists": "all" (every gist of every level visible to a row that unfolds): a row unfold on
// gist::plan_unfold_base sees what plan_unfold sees over the plain gist mask, its overlay adds raw tokens only,
// and the host path over the new base's rows is unchanged. Two and three levels, with and without a suffix.
TEST(RowUnfold, GistsAllOnTheUnfoldBaseSeesWhatThePerRowUnfoldPlanSees) {
  struct acase {
    std::vector<int> chunks;
    int g, sink, local, n_raw, Hkv;
  };
  const acase cases[] = {{{4, 2}, 1, 2, 1, 120, 2}, {{4, 4}, 2, 0, 0, 150, 1}, {{8, 3}, 1, 5, 1, 200, 2},
                         {{4, 2, 2}, 1, 3, 1, 220, 2}, {{2, 2, 3}, 2, 0, 2, 160, 1}};
  rng r(13);
  int64_t more_gists = 0;  // keys the gists-all base lists beyond the gist mask
  for (const acase& ac : cases) {
    gist::gsa_config cfg = test::tiny_gsa(test::tiny_vocab, ac.chunks);
    cfg.gists_per_chunk = ac.g;
    cfg.sink = ac.sink;
    cfg.local_chunks = ac.local;
    cfg.gists_all = true;
    auto raw = test::tiny_tokens(ac.n_raw, uint64_t(ac.n_raw) + 7);
    gist::stream s = gist::build_stream(raw.data(), int(raw.size()), cfg);
    ASSERT_TRUE(row_unfold_applies(s, cfg));
    const int T = s.size(), n_complete = gist::complete_chunk_count(s);
    for (int ctx_end : {0, T / 2}) {
      SCOPED_TRACE("levels " + std::to_string(ac.chunks.size()) + " c " + std::to_string(ac.chunks[0]) + " g " +
                   std::to_string(ac.g) + " ctx_end " + std::to_string(ctx_end));
      const cpu::attn_plan base = gist::plan_compress(s, cfg, ctx_end > 0 ? ctx_end : -1);
      const cpu::attn_plan ubase = gist::plan_unfold_base(s, cfg, base, ctx_end);
      ASSERT_EQ(ubase.block_q, base.block_q);
      const cpu::attn_plan rows = gist::plan_split_rows(base, ctx_end), urows = gist::plan_split_rows(ubase, ctx_end);
      const int b0 = gist::first_block_at(rows, ctx_end);
      auto sel = random_rows(s, cfg, ac.Hkv, ctx_end, r);
      // The trainer's blocks (select_for_blocks): level-0 rows with a candidate unfold, whatever they pick.
      std::vector<std::vector<int32_t>> per_block(size_t(rows.n_blocks()) * ac.Hkv);
      std::vector<uint8_t> unfolds(size_t(rows.n_blocks()), 0);
      for (int b = b0; b < rows.n_blocks(); b++) {
        const int row = rows.block_q[b];
        unfolds[size_t(b)] = s.level[row] <= 0 && gist::candidate_count(s.chunk[row], n_complete, ac.local) > 0;
        for (int h = 0; h < ac.Hkv; h++)
          per_block[size_t(b) * ac.Hkv + h] = sel[size_t(row - ctx_end) * ac.Hkv + h];
      }
      const cpu::attn_plan ref = gist::plan_unfold(s, cfg, rows, per_block, ac.Hkv, unfolds);
      const cpu::attn_plan host = gist::plan_unfold(s, cfg, urows, per_block, ac.Hkv, unfolds);
      const row_unfold u = host_row_unfold(s, cfg, ac.Hkv, ctx_end, sel, &ubase);
      const cpu::attn_plan got = expand_row_unfold(ubase, u, 0);
      cpu::validate_plan(got, T, T, 0, ac.Hkv);
      for (int row = 0; row < T; row++) {
        const auto in_ubase = visible(ubase, row, 0), in_base = visible(base, row, 0);
        more_gists += int64_t(in_ubase.size() - in_base.size());
        for (int32_t k : in_ubase)
          if (!in_base.count(k)) {
            ASSERT_TRUE(s.is_gist(k)) << "the base adds raw key " << k << " to row " << row;
          }
        for (int h = 0; h < ac.Hkv; h++) {
          const auto want = visible(ref, row, h), have = visible(got, row, h);
          ASSERT_EQ(have, want) << "row " << row << " h " << h;
          ASSERT_EQ(visible(host, row, h), want) << "the host path over the new base, row " << row;
          for (int32_t k : have)
            if (!in_ubase.count(k)) {
              ASSERT_FALSE(s.is_gist(k)) << "the overlay adds gist " << k << ", row " << row;
            }
        }
      }
    }
  }
  EXPECT_GT(more_gists, 0) << "no case made a gist visible beyond the gist mask";
}

// Per-chunk selection (train_select chunk: a block of the gist mask selects once for all its rows) as a row
// unfold: every row of a selecting block carries the block's selection (what the GPU's row_selection scatters),
// and base + unfold sees what gist::plan_unfold over the chunk blocks sees.
TEST(RowUnfold, PerChunkBlocksSeeWhatThePerChunkUnfoldPlanSees) {
  const unfold_case cases[] = {{4, 1, 2, 1, 70, 2},     {8, 3, 3, 2, 101, 3},    {16, 2, 40, 1, 150, 1},
                               {4, 1, 2, 1, 120, 2, 2}, {4, 2, 0, 0, 150, 1, 4}, {8, 1, 5, 1, 200, 2, 3}};
  rng r(9);
  for (const unfold_case& uc : cases) {
    const gist::gsa_config cfg = config_of(uc);
    auto raw = test::tiny_tokens(uc.n_raw, uint64_t(uc.n_raw) + 1);
    gist::stream s = gist::build_stream(raw.data(), int(raw.size()), cfg);
    const int T = s.size(), n_complete = gist::complete_chunk_count(s);
    const cpu::attn_plan base = gist::plan_compress(s, cfg);
    ASSERT_LT(base.n_blocks(), T) << "blocks of several rows";
    std::vector<std::vector<int32_t>> per_block(size_t(base.n_blocks()) * uc.Hkv), per_row(size_t(T) * uc.Hkv);
    std::vector<uint8_t> unfolds(size_t(base.n_blocks()), 0);
    for (int b = 0; b < base.n_blocks(); b++) {
      const int r0 = base.block_q[b];
      if (s.level[r0] > 0) continue;  // as select_for_blocks: higher-level gist blocks keep the gist mask
      const int n_cand = gist::candidate_count(s.chunk[r0], n_complete, cfg.local_chunks);
      if (n_cand <= 0) continue;
      unfolds[size_t(b)] = 1;
      for (int h = 0; h < uc.Hkv; h++) {
        auto& v = per_block[size_t(b) * uc.Hkv + h];
        for (int i = 0, want = int(r.below(4)); i < want; i++) {
          const int32_t m = int32_t(r.below(uint64_t(n_cand)));
          if (std::find(v.begin(), v.end(), m) == v.end()) v.push_back(m);
        }
        std::sort(v.begin(), v.end());
        for (int row = r0; row < base.block_q[b + 1]; row++) per_row[size_t(row) * uc.Hkv + h] = v;
      }
    }
    const cpu::attn_plan ref = gist::plan_unfold(s, cfg, base, per_block, uc.Hkv, unfolds);
    const cpu::attn_plan got = expand_row_unfold(base, host_row_unfold(s, cfg, uc.Hkv, 0, per_row, &base), 0);
    int64_t unfolded = 0;
    for (int row = 0; row < T; row++)
      for (int h = 0; h < uc.Hkv; h++) {
        const auto want = visible(ref, row, h), have = visible(got, row, h);
        ASSERT_EQ(have, want) << "c " << uc.c << " c1 " << uc.c1 << " row " << row << " (level " << int(s.level[row])
                              << ") h " << h;
        unfolded += int64_t(have.size() - visible(base, row, 0).size());
      }
    EXPECT_GT(unfolded, 0);
  }
}

// The CPU backend runs base + unfold as the per-row plan: the same attention outputs and gradients.
TEST(RowUnfold, CpuBackendRunsItAsThePerRowPlan) {
  gist::gsa_config cfg = test::tiny_gsa(test::tiny_vocab, {4});
  auto raw = test::tiny_tokens(57, 3);
  gist::stream s = gist::build_stream(raw.data(), int(raw.size()), cfg);
  const int T = s.size(), Hq = 4, Hkv = 2, D = 8;
  rng r(9);
  const cpu::attn_plan base = gist::plan_compress(s, cfg);
  const cpu::attn_plan rows = gist::plan_split_rows(base, 0);
  auto sel = random_rows(s, cfg, Hkv, 0, r);
  cpu::attn_plan with = base;
  with.unfold = std::make_shared<row_unfold>(host_row_unfold(s, cfg, Hkv, 0, sel));
  std::vector<std::vector<int32_t>> per_block(size_t(rows.n_blocks()) * Hkv);
  for (int b = 0; b < rows.n_blocks(); b++)
    for (int h = 0; h < Hkv; h++) per_block[size_t(b) * Hkv + h] = sel[size_t(rows.block_q[b]) * Hkv + h];
  const cpu::attn_plan ref = gist::plan_unfold(s, cfg, rows, per_block, Hkv);

  auto make = [&](int h) {
    Tensor t({T, h, D});
    auto v = test::randn(size_t(t.numel()), r);
    std::copy(v.begin(), v.end(), t.f32());
    return t;
  };
  Tensor q = make(Hq), k = make(Hkv), v = make(Hkv), dout = make(Hq);
  backend& be = cpu_backend();
  auto run = [&](const cpu::attn_plan& p, Tensor& out, Tensor& lse, Tensor& dq, Tensor& dk, Tensor& dv) {
    auto prep = be.prepare_plan(p, T, T, 0, Hkv);
    out = be.alloc({T, Hq * D}, dtype::f32);
    lse = be.alloc({T, Hq}, dtype::f32);
    dq = be.alloc({T, Hq, D}, dtype::f32);
    dk = be.alloc({T, Hkv, D}, dtype::f32);
    dv = be.alloc({T, Hkv, D}, dtype::f32);
    be.attention_forward(out, lse, q, k, v, p, prep.get(), 0);
    be.attention_backward(dq, dk, dv, dout, q, k, v, out, lse, p, prep.get(), 0);
  };
  Tensor o1, l1, q1, k1, v1, o2, l2, q2, k2, v2;
  run(with, o1, l1, q1, k1, v1);
  run(ref, o2, l2, q2, k2, v2);
  for (auto [a, b] : {std::pair{&o1, &o2}, {&l1, &l2}, {&q1, &q2}, {&k1, &k2}, {&v1, &v2}})
    EXPECT_LT(test::max_rel_err(a->f32(), b->f32(), size_t(a->numel())), 1e-5);
  // And the selection changed something: without the unfold the output differs.
  Tensor o3, l3, q3, k3, v3;
  run(base, o3, l3, q3, k3, v3);
  EXPECT_GT(test::max_rel_err(o3.f32(), o2.f32(), size_t(o2.numel())), 1e-3);
}

TEST(RowUnfold, BadTablesAndIgnoringKernelsAreRefused) {
  gist::gsa_config cfg = test::tiny_gsa(test::tiny_vocab, {4});
  auto raw = test::tiny_tokens(30, 4);
  gist::stream s = gist::build_stream(raw.data(), int(raw.size()), cfg);
  const int T = s.size();
  std::vector<std::vector<int32_t>> sel(static_cast<size_t>(T));
  sel[5] = {3};  // chunk 3 is not before row 5
  EXPECT_THROW(host_row_unfold(s, cfg, 1, 0, sel), error);
  sel[5] = {};
  sel[T - 1] = {1, 1};  // twice
  EXPECT_THROW(host_row_unfold(s, cfg, 1, 0, sel), error);
  sel[T - 1] = {1};
  EXPECT_THROW(host_row_unfold(s, cfg, 1, 0, std::vector<std::vector<int32_t>>(3)), error);  // wrong size
  cpu::attn_plan p = gist::plan_compress(s, cfg);
  p.unfold = std::make_shared<row_unfold>(host_row_unfold(s, cfg, 1, 0, sel));
  // The plain kernels never drop an unfold silently.
  std::vector<float> q(size_t(T) * 8, 0.1f), out(q.size()), lse(static_cast<size_t>(T));
  EXPECT_THROW(cpu::attention_forward(out.data(), lse.data(), q.data(), q.data(), q.data(), p, T, T, 0, 1, 1, 8),
               error);
  // A table for other rows than the plan's.
  cpu::attn_plan shorter = gist::plan_compress(s, cfg);
  shorter.block_q.back() -= 1;
  EXPECT_THROW(expand_row_unfold(shorter, *p.unfold, 0), error);
  gist::gsa_config two = test::tiny_gsa(test::tiny_vocab, {4, 2});
  gist::stream s2 = gist::build_stream(raw.data(), int(raw.size()), two);
  EXPECT_TRUE(row_unfold_applies(s2, two));
  std::vector<std::vector<int32_t>> none(static_cast<size_t>(s2.size()));
  EXPECT_THROW(host_row_unfold(s2, two, 1, 0, none), error) << "two levels need the rows' gist mask";
  // With gists all and two levels, a base that does not list every gist for the unfolding rows.
  two.gists_all = true;
  std::vector<int32_t> raw2 = test::tiny_tokens(120, 4);
  gist::stream s3 = gist::build_stream(raw2.data(), int(raw2.size()), two);
  const cpu::attn_plan plain = gist::plan_compress(s3, two);
  std::vector<std::vector<int32_t>> none3(static_cast<size_t>(s3.size()));
  try {
    host_row_unfold(s3, two, 1, 0, none3, &plain);
    FAIL() << "a row unfold with gists all on the plain gist mask";
  } catch (const error& e) {
    EXPECT_NE(std::string(e.what()).find("plan_unfold_base"), std::string::npos) << e.what();
  }
  const cpu::attn_plan all = gist::plan_unfold_base(s3, two, plain);
  EXPECT_NO_THROW(host_row_unfold(s3, two, 1, 0, none3, &all));
}

}  // namespace
}  // namespace gsa
