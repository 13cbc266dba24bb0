// Cutting a session back to a prefix of its tokens (session.h truncate / cut_point) on random tiny models: a
// session that computed a context and more, was cut at n tokens and continued with other tokens computes, bit
// for bit, what a session that never had the cut tokens computes (same key lists, logits, generated tokens), for
// every method that can cut, in the memory and file tiers and in pool mode (the GPU session's path run by the
// CPU backend); the cut point respects chunks; what cannot be cut is refused clearly. Spilling an idle session's
// KV to its file and back changes nothing it computes.
#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"
#include "infer/generate.h"
#include "infer/session.h"
#include "test-models.h"
#include "test-util.h"

namespace gsa::infer {
namespace {

using test::tiny_model;
using test::tiny_tokens;

constexpr int kContext = 40, kMore = 20;

// Same stream, key lists and logits: bit for bit, or within `tol` where the rows attend K/V that a prefill of
// another length computed (its matmuls are GEMMs of another M, which may round differently in the last bit).
void expect_same(const session& a, const session& b, float tol = 0) {
  EXPECT_EQ(a.stream().ids, b.stream().ids);
  EXPECT_EQ(a.stream().pos, b.stream().pos);
  EXPECT_EQ(a.stream().labels, b.stream().labels);
  EXPECT_EQ(a.stream().chunk_gist_begin, b.stream().chunk_gist_begin);
  EXPECT_EQ(a.prefill_rows(), b.prefill_rows());
  EXPECT_EQ(a.budget(), b.budget());
  ASSERT_EQ(a.records().size(), b.records().size());
  for (size_t i = 0; i < a.records().size(); i++) {
    ASSERT_EQ(a.records()[i].pos, b.records()[i].pos);
    EXPECT_EQ(a.records()[i].keys, b.records()[i].keys) << "row " << a.records()[i].pos;
    if (tol == 0) {
      EXPECT_EQ(a.records()[i].logits, b.records()[i].logits) << "row " << a.records()[i].pos;
      continue;
    }
    ASSERT_EQ(a.records()[i].logits.size(), b.records()[i].logits.size());
    float worst = 0;
    for (size_t v = 0; v < a.records()[i].logits.size(); v++)
      worst = std::max(worst, std::abs(a.records()[i].logits[v] - b.records()[i].logits[v]));
    EXPECT_LE(worst, tol) << "row " << a.records()[i].pos;
  }
  const kv::cache_bytes x = a.cache().bytes(), y = b.cache().bytes();
  EXPECT_EQ(x.resident, y.resident);
  EXPECT_EQ(x.file, y.file);
}

std::vector<int32_t> head(const std::vector<int32_t>& v, int n) { return {v.begin(), v.begin() + n}; }

void expect_same_stream(const gist::stream& a, const gist::stream& b) {
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_EQ(a.pos, b.pos);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_EQ(a.level, b.level);
  EXPECT_EQ(a.chunk, b.chunk);
  EXPECT_EQ(a.raw_index, b.raw_index);
  EXPECT_EQ(a.chunk_raw_begin, b.chunk_raw_begin);
  EXPECT_EQ(a.chunk_raw_end, b.chunk_raw_end);
  EXPECT_EQ(a.chunk_gist_begin, b.chunk_gist_begin);
}

// A: context + more computed, cut at n, then `next` and 6 greedy tokens. B: only the first n of context + more
// (the context part prefilled, the rest decoded as A decoded it), then the same. Bit for bit, except where the
// cut falls inside the context: A's kept rows come from a prefill of all of it, B's from a prefill of n tokens.
void check_cut(const llama_model& m, session_options o, int n, int expect_point = -1) {
  SCOPED_TRACE("cut at " + std::to_string(n));
  o.record = true;
  const auto ctx = tiny_tokens(kContext, 1), more = tiny_tokens(kMore, 2), next = tiny_tokens(9, 3);
  session a(m, o), b(m, o);
  a.prefill(ctx);
  a.append(more);
  run_pending({&a});
  if (expect_point >= 0) {
    EXPECT_EQ(a.cut_point(n), expect_point);
    n = expect_point;
  }
  ASSERT_EQ(a.cut_point(n), n);
  a.truncate(n);
  EXPECT_EQ(a.raw_count(), n);
  EXPECT_TRUE(a.logits().empty());
  if (n > 0) b.prefill(head(ctx, std::min(n, kContext)));
  if (n > kContext) {
    b.append(head(more, n - kContext));
    run_pending({&b});
  }
  expect_same_stream(a.stream(), b.stream());  // build_stream's layout for n tokens, labels included
  a.append(next);
  b.append(next);
  generate_options g;
  g.max_tokens = 6;
  const auto ga = generate({&a}, g), gb = generate({&b}, g);
  EXPECT_EQ(ga[0].ids, gb[0].ids);
  expect_same(a, b, n > 0 && n < kContext ? 1e-4f : 0.0f);
}

struct method_case {
  method meth;
  std::vector<int> chunk;
  int64_t budget;
  prefill_mode prefill;
};

const method_case kCases[] = {
    {method::gsa, {4}, -1, prefill_mode::automatic},     {method::gsa, {4}, -1, prefill_mode::unfold},
    {method::hgsa, {3, 2}, -1, prefill_mode::automatic}, {method::gist, {4}, -1, prefill_mode::automatic},
    {method::full, {4}, -1, prefill_mode::automatic},    {method::streaming, {4}, 12, prefill_mode::automatic},
    {method::quest, {4}, 12, prefill_mode::automatic},   {method::moba, {4}, 12, prefill_mode::automatic}};

TEST(SessionCut, ContinuingACutSessionEqualsNeverHavingTheTail) {
  for (const auto& cs : kCases)
    for (kv::page_tier tier : {kv::page_tier::memory, kv::page_tier::file})
      for (bool pool : {false, true}) {
        if (pool && tier != kv::page_tier::memory) continue;
        SCOPED_TRACE(std::string(method_name(cs.meth)) + " " + prefill_mode_name(cs.prefill) + " " +
                     kv::page_tier_name(tier) + (pool ? " pool" : ""));
        llama_model m = tiny_model(cs.chunk);
        session_options o;
        o.meth = cs.meth;
        o.budget = cs.budget;
        o.prefill = cs.prefill;
        o.page_size = 4;
        o.tier = tier;
        o.kv_pool = pool;
        const int c = cs.chunk[0];
        // Inside the prefilled context (chunk boundaries), at its end, inside the decoded part, nothing.
        std::vector<int> cuts = {c * 2, (kContext - 3) / c * c, kContext / c * c, (kContext + 13) / c * c, 0};
        for (int n : cuts) check_cut(m, o, n);
        // The baselines cut at any token; in pool mode quest / moba at a page boundary (a complete page's keys,
        // which its summary needs, left the host).
        if (!uses_gists(cs.meth))
          check_cut(m, o, kContext + 5,
                    pool && (cs.meth == method::quest || cs.meth == method::moba) ? kContext + 4 : kContext + 5);
      }
}

// Cut, continue, cut again inside what was continued, continue: equal to computing only what was kept. With
// every gist visible (gists: all), whose lists read the session's table of gist positions.
TEST(SessionCut, CutTwice) {
  for (bool gists_all : {false, true}) {
    SCOPED_TRACE(gists_all ? "gists all" : "gists selected");
    model_config mc = test::tiny_config(test::tiny_vocab, 3);
    gist::gsa_config gc = test::tiny_gsa(test::tiny_vocab, {4});
    gc.gists_all = gists_all;
    mc.gsa = gist::gsa_config_to_json(gc);
    llama_model m(mc);
    m.init_random(13, 0.3f);
    session_options o;
    o.record = true;
    const auto ctx = tiny_tokens(kContext, 1), more = tiny_tokens(kMore, 2), next = tiny_tokens(9, 3);
    const auto last = tiny_tokens(6, 4);
    session a(m, o), b(m, o);
    a.prefill(ctx);
    a.append(more);
    run_pending({&a});
    a.truncate(48);
    a.append(next);
    run_pending({&a});
    a.truncate(52);
    b.prefill(ctx);
    b.append(head(more, 8));
    b.append(head(next, 4));
    run_pending({&b});
    expect_same_stream(a.stream(), b.stream());
    a.append(last);
    b.append(last);
    generate_options g;
    g.max_tokens = 6;
    EXPECT_EQ(generate({&a}, g)[0].ids, generate({&b}, g)[0].ids);
    expect_same(a, b);
  }
}

TEST(SessionCut, CutPointRespectsChunks) {
  llama_model m = tiny_model({4});
  session_options o;
  session s(m, o);
  s.prefill(tiny_tokens(30, 1));
  EXPECT_EQ(s.cut_point(23), 20);  // a chunk is kept whole or not at all
  EXPECT_EQ(s.cut_point(24), 24);
  EXPECT_EQ(s.cut_point(99), 28);  // at most what it holds, at a chunk boundary
  EXPECT_EQ(s.cut_point(3), 0);
  EXPECT_THROW(s.truncate(23), gsa::error);
  EXPECT_THROW(s.truncate(31), gsa::error);
  EXPECT_THROW(s.truncate(-4), gsa::error);
  s.append({1, 2});
  EXPECT_EQ(s.cut_point(24), 0);  // queued rows: compute them first
  EXPECT_THROW(s.truncate(24), gsa::error);
  run_pending({&s});
  s.truncate(32);  // everything: nothing changes, the logits stay
  EXPECT_FALSE(s.logits().empty());
  EXPECT_EQ(s.raw_count(), 32);
  s.truncate(24);
  // The stream is build_stream's for 24 tokens: 6 chunks, each followed by its gist.
  EXPECT_EQ(s.stream().size(), 24 + 6);
  EXPECT_EQ(s.stream().n_chunks(), 6);
  EXPECT_EQ(s.cache().gist_count(0, 0), 6);

  session_options full;
  full.meth = method::full;
  session f(m, full);
  f.prefill(tiny_tokens(30, 1));
  EXPECT_EQ(f.cut_point(23), 23);  // no gists: any token
}

TEST(SessionCut, WhatCannotBeCutIsRefused) {
  llama_model m = tiny_model({4});
  session_options o;
  o.meth = method::h2o;
  o.budget = 12;
  session h(m, o);
  h.prefill(tiny_tokens(30, 1));
  h.append({1});
  run_pending({&h});
  EXPECT_EQ(h.cut_point(20), 0);
  try {
    h.truncate(20);
    ADD_FAILURE() << "h2o cut";
  } catch (const gsa::error& e) {
    EXPECT_NE(std::string(e.what()).find("h2o"), std::string::npos) << e.what();
  }
  // --kv-tier drop: a page is freed as soon as it leaves the window, and a cut by a chunk or more would need the
  // page before the new window back, so nothing can be cut but back to the sink's page (never freed).
  session_options d;
  d.meth = method::gist;
  d.tier = kv::page_tier::drop;
  session g(m, d);
  g.prefill(tiny_tokens(60, 1));
  for (int n : {8, 20, 56}) {
    EXPECT_EQ(g.cut_point(n), 0);
    EXPECT_THROW(g.truncate(n), gsa::error);
  }
  EXPECT_EQ(g.raw_count(), 60);
  EXPECT_EQ(g.cut_point(60), 60);
  EXPECT_EQ(g.cut_point(5), 4);
  g.truncate(4);
  EXPECT_EQ(g.raw_count(), 4);
}

TEST(SessionCut, SpilledSessionContinuesAsIfNeverSpilled) {
  for (kv::page_tier tier : {kv::page_tier::memory, kv::page_tier::file}) {
    SCOPED_TRACE(kv::page_tier_name(tier));
    llama_model m = tiny_model({4});
    session_options o;
    o.tier = tier;
    o.record = true;
    session a(m, o), b(m, o);
    for (session* s : {&a, &b}) {
      s->prefill(tiny_tokens(45, 1));
      s->append(tiny_tokens(7, 2));
      run_pending({s});
    }
    const int64_t resident = a.cache().bytes().resident;
    a.spill_kv();
    EXPECT_TRUE(a.kv_spilled());
    EXPECT_EQ(a.cache().bytes().resident, 0);
    EXPECT_EQ(a.cache().bytes().file, b.cache().bytes().file + resident);
    EXPECT_EQ(a.cut_point(42), 40);            // what it can cut once restored
    EXPECT_THROW(a.truncate(40), gsa::error);  // but not before
    a.restore_kv();
    generate_options g;
    g.max_tokens = 8;
    a.append(tiny_tokens(5, 3));
    b.append(tiny_tokens(5, 3));
    EXPECT_EQ(generate({&a}, g)[0].ids, generate({&b}, g)[0].ids);
    expect_same(a, b);
  }
}

}  // namespace
}  // namespace gsa::infer
