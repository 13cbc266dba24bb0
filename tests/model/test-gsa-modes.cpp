// The model in the three GSA training modes: the gist stream and plan built by gist/ reproduce transformers on
// the same stream and mask; whole-model gradients match finite differences in every mode (with the selection
// frozen, as training treats it); and a tiny model overfits a fixed sequence in every mode.
#include <nlohmann/json.hpp>

#include <fstream>

#include "gist/plan.h"
#include "gist/stream.h"
#include "io/safetensors.h"
#include "model/gsa-plans.h"
#include "model/llama.h"
#include "test-models.h"
#include "test-util.h"
#include "train/optimizer.h"

namespace gsa {
namespace {

model_config tiny_config() { return test::tiny_config(64, 2, 4096); }

using test::tiny_gsa;

TEST(GsaModes, GistStreamAndPlanMatchTransformers) {
  auto dir = test::source_dir() / "tests/data/golden";
  llama_model m = load_model((dir / "llama").string());
  model_config gcfg = load_model_config((dir / "llama-gist/config.json").string());
  gist::gsa_config cfg = gist::gsa_config_from_json(gcfg.gsa);
  std::vector<int32_t> raw = nlohmann::json::parse(std::ifstream(dir / "llama-gist/raw_ids.json"));
  gist::stream s = gist::build_stream(raw.data(), int(raw.size()), cfg);
  auto g = safetensors_file::open((dir / "llama-gist/golden.safetensors").string());
  Tensor ids = g.view("input_ids"), pos = g.view("position_ids");
  ASSERT_EQ(s.size(), ids.numel());
  for (int i = 0; i < s.size(); i++) {
    EXPECT_EQ(s.ids[i], ids.i32()[i]) << i;
    EXPECT_EQ(s.pos[i], pos.i32()[i]) << i;
  }
  plan_provider plans = make_gsa_plans(m, cfg, s, gist::train_mode::compress);
  forward_state st;
  forward(m, st, s.ids, s.pos, s.labels, &plans);
  Tensor ref = g.load_f32("logits");
  Tensor got = logits(m, st);
  EXPECT_LT(test::max_rel_err(got.f32(), ref.f32(), got.numel()), 1e-4);
  EXPECT_NEAR(st.loss(), g.load_f32("loss").f32()[0], 1e-4);
  llama_weights grads = make_grads(m);
  backward(m, st, grads);
  auto rg = safetensors_file::open((dir / "llama-gist/grads.safetensors").string());
  for (auto& [name, t] : grad_list(m, grads)) {
    Tensor r = rg.load_f32(name, t->shape());
    EXPECT_LT(test::max_rel_err(t->f32(), r.f32(), t->numel()), 1e-4) << name;
  }
}

struct mode_case {
  gist::train_mode mode;
  std::vector<int> chunk;
  bool per_token = false;
};

std::vector<int32_t> random_tokens(int n, int V, uint64_t seed) {
  rng r(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = int32_t(r.below(uint64_t(V - 4)));  // gist ids are the top of the vocabulary
  return t;
}

// Directional derivative along a random direction u: (L(w + eps u) - L(w - eps u)) / 2 eps vs <grad, u>.
TEST(GsaModes, WholeModelGradientMatchesFiniteDifferences) {
  const mode_case cases[] = {{gist::train_mode::compress, {4}},
                             {gist::train_mode::unfold, {4}},
                             {gist::train_mode::suffix_unfold, {4}},
                             {gist::train_mode::unfold, {3, 2}},
                             {gist::train_mode::unfold, {4}, true},
                             {gist::train_mode::suffix_unfold, {4}, true}};
  for (const auto& mc : cases) {
    SCOPED_TRACE(std::string(gist::train_mode_name(mc.mode)) + (mc.per_token ? " per token" : ""));
    model_config c = tiny_config();
    llama_model m(c);
    m.init_random(7, 0.2f);
    gist::gsa_config cfg = tiny_gsa(int(c.vocab_size), mc.chunk);
    cfg.mode = mc.mode;
    cfg.select_per_token = mc.per_token;
    auto raw = random_tokens(40, int(c.vocab_size), 11);
    gist::stream s = gist::build_stream(raw.data(), int(raw.size()), cfg);
    int ctx_end = s.size() - 6;
    // Record the plans chosen at the unperturbed weights, then replay them (selection frozen).
    std::vector<cpu::attn_plan> rec;
    plan_provider live = make_gsa_plans(m, cfg, s, mc.mode, ctx_end);
    plan_provider recorder = [&](int l, const layer_qk& qk) {
      rec.push_back(live(l, qk));
      return rec.back();
    };
    forward_state st;
    forward(m, st, s.ids, s.pos, s.labels, &recorder);
    if (mc.mode != gist::train_mode::compress) {
      auto base = gist::plan_compress(s, cfg, mc.mode == gist::train_mode::suffix_unfold ? ctx_end : -1);
      EXPECT_GT(cpu::attended_pairs(rec[1], 2), cpu::attended_pairs(base, 2)) << "layer 1 unfolds some chunks";
      EXPECT_EQ(cpu::attended_pairs(rec[0], 2), cpu::attended_pairs(base, 2)) << "layer 0 is dense (gist mask only)";
    }
    plan_provider frozen = frozen_plans(rec);
    llama_weights g = make_grads(m);
    backward(m, st, g);
    rng r(3);
    auto params = m.parameters();
    auto gl = grad_list(m, g);
    std::vector<std::vector<float>> u(params.size());
    double dot = 0;
    for (size_t i = 0; i < params.size(); i++) {
      u[i] = test::randn(size_t(params[i].second->numel()), r);
      for (int64_t j = 0; j < params[i].second->numel(); j++) dot += double(u[i][j]) * gl[i].second->f32()[j];
    }
    auto loss_at = [&](float eps) {
      llama_model p = m;
      for (auto& [n, t] : p.parameters()) *t = t->clone();
      auto pp = p.parameters();
      for (size_t i = 0; i < pp.size(); i++)
        for (int64_t j = 0; j < pp[i].second->numel(); j++) pp[i].second->f32()[j] += eps * u[i][j];
      forward_state s2;
      forward(p, s2, s.ids, s.pos, s.labels, &frozen);
      return s2.loss();
    };
    const float eps = 1e-3f;
    double fd = (loss_at(eps) - loss_at(-eps)) / (2.0 * eps);
    EXPECT_NEAR(fd, dot, 2e-2 * std::fabs(dot) + 1e-4) << "fd " << fd << " analytic " << dot;
  }
}

// Per-token selection is causal: changing the tokens after row i changes nothing at rows <= i. Per-chunk
// selection (DESIGN 1.5) is not: a chunk's selection takes the max over all its rows, so a later token of the
// chunk can change which chunks an earlier row sees. That leak is what a model trained per chunk learns to rely
// on and cannot have when decoding (docs/results.md, "Selection per chunk leaks the future").
TEST(GsaModes, PerTokenSelectionIsCausalPerChunkIsNot) {
  model_config c = tiny_config();
  llama_model m(c);
  m.init_random(9, 0.5f);
  int chunk_leaks = 0;
  for (bool per_token : {true, false}) {
    for (int trial = 0; trial < 12; trial++) {
      gist::gsa_config cfg = tiny_gsa(int(c.vocab_size), {4});
      cfg.topk = 1;
      cfg.mode = gist::train_mode::unfold;
      cfg.select_per_token = per_token;
      auto raw = random_tokens(40, int(c.vocab_size), 100 + uint64_t(trial));
      auto changed = raw;
      const int cut = 29 + trial % 3;  // a raw token inside the last chunks; everything after it changes
      rng r{uint64_t(trial)};
      for (int i = cut + 1; i < int(raw.size()); i++) changed[i] = int32_t(r.below(uint64_t(c.vocab_size - 4)));
      auto run = [&](const std::vector<int32_t>& t, gist::stream& s) {
        s = gist::build_stream(t.data(), int(t.size()), cfg);
        plan_provider plans = make_gsa_plans(m, cfg, s, cfg.mode);
        forward_state st;
        forward(m, st, s.ids, s.pos, s.labels, &plans);
        return logits(m, st);
      };
      gist::stream s1, s2;
      Tensor a = run(raw, s1), b = run(changed, s2);
      int row = 0;  // the stream row of raw token `cut`
      while (s1.is_gist(row) || s1.pos[row] < cut) row++;
      const int64_t V = c.vocab_size;
      const bool same = std::equal(a.f32(), a.f32() + (row + 1) * V, b.f32());
      if (per_token) {
        EXPECT_TRUE(same) << "trial " << trial << ": rows <= " << row << " changed";
      } else {
        chunk_leaks += !same;
      }
    }
  }
  EXPECT_GT(chunk_leaks, 0) << "per-chunk selection never let a later token in";
}

TEST(GsaModes, TinyModelOverfitsInEveryMode) {
  for (auto mode : {gist::train_mode::compress, gist::train_mode::unfold, gist::train_mode::suffix_unfold}) {
    SCOPED_TRACE(gist::train_mode_name(mode));
    model_config c = tiny_config();
    llama_model m(c);
    m.init_random(5);
    gist::gsa_config cfg = tiny_gsa(int(c.vocab_size));
    cfg.mode = mode;
    auto raw = random_tokens(48, int(c.vocab_size), 21);
    gist::stream s = gist::build_stream(raw.data(), int(raw.size()), cfg);
    adamw_optimizer opt(m);
    llama_weights g = make_grads(m);
    double first = 0, last = 0;
    for (int step = 0; step < 150; step++) {
      plan_provider plans = make_gsa_plans(m, cfg, s, mode, s.size() - 8);
      forward_state st;
      forward(m, st, s.ids, s.pos, s.labels, &plans);
      zero_grads(g);
      backward(m, st, g);
      opt.step(m, g, 1e-2f);
      if (step == 0) first = st.loss();
      last = st.loss();
    }
    EXPECT_GT(first, 3.5);  // ~ln(64) at random init
    EXPECT_LT(last, 0.5) << "from " << first;
  }
}

}  // namespace
}  // namespace gsa
