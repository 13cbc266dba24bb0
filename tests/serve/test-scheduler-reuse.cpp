// Held sessions in the scheduler (issue 13): a prompt that shares only a prefix with a held conversation cuts
// that session back to a chunk boundary at or before the common prefix and computes only the rest; its greedy
// text equals a fresh request's (reuse off) and continuing the same kept prefix by hand; the reused tokens are
// counted. With max_spilled, an evicted idle session goes to its KV file instead of being dropped and comes
// back, equal, when a request continues it; /metrics counts spilled, dropped, restored and reused sessions.
// On the demo GSA model (unfold-trained, per-token selection: its prefill computes rows as decoding does) and on
// random tiny models with the demo tokenizer.
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "infer/generate.h"
#include "demo-fixture.h"
#include "drain-jobs.h"
#include "serve/scheduler.h"
#include "test-models.h"

namespace gsa::serve {
namespace {

struct reuse_fixture : demo_fixture {
  static job_state run(scheduler& s, const std::vector<int32_t>& prompt, int max_tokens, bool reuse = true) {
    job_request r;
    r.prompt = prompt;
    r.max_tokens = max_tokens;
    r.reuse = reuse;
    r.stats = true;
    auto j = s.submit(r);
    drain(s, {j});
    return j->state();
  }
  // What a session that computed only prompt[0, keep) -- prefilled up to `prefilled`, decoded after -- then the
  // rest of the prompt generates, greedy.
  static std::vector<int32_t> by_hand(const llama_model& m, const infer::session_options& o,
                                      const std::vector<int32_t>& prompt, int prefilled, int keep, int max_tokens) {
    infer::session s(m, o);
    s.prefill(std::vector<int32_t>(prompt.begin(), prompt.begin() + prefilled));
    if (keep > prefilled) {
      s.append(std::vector<int32_t>(prompt.begin() + prefilled, prompt.begin() + keep));
      infer::run_pending({&s});
    }
    s.append(std::vector<int32_t>(prompt.begin() + keep, prompt.end()));
    infer::generate_options g;
    g.max_tokens = max_tokens;
    return infer::generate({&s}, g)[0].ids;
  }
  static bool has(const std::string& text, const std::string& line) { return text.find(line) != std::string::npos; }
};

using SchedulerReuse = reuse_fixture;

// The held session holds the first prompt and every generated token but the last.
std::vector<int32_t> held_tokens(const std::vector<int32_t>& prompt, const job_state& st) {
  std::vector<int32_t> h = prompt;
  h.insert(h.end(), st.ids.begin(), st.ids.end() - 1);
  return h;
}

std::vector<int32_t> cat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Checks, for one scheduler configuration, a second prompt that diverges from the held conversation inside its
// first prompt and one that diverges inside its generated text.
// fresh_equal: the prompt's continued rows compute what a prefill of them computes (not for quest, whose decoded
// rows attend a budget of pages where its prefill attends every earlier token).
void check_partial_reuse(const llama_model& m, const tokenizer& tok, scheduler_options o, int chunk,
                         bool fresh_equal = true) {
  const std::vector<int32_t> first = tok.encode(
      "The old man walked down to the river in the morning and sat on the stone bridge for a long while", true);
  const std::vector<int32_t> other = tok.encode(" and then the queen said nothing at all");
  ASSERT_GT(int(first.size()), 3 * chunk);
  struct turn {
    const char* what;
    int common;  // tokens shared with the held conversation
  };
  metrics met;
  scheduler s(m, tok, o, met);
  const job_state a = reuse_fixture::run(s, first, 16);
  const std::vector<int32_t> held = held_tokens(first, a);
  int64_t reused_total = 0;
  for (const turn t : {turn{"inside the first prompt", int(first.size()) - 5},
                       turn{"inside the generated text", int(first.size()) + 6}}) {
    SCOPED_TRACE(t.what);
    const std::vector<int32_t> prompt = cat(std::vector<int32_t>(held.begin(), held.begin() + t.common), other);
    const int keep = t.common / chunk * chunk;  // the chunk boundary at or before the common prefix
    const job_state b = reuse_fixture::run(s, prompt, 12);
    EXPECT_EQ(b.reused_tokens, keep);
    EXPECT_EQ(b.session, "cut");
    EXPECT_EQ(b.stats["session"], "cut");
    EXPECT_EQ(b.stats["prompt_tokens_reused"], keep);
    reused_total += keep;
    // As a session that only ever computed the kept tokens (prefilled as far as the held one was), then the rest.
    const int prefilled = std::min(keep, int(first.size()));
    EXPECT_EQ(b.ids, reuse_fixture::by_hand(m, o.session, prompt, prefilled, keep, 12));
    // As a fresh request (the whole prompt prefilled), greedy.
    const job_state c = reuse_fixture::run(s, prompt, 12, false);
    EXPECT_EQ(c.session, "new");
    EXPECT_EQ(c.reused_tokens, 0);
    if (fresh_equal) {
      EXPECT_EQ(b.ids, c.ids);
      EXPECT_EQ(tok.decode(b.ids), tok.decode(c.ids));
    }
    // Back to the first conversation for the next turn.
    s.drop_idle();
    s.step();
    reuse_fixture::run(s, first, 16);
  }
  const std::string text = met.render(s.gauges());
  EXPECT_TRUE(reuse_fixture::has(text, "gsa_prompt_tokens_reused_total " + std::to_string(reused_total))) << text;
  EXPECT_TRUE(reuse_fixture::has(text, "gsa_sessions_reused_total{how=\"cut\"} 2")) << text;
}

TEST_F(SchedulerReuse, PartialPrefixOnTheDemoModel) {
  scheduler_options o;
  check_partial_reuse(*model, *tok, o, 8);
}

TEST_F(SchedulerReuse, PartialPrefixOnRandomModels) {
  // Random models over the demo tokenizer's vocabulary; gsa unfold-trained with per-token selection (so that its
  // prefill computes rows as decoding does), full attention, and quest on a plain model.
  const int64_t V = model->config.vocab_size;
  struct c {
    infer::method meth;
    bool gsa;
  };
  for (const c cs : {c{infer::method::gsa, true}, c{infer::method::full, false}, c{infer::method::quest, false}}) {
    SCOPED_TRACE(infer::method_name(cs.meth));
    model_config mc = test::tiny_config(V, 3, 1024);
    if (cs.gsa) {
      gist::gsa_config g = test::tiny_gsa(int(V), {4});
      g.mode = gist::train_mode::unfold;
      g.select_per_token = true;
      mc.gsa = gist::gsa_config_to_json(g);
    }
    llama_model m(mc);
    m.init_random(21, 0.3f);
    scheduler_options o;
    o.session.meth = cs.meth;
    o.session.page_size = 4;
    if (cs.meth == infer::method::quest) o.session.budget = 16;
    check_partial_reuse(m, *tok, o, cs.gsa ? 4 : 1, cs.meth != infer::method::quest);
  }
}

TEST_F(SchedulerReuse, WholeBeforeCutAndNothingBelowAChunk) {
  metrics met;
  scheduler s(*model, *tok, {}, met);
  const std::vector<int32_t> first = tok->encode("Once upon a time there was a small village by the sea", true);
  const job_state a = run(s, first, 10);
  const std::vector<int32_t> held = held_tokens(first, a);
  // Shares fewer tokens than a chunk (8): nothing to keep, prefilled anew.
  const job_state b = run(s, cat(std::vector<int32_t>(held.begin(), held.begin() + 5), tok->encode(" xyz")), 4);
  EXPECT_EQ(b.reused_tokens, 0);
  EXPECT_EQ(b.session, "new");
  // The held conversation itself plus more: continued whole (no cut), as before.
  const job_state c = run(s, cat(held, tok->encode(" and so")), 4);
  EXPECT_EQ(c.session, "whole");
  EXPECT_EQ(c.reused_tokens, int64_t(held.size()));
  // A prompt that is a strict prefix of a held conversation: cut so that at least its last token is computed.
  ASSERT_GE(held.size(), 16u);
  const std::vector<int32_t> pre(held.begin(), held.begin() + 16);
  const job_state d = run(s, pre, 4);
  EXPECT_EQ(d.session, "cut");
  EXPECT_EQ(d.reused_tokens, 8);
  // Shares a chunk but leaves more to compute than it keeps: prefilled anew, the held session kept whole for
  // later requests (the cut would consume its tail; docs/serve.md measures it).
  const job_state e = run(s, cat(std::vector<int32_t>(held.begin(), held.begin() + 9), std::vector<int32_t>(12, 7)), 2);
  EXPECT_EQ(e.session, "new");
  EXPECT_EQ(e.reused_tokens, 0);
  EXPECT_TRUE(has(met.render(s.gauges()), "gsa_sessions_reused_total{how=\"whole\"} 1"));
}

TEST_F(SchedulerReuse, EvictedSessionsSpillAndComeBack) {
  metrics met;
  scheduler_options o;
  o.max_sessions = 2;
  o.max_spilled = 2;
  scheduler s(*model, *tok, o, met);
  std::vector<std::vector<int32_t>> prompts, held;
  std::vector<job_state> firsts;
  for (const char* t : {"First of the texts about the river", "Second of the texts about the king",
                        "Third of the texts about the bird", "Fourth of the texts about the stone"}) {
    prompts.push_back(tok->encode(t, true));
    firsts.push_back(run(s, prompts.back(), 6));
    held.push_back(held_tokens(prompts.back(), firsts.back()));
  }
  // Two in memory, two spilled (the oldest), nothing dropped yet.
  auto g = s.gauges();
  EXPECT_EQ(g.idle, 2);
  EXPECT_EQ(g.spilled, 2);
  EXPECT_GT(g.kv_file, 0);
  std::string text = met.render(g);
  EXPECT_TRUE(has(text, "gsa_sessions_evicted_total{action=\"spilled\"} 2")) << text;
  EXPECT_TRUE(has(text, "gsa_sessions_evicted_total{action=\"dropped\"} 0")) << text;
  EXPECT_TRUE(has(text, "gsa_sessions{state=\"spilled\"} 2")) << text;
  // The first conversation continues from its file: reused whole, and equal to continuing it by hand.
  const std::vector<int32_t> more = tok->encode(" and after that", false);
  const job_state c = run(s, cat(held[0], more), 8);
  EXPECT_TRUE(c.restored);
  EXPECT_EQ(c.stats["session_restored"], true);
  EXPECT_EQ(c.session, "whole");
  EXPECT_EQ(c.reused_tokens, int64_t(held[0].size()));
  EXPECT_EQ(c.ids, by_hand(*model, o.session, cat(held[0], more), int(prompts[0].size()), int(held[0].size()), 8));
  text = met.render(s.gauges());
  EXPECT_TRUE(has(text, "gsa_sessions_restored_total 1")) << text;
  // Bringing it back evicted the least recently used resident one (the third) to the file; a fifth
  // conversation evicts another, and the oldest spilled one (the second) is then dropped (two spilled at most).
  run(s, tok->encode("Fifth of the texts about the sea", true), 4);
  g = s.gauges();
  EXPECT_EQ(g.idle + g.active, 2);
  EXPECT_EQ(g.spilled, 2);
  text = met.render(g);
  EXPECT_TRUE(has(text, "gsa_sessions_evicted_total{action=\"spilled\"} 4")) << text;
  EXPECT_TRUE(has(text, "gsa_sessions_evicted_total{action=\"dropped\"} 1")) << text;
  EXPECT_EQ(run(s, cat(held[1], more), 2).reused_tokens, 0);  // the second was dropped
  // drop_idle frees the spilled ones too.
  s.drop_idle();
  s.step();
  g = s.gauges();
  EXPECT_EQ(g.idle + g.spilled, 0);
  EXPECT_EQ(g.kv_file, 0);
}

// Sessions whose raw pages left the device (--gpu-kv-budget; the CPU backend's pool here): a held conversation
// continued whole gives what the all-in-pool server gives; a prompt that diverges inside it cannot cut the
// session back (its pages are off the device) and is computed afresh, with the same text.
TEST_F(SchedulerReuse, PagesOffTheDeviceContinueWholeAndStartAfreshOtherwise) {
  const std::vector<int32_t> first = tok->encode(
      "The old man walked down to the river in the morning and sat on the stone bridge for a long while. "
      "The old man walked down to the river in the evening and sat on the stone bridge until the night fell.",
      true);
  const std::vector<int32_t> more = tok->encode(" and the boats went by"), other = tok->encode(" the queen said");
  std::vector<std::vector<int32_t>> ids[2];
  std::vector<std::string> kinds[2];
  for (int b = 0; b < 2; b++) {
    scheduler_options o;
    o.session.kv_pool = true;
    o.session.gpu_kv_budget = b ? int64_t(64) << 20 : 0;
    metrics met;
    scheduler s(*model, *tok, o, met);
    const job_state a = run(s, first, 16);
    const job_state whole = run(s, cat(held_tokens(first, a), more), 8);
    const job_state diverged =
        run(s, cat(std::vector<int32_t>(first.begin(), first.end() - 5), other), 8);
    ids[b] = {a.ids, whole.ids, diverged.ids};
    kinds[b] = {whole.session, diverged.session};
  }
  EXPECT_EQ(ids[1], ids[0]);
  EXPECT_EQ(kinds[0], (std::vector<std::string>{"whole", "cut"}));
  EXPECT_EQ(kinds[1], (std::vector<std::string>{"whole", "new"}));
}

TEST_F(SchedulerReuse, SpillOptionsAreChecked) {
  metrics met;
  scheduler_options o;
  o.max_spilled = -1;
  EXPECT_THROW(scheduler(*model, *tok, o, met), gsa::error);
  o.max_spilled = 1;
  o.session.kv_pool = true;  // sessions whose K/V live on a backend (a GPU's path) cannot spill
  try {
    scheduler s(*model, *tok, o, met);
    ADD_FAILURE() << "no error";
  } catch (const gsa::error& e) {
    EXPECT_TRUE(has(e.what(), "--max-spilled")) << e.what();
  }
}

}  // namespace
}  // namespace gsa::serve
