// Decode equivalences (issue 4): token-by-token decoding == one forward pass over the same stream with the same
// visibility (the recorded key lists replayed as a plan), for every method; unfolding every chunk == full
// visibility; hierarchy with unlimited k == flat; k = 0 == gist; baselines with an unlimited budget == full;
// a batch == the sessions run alone; the file and drop tiers == memory. Tiny random models (test-gsa-modes).
#include <algorithm>

#include "core/error.h"
#include "gist/plan.h"
#include "gist/stream.h"
#include "infer/generate.h"
#include "infer/session.h"
#include "model/gsa-plans.h"
#include "session-replay.h"
#include "test-models.h"
#include "test-util.h"

namespace gsa::infer {
namespace {

constexpr int kV = test::tiny_vocab;
using test::tiny_model;
std::vector<int32_t> tokens(int n, uint64_t seed) { return test::tiny_tokens(n, seed); }

// Prefill ctx, append the question, then greedy-generate `gen` tokens; returns the session (recording).
std::unique_ptr<session> run(const llama_model& m, session_options o, int ctx, int question, int gen) {
  o.record = true;
  auto s = std::make_unique<session>(m, o);
  s->prefill(tokens(ctx, 1));
  s->append(tokens(question, 2));
  generate_options g;
  g.max_tokens = gen;
  generate({s.get()}, g);
  return s;
}

// The whole stream through forward() with: the prefill plan for the context rows, then one-row blocks holding
// each decoded row's recorded lists. Returns the max relative error of the decoded rows' logits.
double replay_error(const llama_model& m, const session& s) {
  std::vector<cpu::attn_plan> plans = test_replay::recorded_plans(m, s);
  plan_provider fp = frozen_plans(plans);
  forward_state st;
  forward(m, st, s.stream().ids, s.stream().pos, {}, &fp);
  Tensor lg = logits(m, st);
  double err = 0;
  for (const auto& r : s.records())
    err = std::max(err, test::max_rel_err(r.logits.data(), lg.f32() + size_t(r.pos) * kV, kV));
  return err;
}

std::vector<float> all_logits(const session& s) {
  std::vector<float> out;
  for (auto& r : s.records()) out.insert(out.end(), r.logits.begin(), r.logits.end());
  return out;
}

TEST(Session, IncrementalStreamEqualsBuildStream) {
  for (auto chunk : {std::vector<int>{4}, std::vector<int>{3, 2}}) {
    llama_model m = tiny_model(chunk);
    session_options o;
    o.meth = method::gsa;
    auto s = run(m, o, 23, 5, 9);
    std::vector<int32_t> raw;
    for (int i = 0; i < s->stream().size(); i++)
      if (s->stream().level[i] < 0) raw.push_back(s->stream().ids[i]);
    gist::gsa_config cfg = gist::gsa_config_from_json(m.config.gsa);
    gist::stream ref = gist::build_stream(raw.data(), int(raw.size()), cfg);
    EXPECT_EQ(s->stream().ids, ref.ids);
    EXPECT_EQ(s->stream().pos, ref.pos);
    EXPECT_EQ(s->stream().level, ref.level);
    EXPECT_EQ(s->stream().chunk_gist_begin, ref.chunk_gist_begin);
    EXPECT_EQ(s->stream().labels, ref.labels);
  }
}

TEST(Session, DecodeEqualsOneForwardWithTheSameVisibility) {
  struct c {
    method meth;
    std::vector<int> chunk;
    int64_t budget;
  };
  const c cases[] = {{method::gsa, {4}, -1},      {method::hgsa, {3, 2}, -1}, {method::gist, {4}, -1},
                     {method::full, {4}, -1},     {method::streaming, {4}, 12}, {method::quest, {4}, 12},
                     {method::moba, {4}, 12},     {method::h2o, {4}, 12},     {method::gsa, {3, 2}, -1}};
  for (const auto& cs : cases) {
    SCOPED_TRACE(method_name(cs.meth));
    llama_model m = tiny_model(cs.chunk);
    session_options o;
    o.meth = cs.meth;
    o.budget = cs.budget;
    o.page_size = 4;
    auto s = run(m, o, 37, 6, 12);
    ASSERT_GE(s->records().size(), 17u);
    EXPECT_LT(replay_error(m, *s), 1e-4);
    // The sparse methods really attend fewer keys than full on the last row.
    if (cs.meth != method::full) {
      const auto& r = s->records().back();
      EXPECT_LT(r.keys[size_t(2) * 2].size(), size_t(r.pos + 1));
    }
  }
}

// A model trained in unfold mode prefills its context as that training computed it (every row unfolding, the
// model's own k rule and selection granularity): the prefill's last-row logits equal the unfold training forward's,
// decoding after it equals one forward with the recorded visibility, and it differs from the gist-mask prefill.
TEST(Session, UnfoldPrefillIsTheUnfoldTrainingForward) {
  for (bool per_token : {false, true}) {
    SCOPED_TRACE(per_token ? "per token" : "per chunk");
    model_config c = test::tiny_config(kV, 3, 512);
    gist::gsa_config g = test::tiny_gsa(kV, {4});
    g.mode = gist::train_mode::unfold;
    g.select_per_token = per_token;
    g.select = gist::select_rule::adaptive;
    llama_model m = test::model_with_gsa(c, g, 7);
    const std::vector<int32_t> ctx = tokens(61, 1);

    const gist::stream str = gist::build_stream(ctx.data(), int(ctx.size()), g);
    plan_provider train = make_gsa_plans(m, g, str, gist::train_mode::unfold);
    forward_state st;
    forward(m, st, str.ids, str.pos, {}, &train);
    Tensor ref = logits(m, st);
    const float* ref_last = ref.f32() + size_t(str.size() - 1) * kV;

    session_options o;
    o.meth = method::gsa;
    session automatic(m, o);
    automatic.prefill(ctx);
    EXPECT_TRUE(automatic.prefill_unfolded());
    EXPECT_LT(test::max_rel_err(automatic.logits().data(), ref_last, kV), 1e-6);

    o.prefill = prefill_mode::gist_mask;
    session masked(m, o);
    masked.prefill(ctx);
    EXPECT_FALSE(masked.prefill_unfolded());
    EXPECT_GT(test::max_rel_err(masked.logits().data(), ref_last, kV), 1e-3) << "the unfolding must matter";

    // Decoding after the unfolding prefill == one forward with the recorded per-layer plans and row lists.
    o.prefill = prefill_mode::automatic;
    auto s = run(m, o, 61, 6, 10);
    EXPECT_TRUE(s->prefill_unfolded());
    EXPECT_GT(cpu::attended_pairs(s->prefill_plans()[1], 2, 0), cpu::attended_pairs(s->prefill_plans()[0], 2, 0))
        << "layer 1 unfolds, dense layer 0 not";
    EXPECT_LT(replay_error(m, *s), 1e-4);

    // gist (k = 0) never unfolds.
    o.meth = method::gist;
    session gist_only(m, o);
    gist_only.prefill(ctx);
    EXPECT_FALSE(gist_only.prefill_unfolded());
  }
  // A model trained in compress mode prefills under the gist mask unless asked to unfold.
  llama_model m = tiny_model({4});
  session_options o;
  o.meth = method::gsa;
  session automatic(m, o);
  automatic.prefill(tokens(40, 1));
  EXPECT_FALSE(automatic.prefill_unfolded());
  o.prefill = prefill_mode::unfold;
  session unfolded(m, o);
  unfolded.prefill(tokens(40, 1));
  EXPECT_TRUE(unfolded.prefill_unfolded());
  EXPECT_THROW(prefill_mode_from_name("sometimes"), gsa::error);
  EXPECT_EQ(prefill_mode_from_name("gist-mask"), prefill_mode::gist_mask);
}

// A budget of the whole context at ratio 1 (gsa eval --ratios 1) unfolds every chunk for gsa and hgsa: the
// unfold-everything ablation. Elsewhere a budget is shared over the GQA group (2 heads here): at ratio 2 the same
// budget unfolds fewer chunks than at ratio 1.
TEST(Session, RatioOneUnfoldsEveryChunk) {
  for (const auto& [meth, chunk] : {std::pair{method::gsa, std::vector<int>{4}}, {method::hgsa, {4, 2}}}) {
    SCOPED_TRACE(method_name(meth));
    llama_model m = tiny_model(chunk);
    session_options o;
    o.meth = meth;
    o.budget = 40;
    o.ratio = 1;
    auto s = run(m, o, 36, 3, 6);
    for (const auto& r : s->records()) {
      if (s->stream().level[r.pos] > 0) continue;
      for (int l = 1; l < 3; l++)
        for (int h = 0; h < 2; h++) EXPECT_EQ(int(r.keys[size_t(l) * 2 + h].size()), r.pos + 1) << r.pos;
    }
    o.budget = 12;  // 3 chunks per query head at ratio 1, 1 at ratio 2
    auto wide = run(m, o, 36, 3, 6);
    o.ratio = 2;
    auto narrow = run(m, o, 36, 3, 6);
    const size_t w = wide->records().back().keys[size_t(2) * 2].size();
    const size_t n = narrow->records().back().keys[size_t(2) * 2].size();
    EXPECT_GT(w, n);
    EXPECT_LT(w, size_t(wide->records().back().pos + 1));
  }
}

TEST(Session, UnfoldingEveryChunkIsFullVisibility) {
  llama_model m = tiny_model({4});
  session_options o;
  o.meth = method::gsa;
  o.topk = 400;
  auto s = run(m, o, 30, 3, 8);
  for (const auto& r : s->records()) {
    if (s->stream().level[r.pos] > 0) continue;
    for (int l = 1; l < 3; l++)
      for (int h = 0; h < 2; h++) EXPECT_EQ(int(r.keys[size_t(l) * 2 + h].size()), r.pos + 1) << r.pos;
  }
  EXPECT_LT(replay_error(m, *s), 1e-4);
}

TEST(Session, HierarchyWithUnlimitedKEqualsFlat) {
  llama_model m = tiny_model({2, 3});
  session_options o;
  o.topk = 400;
  o.meth = method::gsa;
  auto flat = run(m, o, 40, 4, 10);
  o.meth = method::hgsa;
  auto hier = run(m, o, 40, 4, 10);
  EXPECT_LT(test::max_rel_err(all_logits(*hier), all_logits(*flat)), 1e-6);
  // With k = 1 per level the hierarchy differs from flat top-1 only in which chunks it may reach; it still
  // unfolds one chunk per query head at most.
  o.topk = 1;
  auto h1 = run(m, o, 40, 4, 4);
  EXPECT_LT(replay_error(m, *h1), 1e-4);
}

TEST(Session, KZeroEqualsGist) {
  llama_model m = tiny_model({4});
  session_options o;
  o.meth = method::gsa;
  o.topk = 0;
  auto k0 = run(m, o, 33, 5, 10);
  o.meth = method::gist;
  o.topk = -1;
  auto gist = run(m, o, 33, 5, 10);
  EXPECT_EQ(all_logits(*k0), all_logits(*gist));
}

TEST(Session, BaselinesWithUnlimitedBudgetEqualFull) {
  llama_model m = tiny_model({4}, false);
  session_options o;
  o.meth = method::full;
  o.page_size = 4;
  auto full = run(m, o, 29, 4, 10);
  for (method b : {method::streaming, method::quest, method::moba, method::h2o}) {
    SCOPED_TRACE(method_name(b));
    o.meth = b;
    o.budget = 500;
    auto s = run(m, o, 29, 4, 10);
    EXPECT_LT(test::max_rel_err(all_logits(*s), all_logits(*full)), 1e-6);
  }
}

TEST(Session, BatchEqualsSessionsAlone) {
  llama_model m = tiny_model({4});
  session_options o;
  o.meth = method::gsa;
  o.record = true;
  session a(m, o), b(m, o);
  a.prefill(tokens(30, 3));
  b.prefill(tokens(17, 4));
  generate_options g;
  g.max_tokens = 9;
  auto out = generate({&a, &b}, g);
  session a1(m, o), b1(m, o);
  a1.prefill(tokens(30, 3));
  b1.prefill(tokens(17, 4));
  auto oa = generate({&a1}, g), ob = generate({&b1}, g);
  EXPECT_EQ(out[0].ids, oa[0].ids);
  EXPECT_EQ(out[1].ids, ob[0].ids);
  EXPECT_LT(test::max_rel_err(all_logits(a), all_logits(a1)), 1e-5);
  EXPECT_LT(test::max_rel_err(all_logits(b), all_logits(b1)), 1e-5);
}

TEST(Session, FileAndDropTiersEqualMemory) {
  llama_model m = tiny_model({4});
  session_options o;
  o.meth = method::gsa;
  auto mem = run(m, o, 41, 3, 8);
  o.tier = kv::page_tier::file;
  auto file = run(m, o, 41, 3, 8);
  EXPECT_EQ(all_logits(*mem), all_logits(*file));
  EXPECT_GT(file->cache().bytes().file, 0);
  EXPECT_LT(file->cache().bytes().resident, mem->cache().bytes().resident);
  EXPECT_EQ(file->cache().bytes().total(), mem->cache().bytes().total());
  o.meth = method::gist;
  o.tier = kv::page_tier::memory;
  auto gm = run(m, o, 41, 3, 8);
  o.tier = kv::page_tier::drop;
  auto gd = run(m, o, 41, 3, 8);
  EXPECT_EQ(all_logits(*gm), all_logits(*gd));
  EXPECT_GT(gd->cache().bytes().dropped, 0);
}

TEST(Session, BadInputGivesClearErrors) {
  llama_model plain = tiny_model({4}, false);
  llama_model gm = tiny_model({4});
  session_options o;
  o.meth = method::gsa;
  EXPECT_THROW((session{plain, o}), gsa::error);
  EXPECT_THROW(method_from_name("flash"), gsa::error);
  o.budget = 0;
  EXPECT_THROW((session{gm, o}), gsa::error);
  o.budget = -1;
  o.topk = -5;
  EXPECT_THROW((session{gm, o}), gsa::error);
  o.topk = -1;
  session s(gm, o);
  EXPECT_THROW(s.prefill({}), gsa::error);
  EXPECT_THROW(s.prefill(tokens(600, 1)), gsa::error);  // beyond 512 positions
  session s2(gm, o);
  EXPECT_THROW(s2.append({kV + 3}), gsa::error);
  session s3(gm, o);
  generate_options g;
  EXPECT_THROW(generate({&s3}, g), gsa::error);  // nothing to continue from
  session s4(gm, o);
  s4.prefill(tokens(500, 1));
  g.max_tokens = 50;
  EXPECT_THROW(generate({&s4}, g), gsa::error);  // runs past the model's positions
}

TEST(Sampler, GreedyTopKTopPAndSeeds) {
  std::vector<float> lg = {0.1f, 2.0f, 1.9f, -1.0f, 0.5f};
  sampling sp;
  EXPECT_EQ(sampler(sp).sample(lg.data(), 5), 1);
  sp.temperature = 1.0f;
  sp.top_k = 1;
  EXPECT_EQ(sampler(sp).sample(lg.data(), 5), 1);
  sp.top_k = 2;
  sp.seed = 5;
  sampler a(sp), b(sp);
  int seen[5] = {};
  for (int i = 0; i < 400; i++) {
    int x = a.sample(lg.data(), 5);
    EXPECT_EQ(x, b.sample(lg.data(), 5));
    seen[x]++;
  }
  EXPECT_EQ(seen[0] + seen[3] + seen[4], 0) << "top-k 2 keeps tokens 1 and 2 only";
  EXPECT_GT(seen[1], 150);
  EXPECT_GT(seen[2], 150);  // p = e^0.1 / (1 + e^0.1) of the two: about 0.475
  sp.top_k = 0;
  sp.top_p = 0.3f;
  sampler c(sp);
  for (int i = 0; i < 50; i++) EXPECT_EQ(c.sample(lg.data(), 5), 1);
  sp.top_p = 0.0f;
  EXPECT_THROW(sampler{sp}, gsa::error);
}

}  // namespace
}  // namespace gsa::infer
