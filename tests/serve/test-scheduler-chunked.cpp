// Chunked prefill in the scheduler (issue 13): on the shipped demo GSA model (unfold-trained, per-token selection,
// so decoding a prompt computes what prefilling it computes), a long prompt prefilled in pieces of prefill_chunk
// rows gives the tokens of a one-piece prefill (infer::generate on a prefilled session), taking one batched step
// per piece; a session decoding meanwhile gets a token in every one of those steps and its own tokens unchanged;
// the rest of a reused prompt is computed in pieces too and equals a fresh request; a method whose decoding
// differs from its prefill (quest, a gist-mask prefill) still prefills new prompts in one piece, so its tokens are
// those of `gsa generate`; prompts arriving together prefill about a piece per step at admission; a job cancelled
// inside its prompt frees its session; a negative chunk is refused.
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "demo-fixture.h"
#include "drain-jobs.h"
#include "infer/generate.h"
#include "serve/scheduler.h"

namespace gsa::serve {
namespace {

struct chunked_fixture : demo_fixture {
  // A prompt of about n tokens (words from a short cycle).
  static std::vector<int32_t> long_prompt(int n, int salt = 0) {
    const char* words[] = {"the", "river", "ran", "past", "a", "house", "where", "an", "old", "king", "slept"};
    std::string text;
    std::vector<int32_t> ids;
    for (int i = 0; int(ids.size()) < n; i++) {
      text += std::string(i ? " " : "") + words[(i * 7 + salt) % 11];
      ids = tok->encode(text, true);
    }
    return ids;
  }
  static job_request request(const std::vector<int32_t>& prompt, int max_tokens, bool reuse = true) {
    job_request r;
    r.prompt = prompt;
    r.max_tokens = max_tokens;
    r.reuse = reuse;
    return r;
  }
  // Greedy tokens of a session that prefilled the whole prompt in one forward pass (`gsa generate`).
  static std::vector<int32_t> reference(const std::vector<int32_t>& prompt, int max_tokens,
                                        const infer::session_options& o = {}) {
    infer::session s(*model, o);
    s.prefill(prompt);
    infer::generate_options g;
    g.max_tokens = max_tokens;
    return infer::generate({&s}, g)[0].ids;
  }
  // Raw tokens + gists of the demo model's stream (chunk 8, one gist) between raw tokens a and b.
  static int rows_between(int a, int b) { return (b - a) + (b / 8 - a / 8); }
};

using SchedulerChunked = chunked_fixture;

TEST_F(SchedulerChunked, LongPromptInPiecesEqualsOnePiece) {
  const auto prompt = long_prompt(150);
  const int P = int(prompt.size());
  const auto ref = reference(prompt, 12);
  for (int chunk : {0, 16, 40}) {
    SCOPED_TRACE("prefill_chunk " + std::to_string(chunk));
    metrics met;
    scheduler_options o;
    o.prefill_chunk = chunk;
    scheduler s(*model, *tok, o, met);
    auto j = s.submit(request(prompt, 12));
    int steps = 0;
    while (j->state().completion_tokens == 0 && !j->state().done && steps < 1000) s.step(), steps++;
    // The first piece is prefilled when the job is admitted, then one step per piece of the rest.
    const int pieces = chunk == 0 ? 0 : (rows_between(chunk, P) + chunk - 1) / chunk;
    EXPECT_EQ(steps, std::max(1, pieces));
    drain(s, {j});
    EXPECT_EQ(j->state().ids, ref);
    EXPECT_EQ(j->state().session, "new");
  }
}

TEST_F(SchedulerChunked, OtherSessionsDecodeWhileALongPromptIsPrefilled) {
  const auto shortp = tok->encode("Once upon a time", true), longp = long_prompt(300, 3);
  const auto ref_short = reference(shortp, 40), ref_long = reference(longp, 4);
  for (int chunk : {0, 16}) {
    SCOPED_TRACE("prefill_chunk " + std::to_string(chunk));
    metrics met;
    scheduler_options o;
    o.prefill_chunk = chunk;
    scheduler s(*model, *tok, o, met);
    auto a = s.submit(request(shortp, 40));
    for (int i = 0; i < 3; i++) s.step();
    auto b = s.submit(request(longp, 4));
    const int64_t before = a->state().completion_tokens;
    int steps = 0;
    while (b->state().completion_tokens == 0 && steps < 1000) s.step(), steps++;
    // Every step decodes one of a's tokens, whether or not it also holds a piece of b's prompt (a piece joins
    // each batched step of an iteration: two where a's token completes a chunk and its gist follows).
    EXPECT_EQ(a->state().completion_tokens - before, steps);
    const int pieces = chunk == 0 ? 1 : (rows_between(chunk, int(longp.size())) + chunk - 1) / chunk;
    if (chunk == 0) {
      EXPECT_EQ(steps, 1);
    } else {
      EXPECT_LE(steps, pieces);
      EXPECT_GE(steps, pieces * 3 / 4);
    }
    drain(s, {a, b});
    EXPECT_EQ(a->state().ids, ref_short);
    EXPECT_EQ(b->state().ids, ref_long);
  }
}

TEST_F(SchedulerChunked, RestOfAReusedPromptInPiecesEqualsAFreshRequest) {
  const auto first = long_prompt(40, 1);
  const auto more = long_prompt(32, 5);
  std::vector<int32_t> next;
  for (int chunk : {0, 8}) {
    SCOPED_TRACE("prefill_chunk " + std::to_string(chunk));
    metrics met;
    scheduler_options o;
    o.prefill_chunk = chunk;
    scheduler s(*model, *tok, o, met);
    auto a = s.submit(request(first, 6));
    drain(s, {a});
    // The held conversation, cut inside its generated text, then new tokens (a few rows fewer than it keeps).
    const auto said = a->state().ids;
    next = first;
    next.insert(next.end(), said.begin(), said.begin() + 2);
    ASSERT_NE(more[1], said[2]);
    next.insert(next.end(), more.begin() + 1, more.end());
    auto b = s.submit(request(next, 8));
    drain(s, {b});
    EXPECT_EQ(b->state().session, "cut");
    // The chunk boundary (8 tokens) at or before the shared tokens.
    EXPECT_EQ(b->state().reused_tokens, int64_t(first.size() + 2) / 8 * 8);
    auto c = s.submit(request(next, 8, /*reuse=*/false));
    drain(s, {c});
    EXPECT_EQ(c->state().session, "new");
    EXPECT_EQ(b->state().ids, c->state().ids);
    EXPECT_EQ(b->state().ids, reference(next, 8));
  }
}

TEST_F(SchedulerChunked, MethodsWhoseDecodingDiffersFromTheirPrefillPrefillInOnePiece) {
  const auto prompt = long_prompt(120, 2);
  infer::session_options quest;
  quest.meth = infer::method::quest;
  quest.budget = 24;
  infer::session_options mask;
  mask.prefill = infer::prefill_mode::gist_mask;
  for (const auto& so : {quest, mask}) {
    SCOPED_TRACE(infer::method_name(so.meth));
    ASSERT_FALSE(infer::session(*model, so).decode_matches_prefill());
    metrics met;
    scheduler_options o;
    o.session = so;
    o.prefill_chunk = 16;
    scheduler s(*model, *tok, o, met);
    auto j = s.submit(request(prompt, 10));
    s.step();
    EXPECT_EQ(j->state().completion_tokens, 1);  // prefilled at admission, sampled in the same step
    drain(s, {j});
    EXPECT_EQ(j->state().ids, reference(prompt, 10, so));
  }
}

// Prompts arriving together are admitted while the tokens prefilled at admission stay under a piece.
TEST_F(SchedulerChunked, AdmissionPrefillsAboutAPiecePerStep) {
  const auto p1 = long_prompt(40, 1), p2 = long_prompt(40, 2), p3 = long_prompt(40, 3);
  for (int chunk : {0, 64}) {
    SCOPED_TRACE("prefill_chunk " + std::to_string(chunk));
    metrics met;
    scheduler_options o;
    o.prefill_chunk = chunk;
    scheduler s(*model, *tok, o, met);
    auto a = s.submit(request(p1, 5)), b = s.submit(request(p2, 5)), c = s.submit(request(p3, 5));
    s.step();
    // 64: the first two (80 tokens) reach the piece, the third waits a step; 0: no limit.
    EXPECT_EQ(s.gauges().active, chunk == 0 ? 3 : 2);
    EXPECT_EQ(s.gauges().queued, chunk == 0 ? 0 : 1);
    EXPECT_EQ(c->state().completion_tokens, chunk == 0 ? 1 : 0);
    drain(s, {a, b, c});
    EXPECT_EQ(a->state().ids, reference(p1, 5));
    EXPECT_EQ(b->state().ids, reference(p2, 5));
    EXPECT_EQ(c->state().ids, reference(p3, 5));
  }
}

TEST_F(SchedulerChunked, CancelledInsideItsPromptFreesTheSession) {
  metrics met;
  scheduler_options o;
  o.prefill_chunk = 8;
  scheduler s(*model, *tok, o, met);
  auto j = s.submit(request(long_prompt(100), 5));
  s.step();
  s.step();
  EXPECT_EQ(j->state().completion_tokens, 0);
  j->cancel();
  s.step();
  EXPECT_TRUE(j->state().done);
  EXPECT_EQ(j->state().finish_reason, "cancelled");
  EXPECT_EQ(s.gauges().active, 0);
  EXPECT_EQ(s.gauges().idle, 0);  // its session held queued rows: not kept for a later turn
  // The scheduler serves on.
  auto k = s.submit(request(tok->encode("The king", true), 3));
  drain(s, {k});
  EXPECT_EQ(k->state().completion_tokens, 3);
}

TEST_F(SchedulerChunked, NegativeChunkIsRefused) {
  metrics met;
  scheduler_options o;
  o.prefill_chunk = -1;
  try {
    scheduler s(*model, *tok, o, met);
    ADD_FAILURE() << "accepted --prefill-chunk -1";
  } catch (const gsa::error& e) {
    EXPECT_NE(std::string(e.what()).find("--prefill-chunk"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace gsa::serve
