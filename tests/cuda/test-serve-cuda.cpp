// `gsa serve --device cuda` (issue 13): the continuous-batching scheduler of the server (src/serve/scheduler.h)
// driven directly, without HTTP, over a random model on the CUDA backend in f32 (head dim 64, the decode kernel's;
// GQA 2; chunk 8 with fixed top-2 selection, so gsa unfolds chunks of the prompt), against the same scheduler over
// the CPU copy of the model and against CPU sessions decoded together by infer::generate (what `gsa generate`
// runs): the same greedy tokens for concurrent requests (one batched step per token), for a request that joins
// between steps and for a follow-up turn that continues a held GPU session; the K/V reported in the gpu tier of the
// gauges and of the stats object; bf16 serving runs to the end; what GPU sessions cannot run (--kv-tier file) is
// refused when the scheduler is built, before any request (h2o is accepted).
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "cuda/cuda-test-util.h"
#include "infer/generate.h"
#include "serve/drain-jobs.h"
#include "serve/scheduler.h"
#include "test-models.h"
#include "test-util.h"

namespace gsa::serve {
namespace {

constexpr int kVocab = 4096;  // the demo tokenizer's: the scheduler decodes every sampled id (stop sequences)

tokenizer demo_tokenizer() { return tokenizer::load((test::source_dir() / "models/demo/gsa").string()); }

llama_model random_model(uint64_t seed) {
  model_config c = test::tiny_config(kVocab, 3, 2048);
  c.hidden_size = 96;
  c.intermediate_size = 160;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 64;
  c.gsa = gist::gsa_config_to_json(test::tiny_gsa(kVocab, {8}));  // gist id 4095, top-2 chunks
  llama_model m(c);
  m.init_random(seed, 0.3f);
  return m;
}

llama_model on_gpu(const llama_model& cpu, dtype t = dtype::f32) {
  return to_backend(cpu, get_backend(device::cuda, t));
}

// Random ids below the gist and special tokens.
std::vector<int32_t> prompt(int n, uint64_t seed) {
  rng r(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = int32_t(r.below(4000));
  return t;
}

job_request request(std::vector<int32_t> p, int max_tokens) {
  job_request r;
  r.prompt = std::move(p);
  r.max_tokens = max_tokens;  // greedy (temperature 0)
  return r;
}


void expect_ran_to_length(const job_state& st, int64_t n) {
  EXPECT_EQ(st.finish_reason, "length") << st.error;
  EXPECT_EQ(st.completion_tokens, n);
}

const std::vector<std::vector<int32_t>> kPrompts = {prompt(300, 1), prompt(180, 2), prompt(245, 3)};
constexpr int kTokens = 16;

struct batch_result {
  std::vector<job_state> jobs;
  int steps = 0;
  scheduler_gauges gauges;
  std::string metrics_text;
};

// Three requests submitted together to a scheduler over m (prefill_chunk: scheduler_options'; with the default
// 256 the three prompts, 725 tokens, are admitted over several steps and the longest prefills in pieces).
batch_result serve_together(const llama_model& m, const tokenizer& tok, infer::method meth, int prefill_chunk = 256) {
  metrics met;
  scheduler_options o;
  o.session.meth = meth;
  o.max_sessions = 4;
  o.prefill_chunk = prefill_chunk;
  scheduler s(m, tok, o, met);
  std::vector<std::shared_ptr<job>> js;
  for (const auto& p : kPrompts) {
    job_request r = request(p, kTokens);
    r.stats = true;
    js.push_back(s.submit(r));
  }
  batch_result out;
  out.steps = drain(s, js);
  for (auto& j : js) out.jobs.push_back(j->state());
  out.gauges = s.gauges();
  out.metrics_text = met.render(out.gauges);
  return out;
}

TEST(CudaServe, ConcurrentRequestsEqualTheCpuSchedulerAndCpuSessions) {
  REQUIRE_GPU();
  const tokenizer tok = demo_tokenizer();
  const llama_model cpu_m = random_model(21);
  const llama_model gpu_m = on_gpu(cpu_m);
  for (infer::method meth : {infer::method::gsa, infer::method::full}) {
    SCOPED_TRACE(infer::method_name(meth));
    const batch_result got = serve_together(gpu_m, tok, meth);
    const batch_result cpu = serve_together(cpu_m, tok, meth);
    const batch_result whole = serve_together(gpu_m, tok, meth, 0);  // every prompt in one piece
    // What `gsa generate` computes: CPU sessions prefilled with each prompt, decoded together.
    std::vector<std::unique_ptr<infer::session>> ss;
    std::vector<infer::session*> batch;
    for (const auto& p : kPrompts) {
      infer::session_options so;
      so.meth = meth;
      ss.push_back(std::make_unique<infer::session>(cpu_m, so));
      ss.back()->prefill(p);
      batch.push_back(ss.back().get());
    }
    infer::generate_options g;
    g.max_tokens = kTokens;
    const auto ref = infer::generate(batch, g);

    EXPECT_EQ(got.steps, cpu.steps) << "the GPU scheduler steps as the CPU one";
    EXPECT_EQ(whole.steps, kTokens) << "prompts in one piece: one batched step per token for the three requests";
    for (size_t i = 0; i < kPrompts.size(); i++) {
      SCOPED_TRACE("request " + std::to_string(i));
      expect_ran_to_length(got.jobs[i], kTokens);
      EXPECT_EQ(got.jobs[i].ids, cpu.jobs[i].ids) << "GPU scheduler vs CPU scheduler";
      EXPECT_EQ(got.jobs[i].ids, ref[i].ids) << "GPU scheduler vs CPU sessions (infer::generate)";
      EXPECT_EQ(whole.jobs[i].ids, ref[i].ids) << "GPU scheduler, prompts in one piece, vs infer::generate";
      EXPECT_EQ(got.jobs[i].text, tok.decode(ref[i].ids));
      EXPECT_GT(got.jobs[i].stats["kv_bytes"]["gpu"].get<int64_t>(), 0) << "the session's K/V live on the GPU";
      EXPECT_EQ(cpu.jobs[i].stats["kv_bytes"]["gpu"].get<int64_t>(), 0);
      // Every step attended as many keys and, for gsa, unfolded the same chunks of the prompt on both devices (the
      // mean of attended keys is summed in another order on the GPU path: compared to rounding).
      const auto& gs = got.jobs[i].stats["steps"];
      const auto& cs = cpu.jobs[i].stats["steps"];
      ASSERT_EQ(gs.size(), cs.size());
      for (size_t k = 0; k < gs.size(); k++) {
        EXPECT_EQ(gs[k]["rows"], cs[k]["rows"]) << "step " << k;
        EXPECT_EQ(gs[k]["unfolded"], cs[k]["unfolded"]) << "step " << k;
        EXPECT_NEAR(gs[k]["attended_tokens"].get<double>(), cs[k]["attended_tokens"].get<double>(), 1e-9)
            << "step " << k;
      }
      if (meth == infer::method::gsa) {
        EXPECT_FALSE(gs.back()["unfolded"].empty()) << "gsa recalled chunks";
      }
    }
    // The three sessions stay held, idle, with their K/V in GPU memory; /metrics says so.
    EXPECT_EQ(got.gauges.idle, 3);
    EXPECT_GT(got.gauges.kv_gpu, 0);
    EXPECT_EQ(cpu.gauges.kv_gpu, 0);
    EXPECT_NE(got.metrics_text.find("gsa_kv_bytes{tier=\"gpu\"} " + std::to_string(got.gauges.kv_gpu)),
              std::string::npos);
  }
}

// One scheduler's script: A alone for 4 steps, then B joins; then a follow-up turn that continues A's held session.
struct script_result {
  job_state a, b, c;
  int64_t held = 0;
};

script_result join_and_follow_up(const llama_model& m, const tokenizer& tok) {
  metrics met;
  scheduler_options o;  // gsa
  o.max_sessions = 4;
  scheduler s(m, tok, o, met);
  auto a = s.submit(request(kPrompts[0], 14));
  for (int i = 0; i < 4; i++) s.step();
  auto b = s.submit(request(kPrompts[1], 10));
  s.step();
  EXPECT_EQ(s.gauges().active, 2) << "B joined A's batch";
  drain(s, {a, b});
  script_result out;
  out.a = a->state();
  out.b = b->state();
  // A's held session: its prompt and every generated token but the last.
  std::vector<int32_t> follow = kPrompts[0];
  follow.insert(follow.end(), out.a.ids.begin(), out.a.ids.end() - 1);
  out.held = int64_t(follow.size());
  const auto more = prompt(37, 4);  // crosses chunk boundaries: gists are inserted while appending
  follow.insert(follow.end(), more.begin(), more.end());
  auto c = s.submit(request(follow, 12));
  drain(s, {c});
  out.c = c->state();
  return out;
}

TEST(CudaServe, JoinAndFollowUpEqualTheCpuScheduler) {
  REQUIRE_GPU();
  const tokenizer tok = demo_tokenizer();
  const llama_model cpu_m = random_model(22);
  const llama_model gpu_m = on_gpu(cpu_m);
  const script_result got = join_and_follow_up(gpu_m, tok);
  const script_result ref = join_and_follow_up(cpu_m, tok);
  expect_ran_to_length(got.a, 14);
  expect_ran_to_length(got.b, 10);
  expect_ran_to_length(got.c, 12);
  EXPECT_EQ(got.a.ids, ref.a.ids);
  EXPECT_EQ(got.b.ids, ref.b.ids);
  EXPECT_EQ(got.c.reused_tokens, got.held) << "the follow-up continued A's session on the GPU";
  EXPECT_EQ(ref.c.reused_tokens, ref.held);
  EXPECT_EQ(got.c.ids, ref.c.ids);
}

TEST(CudaServe, Bf16ServesToTheEnd) {
  REQUIRE_GPU();
  const tokenizer tok = demo_tokenizer();
  const llama_model cpu_m = random_model(23);
  const llama_model gpu_m = on_gpu(cpu_m, dtype::bf16);
  const batch_result got = serve_together(gpu_m, tok, infer::method::gsa, 0);
  EXPECT_EQ(got.steps, kTokens);
  for (const auto& st : got.jobs) {
    expect_ran_to_length(st, kTokens);
    for (int32_t id : st.ids) EXPECT_TRUE(id >= 0 && id < kVocab);
  }
}

TEST(CudaServe, WhatGpuSessionsCannotRunIsRefusedUpFront) {
  REQUIRE_GPU();
  const tokenizer tok = demo_tokenizer();
  const llama_model cpu_m = random_model(24);
  const llama_model gpu_m = on_gpu(cpu_m);
  metrics met;
  auto expect_refused = [&](scheduler_options o, const std::string& what) {
    try {
      scheduler s(gpu_m, tok, o, met);
      ADD_FAILURE() << "no error; expected one mentioning '" << what << "'";
    } catch (const gsa::error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("--device cpu"), std::string::npos) << e.what();
    }
    EXPECT_NO_THROW(scheduler(cpu_m, tok, o, met)) << "the CPU serves it";
  };
  scheduler_options o;
  o.session.meth = infer::method::h2o;  // runs on the GPU since its weights come from the decode kernel
  EXPECT_NO_THROW(scheduler(gpu_m, tok, o, met));
  o.session.meth = infer::method::gsa;
  o.session.tier = kv::page_tier::file;
  expect_refused(o, "--kv-tier file");
}

}  // namespace
}  // namespace gsa::serve
