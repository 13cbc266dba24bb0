// Prefill on top of held KV (session::extend, run_step with several rows of a session) on random tiny models:
//  * for every method, in the memory and file tiers and in pool mode, computing queued rows several per step
//    (all at once, or in pieces) gives the stream, key lists, budget and cache of decoding them one row per step,
//    and logits within rounding (the rows' matmuls are M-row GEMMs instead of mat-vecs), then the same tokens;
//  * where decoding a context computes what prefilling it computes (session::decode_matches_prefill: full, gist,
//    gsa with an unfolding per-token prefill), a prefill of part of a prompt and extend for the rest equals a
//    prefill of the whole prompt: every cached K/V row and the logits within rounding, the same tokens after;
//  * a session extending in a batch with sessions decoding one row per step changes none of them;
//  * bad input is refused before anything is queued.
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

constexpr int kContext = 30, kMore = 27;
constexpr float kTol = 1e-4f;

float max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); i++) worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

// Same stream, key lists, budget and cache bytes; logits within rounding.
void expect_same_rows(const session& a, const session& b) {
  EXPECT_EQ(a.stream().ids, b.stream().ids);
  EXPECT_EQ(a.stream().pos, b.stream().pos);
  EXPECT_EQ(a.stream().labels, b.stream().labels);
  EXPECT_EQ(a.stream().chunk_gist_begin, b.stream().chunk_gist_begin);
  EXPECT_EQ(a.budget(), b.budget());
  ASSERT_EQ(a.records().size(), b.records().size());
  for (size_t i = 0; i < a.records().size(); i++) {
    ASSERT_EQ(a.records()[i].pos, b.records()[i].pos);
    EXPECT_EQ(a.records()[i].keys, b.records()[i].keys) << "row " << a.records()[i].pos;
    EXPECT_LE(max_diff(a.records()[i].logits, b.records()[i].logits), kTol) << "row " << a.records()[i].pos;
  }
  EXPECT_LE(max_diff(a.logits(), b.logits()), kTol);
  const kv::cache_bytes x = a.cache().bytes(), y = b.cache().bytes();
  EXPECT_EQ(x.resident, y.resident);
  EXPECT_EQ(x.file, y.file);
}

// Every K and V row of every layer (raw rows and each level's gists) within tol.
void expect_same_kv(const session& a, const session& b, float tol) {
  const kv::kv_cache &x = a.cache(), &y = b.cache();
  const int L = x.layout().n_layers, Hkv = x.layout().n_kv_heads, D = x.layout().head_dim;
  float worst = 0;
  auto cmp = [&](int l, kv::kv_addr at) {
    for (int h = 0; h < Hkv; h++)
      for (int d = 0; d < D; d++) {
        worst = std::max(worst, std::abs(x.key(l, at, h)[d] - y.key(l, at, h)[d]));
        worst = std::max(worst, std::abs(x.value(l, at, h)[d] - y.value(l, at, h)[d]));
      }
  };
  for (int l = 0; l < L; l++) {
    ASSERT_EQ(x.raw_count(l), y.raw_count(l));
    for (int t = 0; t < x.raw_count(l); t++) cmp(l, {-1, t});
    for (int lv = 0; lv < x.layout().gist_levels; lv++) {
      ASSERT_EQ(x.gist_count(l, lv), y.gist_count(l, lv));
      for (int i = 0; i < x.gist_count(l, lv); i++) cmp(l, {int8_t(lv), i});
    }
  }
  EXPECT_LE(worst, tol);
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
    {method::quest, {4}, 12, prefill_mode::automatic},   {method::moba, {4}, 12, prefill_mode::automatic},
    {method::h2o, {4}, 12, prefill_mode::automatic}};

TEST(SessionExtend, EqualsDecodingRowByRow) {
  for (const auto& cs : kCases)
    for (kv::page_tier tier : {kv::page_tier::memory, kv::page_tier::file})
      for (bool pool : {false, true}) {
        if (pool && (tier != kv::page_tier::memory || cs.meth == method::h2o)) continue;
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
        o.record = true;
        const auto ctx = tiny_tokens(kContext, 1), more = tiny_tokens(kMore, 2);
        // a: one row per step; b: every row in one step; c: pieces of 5 rows per step.
        session a(m, o), b(m, o), c(m, o);
        for (session* s : {&a, &b, &c}) s->prefill(ctx);
        const int prefilled = a.stream().size();
        a.append(more);
        run_pending({&a});
        b.extend(more);
        EXPECT_FALSE(b.has_pending());
        c.append(more);
        int steps = 0;
        for (; c.has_pending(); steps++) run_step({&c}, {5});
        EXPECT_EQ(steps, (a.stream().size() - prefilled + 4) / 5);
        expect_same_rows(a, b);
        expect_same_rows(a, c);
        // Decoding on from there gives the same tokens.
        generate_options g;
        g.max_tokens = 6;
        const auto ids = generate({&a}, g)[0].ids;
        EXPECT_EQ(generate({&b}, g)[0].ids, ids);
        EXPECT_EQ(generate({&c}, g)[0].ids, ids);
      }
}

// A model trained in unfold mode with per-token selection: its prefill unfolds every row as decoding does.
llama_model unfold_model(std::vector<int> chunk) {
  model_config mc = test::tiny_config(test::tiny_vocab, 3);
  gist::gsa_config gc = test::tiny_gsa(test::tiny_vocab, chunk);
  gc.mode = gist::train_mode::unfold;
  gc.select_per_token = true;
  mc.gsa = gist::gsa_config_to_json(gc);
  llama_model m(mc);
  m.init_random(11, 0.3f);
  return m;
}

TEST(SessionExtend, EqualsPrefillWhereDecodingEqualsPrefill) {
  const llama_model plain = tiny_model({4}), unfold = unfold_model({4}), levels = unfold_model({3, 2});
  struct prefill_case {
    const llama_model* m;
    method meth;
    bool equal;
  };
  const prefill_case cases[] = {
      {&unfold, method::full, true},  {&unfold, method::gist, true},       {&unfold, method::gsa, true},
      {&levels, method::gist, true},  {&levels, method::hgsa, true},       {&levels, method::gsa, false},
      {&plain, method::gsa, false},
      {&unfold, method::hgsa, false}, {&unfold, method::streaming, false}, {&unfold, method::quest, false},
      {&unfold, method::moba, false}, {&unfold, method::h2o, false}};
  const auto ctx = tiny_tokens(kContext + kMore, 5);
  for (const auto& cs : cases) {
    SCOPED_TRACE(std::string(method_name(cs.meth)) + (cs.m == &plain ? " (compress-trained)" : "") +
                 (cs.m == &levels ? " (2 levels)" : ""));
    session_options o;
    o.meth = cs.meth;
    o.budget = uses_gists(cs.meth) || cs.meth == method::full ? -1 : 12;
    session whole(*cs.m, o);
    EXPECT_EQ(whole.decode_matches_prefill(), cs.equal);
    if (!cs.equal) continue;
    // The prompt prefilled at once, or its first n tokens prefilled and the rest extended (at a chunk boundary
    // and inside a chunk).
    whole.prefill(ctx);
    for (int n : {8, 13, kContext}) {
      SCOPED_TRACE("prefill " + std::to_string(n));
      session split(*cs.m, o);
      split.prefill({ctx.begin(), ctx.begin() + n});
      split.extend({ctx.begin() + n, ctx.end()});
      EXPECT_EQ(split.stream().ids, whole.stream().ids);
      EXPECT_EQ(split.stream().pos, whole.stream().pos);
      expect_same_kv(whole, split, kTol);
      EXPECT_LE(max_diff(whole.logits(), split.logits()), kTol);
      generate_options g;
      g.max_tokens = 6;
      session w2(*cs.m, o);
      w2.prefill(ctx);
      EXPECT_EQ(generate({&split}, g)[0].ids, generate({&w2}, g)[0].ids);
    }
  }
  // With a --topk override gsa decodes under another rule than the model's prefill: not equal.
  session_options k;
  k.topk = 1;
  EXPECT_FALSE(session(unfold, k).decode_matches_prefill());
}

// One step holding a session's prefill piece and other sessions' decode rows: each computes what it computes alone.
TEST(SessionExtend, InABatchWithDecodingSessions) {
  const llama_model m = tiny_model({4});
  session_options o;
  o.record = true;
  const auto ctx = tiny_tokens(kContext, 1), more = tiny_tokens(kMore, 2), tail = tiny_tokens(9, 3);
  session a(m, o), b(m, o), a_alone(m, o), b_alone(m, o);
  for (session* s : {&a, &a_alone}) s->prefill(ctx);
  for (session* s : {&b, &b_alone}) s->prefill(more);
  const int a0 = a.stream().size(), b0 = b.stream().size();
  a.append(tail);
  b.append(tail);
  a_alone.append(tail);
  run_pending({&a_alone});
  b_alone.append(tail);
  run_pending({&b_alone});
  int steps = 0;
  for (; a.has_pending() || b.has_pending(); steps++) run_step({&a, &b}, {4, 1});
  // b's rows (9 tokens, 3 gists) one per step; a's (9 tokens, 2 gists) 4 per step alongside.
  EXPECT_EQ(a.stream().size() - a0, 11);
  EXPECT_EQ(b.stream().size() - b0, 12);
  EXPECT_EQ(steps, 12);
  expect_same_rows(a, a_alone);
  expect_same_rows(b, b_alone);
}

TEST(SessionExtend, BadInputIsRefusedBeforeAnythingIsQueued) {
  const llama_model m = tiny_model({4}, true, 7, 3, 64);
  session s(m, session_options{});
  s.prefill(tiny_tokens(20, 1));
  EXPECT_THROW(s.extend({1, 2, test::tiny_vocab}), gsa::error);
  EXPECT_THROW(s.extend({-1}), gsa::error);
  EXPECT_FALSE(s.has_pending());
  try {
    s.extend(tiny_tokens(45, 2));  // 20 + 45 > 64 positions
    ADD_FAILURE() << "extended past the model's positions";
  } catch (const gsa::error& e) {
    EXPECT_NE(std::string(e.what()).find("positions"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(s.has_pending());
  EXPECT_THROW(s.extend({}), gsa::error);
  s.extend(tiny_tokens(44, 2));  // up to the last position
  EXPECT_EQ(s.raw_count(), 64);
  EXPECT_FALSE(s.logits().empty());
}

}  // namespace
}  // namespace gsa::infer
