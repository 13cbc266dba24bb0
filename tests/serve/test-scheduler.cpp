// The continuous-batching scheduler without sockets (issue 13 item 3), on the shipped demo GSA model: a job alone
// computes what `gsa generate` computes (infer::generate on a prefilled session); jobs submitted together decode
// in one batched step each (and equal infer::generate over the same batch); a follow-up prompt reuses the held
// session's KV and equals continuing that session; the least recently used idle session is dropped at
// --max-sessions; a cancelled job stops; stop sequences and end-of-sequence ids end a job.
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "infer/generate.h"
#include "demo-fixture.h"
#include "drain-jobs.h"
#include "serve/scheduler.h"

namespace gsa::serve {
namespace {

struct fixture : demo_fixture {

  std::vector<int32_t> prompt(const std::string& text) const { return tok->encode(text, true); }
  job_request request(const std::string& text, int max_tokens, float temperature = 0, uint64_t seed = 0) const {
    job_request r;
    r.prompt = prompt(text);
    r.max_tokens = max_tokens;
    r.samp.temperature = temperature;
    r.samp.seed = seed;
    return r;
  }
  // What infer::generate gives for the same prompts in one batch (seeds seed, seed + 1, ...).
  std::vector<infer::generation> reference(const std::vector<std::string>& texts, int max_tokens, float temperature,
                                           uint64_t seed) const {
    std::vector<std::unique_ptr<infer::session>> ss;
    std::vector<infer::session*> batch;
    for (const auto& t : texts) {
      ss.push_back(std::make_unique<infer::session>(*model, infer::session_options{}));
      ss.back()->prefill(prompt(t));
      batch.push_back(ss.back().get());
    }
    infer::generate_options g;
    g.max_tokens = max_tokens;
    g.samp.temperature = temperature;
    g.samp.seed = seed;
    return infer::generate(batch, g);
  }
};

using Scheduler = fixture;

TEST_F(Scheduler, AloneEqualsGenerate) {
  metrics met;
  scheduler s(*model, *tok, {}, met);
  auto j = s.submit(request("Once upon a time", 20, 0.8f, 42));
  drain(s, {j});
  const auto st = j->state();
  const auto ref = reference({"Once upon a time"}, 20, 0.8f, 42);
  EXPECT_EQ(st.ids, ref[0].ids);
  EXPECT_EQ(st.text, tok->decode(ref[0].ids));
  EXPECT_EQ(st.finish_reason, "length");
  EXPECT_EQ(st.completion_tokens, 20);
  EXPECT_EQ(st.prompt_tokens, int64_t(prompt("Once upon a time").size()));
}

TEST_F(Scheduler, JobsSubmittedTogetherDecodeInOneBatch) {
  metrics met;
  scheduler_options o;
  o.max_sessions = 4;
  scheduler s(*model, *tok, o, met);
  auto a = s.submit(request("The king said", 24, 0.7f, 5));
  auto b = s.submit(request("In the morning the", 24, 0.7f, 6));
  const int steps = drain(s, {a, b});
  EXPECT_EQ(steps, 24);  // one step per token for both, not one per token per job
  const auto ref = reference({"The king said", "In the morning the"}, 24, 0.7f, 5);
  EXPECT_EQ(a->state().ids, ref[0].ids);
  EXPECT_EQ(b->state().ids, ref[1].ids);
  EXPECT_NE(met.render(s.gauges()).find("gsa_decode_batch_size_bucket{le=\"2\"} 23"), std::string::npos)
      << met.render(s.gauges());
}

TEST_F(Scheduler, JoinsBetweenSteps) {
  metrics met;
  scheduler s(*model, *tok, {}, met);
  auto a = s.submit(request("The king said", 30));
  for (int i = 0; i < 5; i++) s.step();
  auto b = s.submit(request("In the morning the", 10));
  s.step();
  EXPECT_EQ(s.gauges().active, 2);
  drain(s, {a, b});
  EXPECT_EQ(a->state().completion_tokens, 30);
  EXPECT_EQ(b->state().completion_tokens, 10);
  EXPECT_EQ(s.gauges().active, 0);
  EXPECT_EQ(s.gauges().idle, 2);
}

TEST_F(Scheduler, FollowUpReusesTheHeldSession) {
  metrics met;
  scheduler s(*model, *tok, {}, met);
  auto first = s.submit(request("The old man", 12));
  drain(s, {first});
  const auto a = first->state();
  // The held session holds the prompt and every generated token but the last (never run).
  std::vector<int32_t> held = prompt("The old man");
  held.insert(held.end(), a.ids.begin(), a.ids.end() - 1);
  std::vector<int32_t> follow = held;
  for (int32_t t : tok->encode(" and then")) follow.push_back(t);
  job_request r;
  r.prompt = follow;
  r.max_tokens = 10;
  auto second = s.submit(r);
  drain(s, {second});
  const auto b = second->state();
  EXPECT_EQ(b.reused_tokens, int64_t(held.size()));
  EXPECT_EQ(b.prompt_tokens, int64_t(follow.size()));
  // The same as continuing the first session by hand.
  infer::session ref(*model, {});
  ref.prefill(prompt("The old man"));
  ref.append(std::vector<int32_t>(follow.begin() + int64_t(prompt("The old man").size()), follow.end()));
  infer::generate_options g;
  g.max_tokens = 10;
  EXPECT_EQ(b.ids, infer::generate({&ref}, g)[0].ids);
  EXPECT_NE(met.render(s.gauges()).find("gsa_prompt_tokens_reused_total " + std::to_string(held.size())),
            std::string::npos);
  // reuse = false prefills again.
  r.reuse = false;
  auto third = s.submit(r);
  drain(s, {third});
  EXPECT_EQ(third->state().reused_tokens, 0);
}

TEST_F(Scheduler, DropsTheLeastRecentlyUsedIdleSession) {
  metrics met;
  scheduler_options o;
  o.max_sessions = 2;
  scheduler s(*model, *tok, o, met);
  std::vector<std::vector<int32_t>> held;
  for (const char* t : {"First text", "Second text", "Third text"}) {
    auto j = s.submit(request(t, 3));
    drain(s, {j});
    auto h = prompt(t);
    const auto ids = j->state().ids;
    h.insert(h.end(), ids.begin(), ids.end() - 1);
    held.push_back(h);
  }
  EXPECT_EQ(s.gauges().idle, 2);
  EXPECT_NE(met.render(s.gauges()).find("gsa_sessions_evicted_total{action=\"dropped\"} 1"), std::string::npos);
  job_request r;
  r.max_tokens = 2;
  r.prompt = held[0];  // its session was the least recently used: dropped
  auto j0 = s.submit(r);
  drain(s, {j0});
  EXPECT_EQ(j0->state().reused_tokens, 0);
  r.prompt = held[2];  // still held
  auto j2 = s.submit(r);
  drain(s, {j2});
  EXPECT_EQ(j2->state().reused_tokens, int64_t(held[2].size()));
  EXPECT_LE(s.gauges().active + s.gauges().idle, 2);
}

TEST_F(Scheduler, MaxSessionsCapsTheBatch) {
  metrics met;
  scheduler_options o;
  o.max_sessions = 1;
  scheduler s(*model, *tok, o, met);
  auto a = s.submit(request("One", 4));
  auto b = s.submit(request("Two", 4));
  s.step();
  EXPECT_EQ(s.gauges().active, 1);
  EXPECT_EQ(s.gauges().queued, 1);
  drain(s, {a, b});
  EXPECT_EQ(b->state().completion_tokens, 4);
}

TEST_F(Scheduler, CancelStopsAJob) {
  metrics met;
  scheduler s(*model, *tok, {}, met);
  auto j = s.submit(request("A long story", 200));
  for (int i = 0; i < 3; i++) s.step();
  j->cancel();
  s.step();
  const auto st = j->state();
  EXPECT_TRUE(st.done);
  EXPECT_EQ(st.finish_reason, "cancelled");
  EXPECT_LT(st.completion_tokens, 200);
  auto q = s.submit(request("Never admitted", 5));
  q->cancel();
  s.step();
  EXPECT_EQ(q->state().finish_reason, "cancelled");
  EXPECT_EQ(q->state().completion_tokens, 0);
}

TEST_F(Scheduler, StopSequenceAndEndOfSequenceId) {
  metrics met;
  scheduler s(*model, *tok, {}, met);
  auto full = s.submit(request("The queen", 30));
  drain(s, {full});
  const std::string text = full->state().text;
  ASSERT_GT(text.size(), 12u);
  const std::string stop = text.substr(6, 3);
  const size_t cut = text.find(stop);
  job_request r = request("The queen", 30);
  r.stop = {stop};
  r.reuse = false;
  auto j = s.submit(r);
  drain(s, {j});
  EXPECT_EQ(j->state().text, text.substr(0, cut));
  EXPECT_EQ(j->state().finish_reason, "stop");

  scheduler_options o;
  o.stop_ids = {full->state().ids[3]};
  scheduler e(*model, *tok, o, met);
  auto k = e.submit(request("The queen", 30));
  drain(e, {k});
  const auto st = k->state();
  EXPECT_EQ(st.finish_reason, "stop");
  const auto& ids = full->state().ids;
  const size_t first = size_t(std::find(ids.begin(), ids.end(), ids[3]) - ids.begin());
  EXPECT_EQ(st.completion_tokens, int64_t(first + 1));  // the end-of-sequence id counts, its text is not sent
  EXPECT_EQ(st.text, tok->decode(std::vector<int32_t>(ids.begin(), ids.begin() + int64_t(first))));
}

TEST_F(Scheduler, StatsObject) {
  metrics met;
  scheduler s(*model, *tok, {}, met);
  job_request r = request(std::string(400, 'a') + " the end", 5);
  r.stats = true;
  auto j = s.submit(r);
  drain(s, {j});
  const auto st = j->state().stats;
  EXPECT_EQ(st["method"], "gsa");
  EXPECT_EQ(st["steps"].size(), 4u);  // the last token is never run
  EXPECT_GT(st["steps"][0]["attended_tokens"].get<double>(), 0);
  EXPECT_GT(st["kv_bytes"]["memory"].get<int64_t>(), 0);
  EXPECT_GT(st["budget"].get<int64_t>(), 0);
}

TEST_F(Scheduler, FileTierSpillsAndIsReported) {
  metrics met;
  scheduler_options o;
  o.session.tier = kv::page_tier::file;
  scheduler s(*model, *tok, o, met);
  auto j = s.submit(request(std::string(300, 'b') + " and so on", 4));
  drain(s, {j});
  const auto g = s.gauges();
  EXPECT_GT(g.kv_file, 0);  // raw pages outside the window live in the session's file
  EXPECT_GT(g.kv_memory, 0);
  EXPECT_NE(met.render(g).find("gsa_kv_bytes{tier=\"file\"} " + std::to_string(g.kv_file)), std::string::npos);
  s.drop_idle();
  s.step();
  EXPECT_EQ(s.gauges().idle, 0);
  EXPECT_EQ(s.gauges().kv_file, 0);
}

TEST(SchedulerOptions, RefusesWhatTheModelCannotRun) {
  llama_model m = load_model(std::string(GSA_SOURCE_DIR) + "/models/demo/full");
  tokenizer t = tokenizer::load(std::string(GSA_SOURCE_DIR) + "/models/demo/full");
  metrics met;
  scheduler_options o;  // gsa on a model without gists
  EXPECT_THROW(scheduler(m, t, o, met), gsa::error);
  o.session.meth = infer::method::full;
  o.max_sessions = 0;
  EXPECT_THROW(scheduler(m, t, o, met), gsa::error);
}

}  // namespace
}  // namespace gsa::serve
