// Continuous batching of generations over a pool of sessions (DESIGN 2.1 tools/: the server's queue and context).
//
// submit() queues a job (prompt tokens, sampling, stop rules) from any thread and returns its handle. step(),
// called by one thread (engine runs it in a loop), does one iteration:
//  1. admit queued jobs while fewer than max_sessions generate: a job takes the held idle session that shares the
//     longest prefix with its prompt and appends only the rest (a follow-up chat turn reuses the KV of the
//     conversation so far): whole when all of the session's tokens start the prompt, else cut back (session::truncate)
//     to the last point at or before the common prefix where it can be cut (a chunk boundary for the gist methods: a
//     chunk's gists summarise all of it) when that keeps at least as many tokens as are left to compute: the rest is
//     prefilled on top of the held KV (below) at no more cost per token than a fresh prefill, but the cut consumes the
//     held session's tail, which later requests could have reused (docs/serve.md measures both rules); or else a new
//     session that prefills the prompt, as `gsa generate` does (a long prompt's first prefill_chunk tokens in one
//     forward pass, the rest in pieces). When active + idle sessions reach max_sessions, the least recently used idle
//     session is evicted first: spilled to its KV file (up to max_spilled spilled sessions; the oldest spilled one is
//     dropped beyond that) or dropped (its KV freed). A spilled session is a candidate like an idle one and is read
//     back when a job takes it;
//  2. runs the queued rows of every active session together (infer::run_step): a decoding session's token and
//     the gists inserted after it one row per batched step, and up to prefill_chunk rows of each prompt still
//     being computed in each of those steps (chunked prefill: the other sessions keep decoding meanwhile);
//  3. samples one token for every active job whose prompt is computed (infer::sampler seeded with the job's
//     seed, as `gsa generate`), ends it on an end-of-sequence id, a stop sequence, max_tokens or cancellation,
//     else appends the token. A job cancelled inside its prompt ends and its session is freed.
// A finished job's session stays in the pool, idle, holding prompt + generated tokens (the last sampled token is
// not in it), so a request that continues that text, or shares a prefix with it, skips their prefill.
// Sessions join and leave the batch between steps. A job alone in its batch computes exactly what `gsa generate`
// computes (a prompt in pieces: up to rounding, and only where decode_matches_prefill); in a batch of M rows the
// matmuls are M-row GEMMs whose sums may round differently in the last bit.
// With a model on the GPU (to_backend; `gsa serve --device cuda`) every session keeps its K/V there and the steps
// run there; only the thread that calls step() (and the constructor's probe session) issues GPU work.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "infer/generate.h"
#include "infer/session.h"
#include "serve/metrics.h"
#include "serve/text-output.h"
#include "tokenizer/tokenizer.h"

namespace gsa::serve {

struct job_request {
  std::vector<int32_t> prompt;  // non-empty, ids inside the vocabulary
  int64_t max_tokens = 16;      // >= 1; prompt + max_tokens within the model's positions
  infer::sampling samp;
  std::vector<std::string> stop;  // stop sequences
  bool stats = false;             // fill job_state::stats (the response's "gsa" object)
  bool reuse = true;              // may continue a held session that shares a prefix with the prompt
};

// What a job has produced so far.
struct job_state {
  std::string text;  // the part of the completion that can be sent (see text_output)
  bool done = false;
  std::string finish_reason;  // when done: stop, length, cancelled, error
  std::string error;          // when finish_reason == "error"
  int64_t prompt_tokens = 0, reused_tokens = 0, completion_tokens = 0;
  std::string session;       // once admitted: "new", "whole" (a held session continued), "cut" (cut back, continued)
  bool restored = false;     // the held session was read back from its KV file (it had been spilled)
  std::vector<int32_t> ids;  // when done: every generated id (an end-of-sequence id included)
  nlohmann::json stats;      // when asked and done: method, budget, per-step attended keys and unfolded chunks
};

class job {
 public:
  explicit job(job_request r) : req_(std::move(r)) {}
  // Waits until more than `have` bytes of text are sendable or the job is done, at most `timeout`.
  job_state wait(size_t have, std::chrono::milliseconds timeout);
  job_state state();
  // Asks the scheduler to stop this job at its next step (finish_reason "cancelled").
  void cancel() { cancel_ = true; }
  bool cancelled() const { return cancel_; }
  const job_request& request() const { return req_; }

 private:
  friend class scheduler;
  void publish(const job_state& s);
  job_request req_;
  std::atomic<bool> cancel_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  job_state st_;
  std::chrono::steady_clock::time_point submitted_ = std::chrono::steady_clock::now();
};

struct scheduler_options {
  infer::session_options session;  // method, budget, KV tier of every session
  int max_sessions = 8;            // active + idle sessions held; also the largest batch
  // Idle sessions evicted by max_sessions are spilled to their KV file (kv_cache::spill) while fewer than this
  // many are spilled, else dropped; 0: always dropped. Host sessions only (a GPU session is always dropped).
  int max_spilled = 0;
  std::vector<int32_t> stop_ids;  // end-of-sequence ids (the model's eos_token_id)
  // Rows of a prompt computed per batched step (chunked prefill): a new prompt longer than this prefills its
  // first piece in one forward pass and the rest, like the rest of a reused prompt, in pieces of this many rows
  // on top of the held KV, each piece batched with the decode rows of the other sessions. Jobs admitted in one
  // iteration prefill about this many tokens at most together (at least one job; the others wait a step). A new prompt is cut
  // into pieces only where decoding computes what prefilling computes (session::decode_matches_prefill), so
  // the answer stays that of a one-piece prefill; for the other methods it prefills in one piece. 0: every
  // prompt in one piece (the rest of a reused prompt in one step).
  int prefill_chunk = 256;
};

class scheduler {
 public:
  // m, tok and met must outlive the scheduler. Throws gsa::error for max_sessions < 1, max_spilled < 0 or > 0
  // for sessions on a device, or session options the model cannot run.
  scheduler(const llama_model& m, const tokenizer& tok, scheduler_options o, metrics& met);
  ~scheduler();  // unfinished jobs end with an error

  std::shared_ptr<job> submit(job_request r);             // any thread
  bool step();                                            // one thread; false when there was nothing to do
  void wait_for_work(std::chrono::milliseconds timeout);  // blocks until a job is queued or timeout
  void wake();                                            // ends a wait_for_work early
  void drop_idle();                                       // any thread: the next step frees every idle session
                                                          // (spilled ones too)
  scheduler_gauges gauges() const;                        // any thread
  const scheduler_options& options() const { return o_; }

 private:
  struct held {
    std::unique_ptr<infer::session> s;
    std::vector<int32_t> tokens;  // raw tokens computed into s
    uint64_t last_used = 0;
  };
  struct running {
    std::shared_ptr<job> j;
    std::unique_ptr<held> h;
    infer::sampler samp;
    text_output out;
    job_state st;
    std::vector<int32_t> ids;
    bool first = true;
  };
  void admit();
  std::unique_ptr<held> take_session(const job_request& r, job_state& st);
  // Evicts the least recently used idle session (spilled or dropped, by max_spilled).
  void evict_idle();
  void finish(running& r, const std::string& reason, const std::string& error = {});
  void record_step(running& r, const infer::step_stats& st);
  void update_gauges();

  const llama_model& m_;
  const tokenizer& tok_;
  scheduler_options o_;
  metrics& met_;
  mutable std::mutex mu_;  // queue_, gauges_, cv_
  std::condition_variable cv_;
  std::deque<std::shared_ptr<job>> queue_;
  bool wake_ = false;
  std::atomic<bool> drop_idle_{false};
  scheduler_gauges gauges_;
  std::vector<running> active_;                 // step() thread only
  std::vector<std::unique_ptr<held>> idle_;     // step() thread only
  std::vector<std::unique_ptr<held>> spilled_;  // step() thread only: idle sessions whose KV is in their file
  uint64_t clock_ = 0;
  bool chunk_fresh_ = false;  // new prompts may prefill in pieces (session::decode_matches_prefill)
};

// Runs scheduler::step in a thread until destroyed.
class engine {
 public:
  explicit engine(scheduler& s);
  ~engine();

 private:
  scheduler& s_;
  std::atomic<bool> stop_{false};
  std::thread t_;
};

}  // namespace gsa::serve
