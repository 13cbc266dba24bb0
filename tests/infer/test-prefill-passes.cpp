// A prefill in several forward passes (session_options.prefill_pass): each pass runs over the earlier passes' keys
// and values (model kv_prefix). A prefill under one plan for all layers cuts that plan at block boundaries
// (cpu::plan_blocks); the unfolding prefill selects per pass from the pass's queries and the keys before its end
// (unfold_pass_plans). Either must compute what the one-pass prefill computes: the same tokens and key lists, and
// logits equal up to rounding (the matmuls see fewer rows per call), for every method, on the host cache and in
// pool mode.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "backend/cpu/attention.h"
#include "core/error.h"
#include "gist/plan.h"
#include "infer/session.h"
#include "infer/session-runs.h"
#include "test-models.h"
#include "test-util.h"

namespace gsa::infer {
namespace {

using test::tiny_model;
using test_runs::expect_error;
using test_runs::run;

// The gist-mask plan of a 61-token context (chunk 4) cut into every run of blocks: each piece lists, block by
// block, exactly the keys of the whole plan's block, rebased rows, and is a valid plan for its rows at q_offset
// = its first row over the keys before its end.
TEST(PrefillPasses, PlanBlocksKeepEveryBlocksKeys) {
  llama_model m = tiny_model({4});
  session_options o;
  o.meth = method::gist;
  o.record = true;
  session s(m, o);
  s.prefill(test::tiny_tokens(61, 1));
  const cpu::attn_plan& whole = s.prefill_plans().at(0);
  const int Hkv = int(m.config.num_key_value_heads), nb = whole.n_blocks();
  ASSERT_GE(nb, 6);
  std::vector<int32_t> a, b;
  for (int b0 = 0; b0 < nb; b0 += 2)
    for (int b1 = b0 + 1; b1 <= nb; b1 += 3) {
      SCOPED_TRACE("blocks " + std::to_string(b0) + ".." + std::to_string(b1));
      const cpu::attn_plan part = cpu::plan_blocks(whole, b0, b1);
      const int r0 = whole.block_q[size_t(b0)], r1 = whole.block_q[size_t(b1)];
      ASSERT_EQ(part.n_blocks(), b1 - b0);
      EXPECT_EQ(part.block_q.front(), 0);
      EXPECT_EQ(part.block_q.back(), r1 - r0);
      EXPECT_NO_THROW(cpu::validate_plan(part, r1 - r0, r1, r0, Hkv));
      for (int i = 0; i < b1 - b0; i++)
        for (int h = 0; h < Hkv; h++) {
          whole.list_keys(b0 + i, h, a);
          part.list_keys(i, h, b);
          EXPECT_EQ(a, b) << "block " << b0 + i << " head " << h;
        }
    }
  expect_error([&] { cpu::plan_blocks(whole, 2, 2); }, "plan_blocks");
  expect_error([&] { cpu::plan_blocks(whole, 0, nb + 1); }, "plan_blocks");
}

// Passes of at most 10 rows (whole plan blocks) against one pass, for every method (gsa / hgsa with the gist-mask
// and the unfolding prefill), host cache and pools.
TEST(PrefillPasses, EqualOnePass) {
  struct c {
    method meth;
    std::vector<int> chunk;
    int64_t budget;
    prefill_mode prefill;
    bool pool;
  };
  const c cases[] = {{method::full, {4}, -1, prefill_mode::automatic, false},
                     {method::full, {4}, -1, prefill_mode::automatic, true},
                     {method::gist, {4}, -1, prefill_mode::automatic, true},
                     {method::gsa, {4}, -1, prefill_mode::gist_mask, false},
                     {method::gsa, {4}, -1, prefill_mode::gist_mask, true},
                     {method::hgsa, {3, 2}, -1, prefill_mode::gist_mask, true},
                     {method::streaming, {4}, 12, prefill_mode::automatic, true},
                     {method::quest, {4}, 12, prefill_mode::automatic, true},
                     {method::moba, {4}, 12, prefill_mode::automatic, false},
                     {method::h2o, {4}, 12, prefill_mode::automatic, false},
                     {method::gsa, {4}, -1, prefill_mode::unfold, true},
                     {method::hgsa, {3, 2}, -1, prefill_mode::unfold, false}};
  for (const auto& cs : cases) {
    SCOPED_TRACE(std::string(method_name(cs.meth)) + " " + prefill_mode_name(cs.prefill) +
                 (cs.pool ? " pool" : " host"));
    llama_model m = tiny_model(cs.chunk);
    session_options o;
    o.meth = cs.meth;
    o.budget = cs.budget;
    o.prefill = cs.prefill;
    o.page_size = 4;
    o.kv_pool = cs.pool;
    auto one = run(m, o, 150, 6, 10);
    o.prefill_pass = 10;
    auto passes = run(m, o, 150, 6, 10);
    EXPECT_EQ(one->prefill_passes(), 1);
    // 150 tokens (and their gists) in pieces of <= 10 rows; the causal plan of the non-gist methods has blocks
    // of 64 rows
    EXPECT_GE(passes->prefill_passes(), uses_gists(cs.meth) ? 15 : 3);
    EXPECT_EQ(one->stream().ids, passes->stream().ids);
    ASSERT_EQ(one->records().size(), passes->records().size());
    ASSERT_GE(one->records().size(), 15u);
    for (size_t i = 0; i < one->records().size(); i++) {
      const auto &x = one->records()[i], &y = passes->records()[i];
      EXPECT_EQ(x.keys, y.keys) << "row " << x.pos;
      EXPECT_LE(test::max_rel_err(y.logits, x.logits), 1e-4) << "row " << x.pos;
    }
  }
}

// The unfolding prefill in passes (unfold_pass_plans) against one pass, for per-chunk and per-row selection,
// fixed and adaptive k, one level and a hierarchy: every layer's plan lists, row by row, the same keys (the
// passes' plans put together), and decoding after it gives the same tokens and logits up to rounding.
TEST(PrefillPasses, UnfoldingPrefillSelectsAsOnePass) {
  struct c {
    std::vector<int> chunk;
    bool per_token;
    gist::select_rule rule;
  };
  const c cases[] = {{{4}, false, gist::select_rule::adaptive},
                     {{4}, true, gist::select_rule::adaptive},
                     {{4}, false, gist::select_rule::fixed},
                     {{3, 2}, true, gist::select_rule::fixed}};
  for (const auto& cs : cases) {
    SCOPED_TRACE(std::string(cs.per_token ? "per row" : "per chunk") + " chunk " + std::to_string(cs.chunk[0]) +
                 " levels " + std::to_string(cs.chunk.size()));
    model_config mc = test::tiny_config(test::tiny_vocab, 3, 512);
    gist::gsa_config g = test::tiny_gsa(test::tiny_vocab, cs.chunk);
    g.mode = gist::train_mode::unfold;
    g.select_per_token = cs.per_token;
    g.select = cs.rule;
    g.topk = 2;
    llama_model m = test::model_with_gsa(mc, g, 7);
    session_options o;
    o.meth = cs.chunk.size() > 1 ? method::hgsa : method::gsa;
    o.prefill = prefill_mode::automatic;  // the model's unfold mode
    auto one = run(m, o, 200, 6, 8);
    o.prefill_pass = 23;
    auto passes = run(m, o, 200, 6, 8);
    ASSERT_TRUE(one->prefill_unfolded() && passes->prefill_unfolded());
    EXPECT_EQ(one->prefill_passes(), 1);
    EXPECT_GE(passes->prefill_passes(), 10);
    const int Hkv = int(m.config.num_key_value_heads), T = one->prefill_rows();
    ASSERT_EQ(passes->prefill_rows(), T);
    std::vector<int32_t> a, b;
    const cpu::attn_plan mask = gist::plan_compress(one->stream(), g);
    int64_t unfolded = 0;  // pairs beyond the gist mask's, summed over layers: the case must unfold something
    for (int l = 0; l < int(m.config.num_hidden_layers); l++) {
      const cpu::attn_plan &x = one->prefill_plans().at(size_t(l)), &y = passes->prefill_plans().at(size_t(l));
      EXPECT_NO_THROW(cpu::validate_plan(y, T, T, 0, Hkv));
      unfolded += cpu::attended_pairs(x, Hkv, 0) - cpu::attended_pairs(mask, Hkv, 0);
      // Row by row: blocks may differ in extent only if the plans do, which the key lists then show.
      for (int r = 0; r < T; r++)
        for (int h = 0; h < Hkv; h++) {
          auto row_keys = [&](const cpu::attn_plan& p, std::vector<int32_t>& out) {
            const int blk = int(std::upper_bound(p.block_q.begin(), p.block_q.end(), r) - p.block_q.begin()) - 1;
            p.list_keys(blk, p.heads == 1 ? 0 : h, out);
            out.erase(std::remove_if(out.begin(), out.end(), [r](int32_t k) { return k > r; }), out.end());
          };
          row_keys(x, a);
          row_keys(y, b);
          ASSERT_EQ(a, b) << "layer " << l << " row " << r << " head " << h;
        }
    }
    EXPECT_GT(unfolded, 0);
    EXPECT_EQ(one->stream().ids, passes->stream().ids);
    ASSERT_EQ(one->records().size(), passes->records().size());
    for (size_t i = 0; i < one->records().size(); i++) {
      const auto &x = one->records()[i], &y = passes->records()[i];
      EXPECT_EQ(x.keys, y.keys) << "row " << x.pos;
      EXPECT_LE(test::max_rel_err(y.logits, x.logits), 1e-4) << "row " << x.pos;
    }
  }
}

// A pass is at least one plan block: a chunk of 1 row still prefills (in as many passes as blocks).
TEST(PrefillPasses, ChunkSmallerThanABlockTakesWholeBlocks) {
  llama_model m = tiny_model({4});
  session_options o;
  o.meth = method::full;
  o.prefill_pass = 1;
  session s(m, o);
  s.prefill(test::tiny_tokens(150, 1));
  EXPECT_EQ(s.prefill_passes(), 3);  // plan_causal's blocks of 64 rows
  EXPECT_EQ(s.prefill_rows(), 150);
  o.prefill_pass = -1;
  expect_error([&] { session bad(m, o); }, "--prefill-pass -1 must be >= 1");
}

}  // namespace
}  // namespace gsa::infer
