// The continuous-batching scheduler and its worker thread; contract in scheduler.h.
#include "serve/scheduler.h"

#include <malloc.h>

#include <algorithm>
#include <set>

#include "core/error.h"
#include "core/log.h"

namespace gsa::serve {

using clock_type = std::chrono::steady_clock;

job_state job::wait(size_t have, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> g(mu_);
  cv_.wait_for(g, timeout, [&] { return st_.done || st_.text.size() > have; });
  return st_;
}

job_state job::state() {
  std::lock_guard<std::mutex> g(mu_);
  return st_;
}

void job::publish(const job_state& s) {
  {
    std::lock_guard<std::mutex> g(mu_);
    st_ = s;
  }
  cv_.notify_all();
}

scheduler::scheduler(const llama_model& m, const tokenizer& tok, scheduler_options o, metrics& met)
    : m_(m), tok_(tok), o_(std::move(o)), met_(met) {
  if (o_.max_sessions < 1) fail("--max-sessions {} must be at least 1", o_.max_sessions);
  if (o_.max_spilled < 0) fail("--max-spilled {} must be at least 0", o_.max_spilled);
  if (o_.prefill_chunk < 0)
    fail("--prefill-chunk {} must be at least 0 (0: a prompt's rows in one piece)", o_.prefill_chunk);
  infer::session probe(m_, o_.session);  // refuses a method the model cannot run, before any request
  chunk_fresh_ = probe.decode_matches_prefill();
  if (o_.max_spilled > 0 && probe.cache().pooled())
    fail(
        "--max-spilled {}: sessions on {} keep their KV in its memory and cannot spill it to a file; use "
        "--max-spilled 0 there, or --device cpu",
        o_.max_spilled, m_.ops().describe());
  gauges_.max_sessions = o_.max_sessions;
}

scheduler::~scheduler() {
  for (auto& r : active_) finish(r, "error", "the server is shutting down");
  std::lock_guard<std::mutex> g(mu_);
  for (auto& j : queue_) {
    job_state s;
    s.done = true;
    s.finish_reason = "error";
    s.error = "the server is shutting down";
    j->publish(s);
  }
}

std::shared_ptr<job> scheduler::submit(job_request r) {
  GSA_ASSERT(!r.prompt.empty() && r.max_tokens >= 1, "submit: empty prompt or max_tokens < 1");
  auto j = std::make_shared<job>(std::move(r));
  {
    std::lock_guard<std::mutex> g(mu_);
    queue_.push_back(j);
    gauges_.queued = int(queue_.size());
  }
  cv_.notify_all();
  return j;
}

void scheduler::wait_for_work(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> g(mu_);
  cv_.wait_for(g, timeout, [&] { return !queue_.empty() || wake_; });
  wake_ = false;
}

void scheduler::wake() {
  {
    std::lock_guard<std::mutex> g(mu_);
    wake_ = true;
  }
  cv_.notify_all();
}

scheduler_gauges scheduler::gauges() const {
  std::lock_guard<std::mutex> g(mu_);
  return gauges_;
}

void scheduler::update_gauges() {
  scheduler_gauges g;
  g.max_sessions = o_.max_sessions;
  g.active = int(active_.size());
  g.idle = int(idle_.size());
  g.spilled = int(spilled_.size());
  auto add = [&](const held& h) {
    const kv::cache_bytes b = h.s->cache().bytes();
    g.kv_memory += b.resident;
    g.kv_file += b.file;
    g.kv_dropped += b.dropped;
    g.kv_gpu += b.device;
  };
  for (const auto& r : active_) add(*r.h);
  for (const auto& h : idle_) add(*h);
  for (const auto& h : spilled_) add(*h);
  std::lock_guard<std::mutex> l(mu_);
  g.queued = int(queue_.size());
  gauges_ = g;
}

void scheduler::drop_idle() {
  drop_idle_ = true;
  wake();
}

void scheduler::evict_idle() {
  auto lru = [](std::vector<std::unique_ptr<held>>& v) {
    return std::min_element(v.begin(), v.end(),
                            [](const auto& a, const auto& b) { return a->last_used < b->last_used; });
  };
  const auto victim = lru(idle_);
  std::unique_ptr<held> h = std::move(*victim);
  idle_.erase(victim);
  if (o_.max_spilled > 0) {
    try {
      h->s->spill_kv();
      spilled_.push_back(std::move(h));
      met_.evicted("spilled");
    } catch (const std::exception& e) {  // a full disk: the session goes as it would without spilling
      GSA_LOG_WARN("spilling an idle session's KV failed, dropping it: {}", e.what());
      met_.evicted("dropped");
    }
    while (int(spilled_.size()) > o_.max_spilled) {
      spilled_.erase(lru(spilled_));
      met_.evicted("dropped");
    }
    return;
  }
  met_.evicted("dropped");
}

std::unique_ptr<scheduler::held> scheduler::take_session(const job_request& r, job_state& st) {
  // The held session sharing the longest usable prefix with the prompt: whole (every token of it starts the
  // prompt) or cut back to its last cut point at or before the common prefix, keeping at least one prompt token
  // to compute (the logits of a cut session are gone). Ties: whole before cut, resident before spilled.
  struct candidate {
    std::vector<std::unique_ptr<held>>* from = nullptr;
    size_t at = 0;
    int64_t keep = 0;
    bool whole = false;
  } best;
  const int64_t P = int64_t(r.prompt.size());
  if (r.reuse)
    for (auto* from : {&idle_, &spilled_})
      for (size_t i = 0; i < from->size(); i++) {
        const held& h = *(*from)[i];
        const auto& t = h.tokens;
        const int64_t common = std::mismatch(t.begin(), t.end(), r.prompt.begin(), r.prompt.end()).first - t.begin();
        const bool whole = common == int64_t(t.size());  // t.size() <= P
        int64_t keep = whole ? common : h.s->cut_point(int(std::min(common, P - 1)));
        // See scheduler.h: a cut keeps at least what is left to compute (the cut consumes the held session's tail).
        if (!whole && keep < P - keep) keep = 0;
        if (keep > best.keep || (keep == best.keep && keep > 0 && whole && !best.whole)) best = {from, i, keep, whole};
      }
  std::unique_ptr<held> h;
  if (best.from) {
    h = std::move((*best.from)[best.at]);
    best.from->erase(best.from->begin() + int64_t(best.at));
    if (best.from == &spilled_) {  // back in memory: it counts against max_sessions again
      while (!idle_.empty() && int(active_.size() + idle_.size()) + 1 > o_.max_sessions) evict_idle();
      h->s->restore_kv();
      met_.restored();
      st.restored = true;
    }
    if (!best.whole) {
      h->s->truncate(int(best.keep));
      h->tokens.resize(size_t(best.keep));
    }
    st.reused_tokens = best.keep;
    st.session = best.whole ? "whole" : "cut";
    met_.reused(st.session);
    const std::vector<int32_t> rest(r.prompt.begin() + best.keep, r.prompt.end());
    h->s->append(rest);  // prefilled on top of the held KV by the next steps, in pieces of prefill_chunk rows
    h->s->reserve_tokens(r.max_tokens);  // GPU pools: no growth while it decodes
    h->tokens.insert(h->tokens.end(), rest.begin(), rest.end());
    return h;
  }
  while (!idle_.empty() && int(active_.size() + idle_.size()) >= o_.max_sessions) evict_idle();
  h = std::make_unique<held>();
  h->s = std::make_unique<infer::session>(m_, o_.session);
  const int64_t chunk = o_.prefill_chunk;
  if (chunk > 0 && P > chunk && chunk_fresh_) {  // the first piece now, the rest in the next steps
    h->s->prefill({r.prompt.begin(), r.prompt.begin() + chunk});
    h->s->append({r.prompt.begin() + chunk, r.prompt.end()});
  } else {
    h->s->prefill(r.prompt);
  }
  h->s->reserve_tokens(r.max_tokens);
  h->s->take_stats();
  h->tokens = r.prompt;
  st.session = "new";
  return h;
}

void scheduler::admit() {
  // New prompts are prefilled here, between steps: at most about prefill_chunk of their tokens per iteration (at
  // least one job), so that many prompts arriving together do not hold the decoding sessions for all of them.
  int64_t prefilled = 0;
  for (;;) {
    std::shared_ptr<job> j;
    {
      std::lock_guard<std::mutex> g(mu_);
      if (queue_.empty() || int(active_.size()) >= o_.max_sessions) return;
      if (o_.prefill_chunk > 0 && prefilled >= o_.prefill_chunk) return;
      j = queue_.front();
      queue_.pop_front();
    }
    const job_request& r = j->request();
    job_state st;
    st.prompt_tokens = int64_t(r.prompt.size());
    if (j->cancelled()) {
      st.done = true;
      st.finish_reason = "cancelled";
      met_.finished("cancelled");
      j->publish(st);
      continue;
    }
    try {
      auto h = take_session(r, st);
      h->s->track_unfolded(r.stats);  // the chunks it unfolds are only copied back for a response that shows them
      if (st.session == "new") prefilled += h->s->raw_count();  // the first piece, or the whole prompt
      running run{j, std::move(h), infer::sampler(r.samp), text_output(r.stop), st, {}, true};
      if (r.stats)
        run.st.stats = {{"method", infer::method_name(o_.session.meth)},
                        {"prompt_tokens_reused", st.reused_tokens},
                        {"session", st.session},
                        {"session_restored", st.restored},
                        {"unit_tokens", run.h->s->unit_tokens()},
                        {"steps", nlohmann::json::array()}};
      active_.push_back(std::move(run));
    } catch (const std::exception& e) {
      GSA_LOG_WARN("a request failed before generating: {}", e.what());
      st.done = true;
      st.finish_reason = "error";
      st.error = e.what();
      met_.finished("error");
      j->publish(st);
    }
  }
}

void scheduler::record_step(running& r, const infer::step_stats& st) {
  if (!r.j->request().stats) return;
  std::set<int32_t> u;
  for (const auto& v : st.unfolded) u.insert(v.begin(), v.end());
  r.st.stats["steps"].push_back({{"rows", st.rows},
                                 {"attended_tokens", st.attended_tokens},
                                 {"unfolded", std::vector<int32_t>(u.begin(), u.end())}});
}

void scheduler::finish(running& r, const std::string& reason, const std::string& error) {
  r.out.finish();
  r.st.text = r.out.text();
  r.st.done = true;
  r.st.finish_reason = reason;
  r.st.error = error;
  r.st.completion_tokens = int64_t(r.ids.size());
  r.st.ids = r.ids;
  if (r.j->request().stats && r.h) {
    const kv::cache_bytes b = r.h->s->cache().bytes();
    r.st.stats["budget"] = r.h->s->budget();
    r.st.stats["kv_bytes"] = {{"memory", b.resident}, {"file", b.file}, {"dropped", b.dropped}, {"gpu", b.device}};
  }
  met_.finished(reason);
  if (reason != "error") met_.tokens(r.st.prompt_tokens, r.st.reused_tokens, r.st.completion_tokens);
  r.j->publish(r.st);
}

bool scheduler::step() {
  if (drop_idle_.exchange(false)) {
    for (size_t i = 0; i < idle_.size() + spilled_.size(); i++) met_.evicted("dropped");
    idle_.clear();
    spilled_.clear();
    malloc_trim(0);  // KV pages are many small blocks: hand the freed heap back to the system
  }
  admit();
  if (active_.empty()) {
    update_gauges();
    return false;
  }
  // Batched steps: one row per decoding session per step (its token, then the gists inserted after it) until
  // every decoding session has its logits; a job still computing its prompt adds up to prefill_chunk of its rows
  // to each of these steps (all of them with prefill_chunk 0), so a long prompt never holds the batch for more
  // than a piece at a time. Without decoding sessions one step runs, and the next iteration admits new jobs.
  std::vector<infer::session*> ran;
  const auto t0 = clock_type::now();
  for (;;) {
    std::vector<infer::session*> batch;
    std::vector<int> rows;
    bool decoding = false;
    for (auto& r : active_)
      if (r.h->s->has_pending()) {
        batch.push_back(r.h->s.get());
        rows.push_back(!r.first ? 1 : o_.prefill_chunk > 0 ? o_.prefill_chunk : r.h->s->pending_rows());
        decoding |= !r.first;
      }
    if (batch.empty()) break;
    try {
      infer::run_step(batch, rows);
    } catch (const std::exception& e) {
      // The sessions of the batch are in an unknown state: their jobs fail and the sessions are freed.
      GSA_LOG_WARN("a decode step failed: {}", e.what());
      for (auto& r : active_)
        if (r.h->s->has_pending() || std::find(batch.begin(), batch.end(), r.h->s.get()) != batch.end()) {
          finish(r, "error", e.what());
          r.h.reset();
        }
      std::erase_if(active_, [](const running& r) { return !r.h; });
      update_gauges();
      return true;
    }
    for (infer::session* s : batch)
      if (std::find(ran.begin(), ran.end(), s) == ran.end()) ran.push_back(s);
    if (!decoding) break;
    bool more = false;
    for (auto& r : active_) more |= !r.first && r.h->s->has_pending();
    if (!more) break;
  }
  if (!ran.empty()) met_.step(int(ran.size()), std::chrono::duration<double>(clock_type::now() - t0).count());
  // Statistics per token group; the rest of a reused prompt counts as one group once all of it is computed (a new
  // prompt's rows, prefilled in pieces or not, are not decode steps).
  for (auto& r : active_)
    if (!r.h->s->has_pending() && std::find(ran.begin(), ran.end(), r.h->s.get()) != ran.end()) {
      const infer::step_stats st = r.h->s->take_stats();
      if (!r.first || r.st.session != "new") record_step(r, st);
    }
  for (auto& r : active_) {
    if (r.j->cancelled()) {
      finish(r, "cancelled");
      if (r.h->s->has_pending()) r.h.reset();  // cancelled inside its prompt: nothing to hold for a later turn
      continue;
    }
    if (r.h->s->has_pending()) continue;  // still computing its prompt
    const job_request& q = r.j->request();
    const auto& logits = r.h->s->logits();
    const int32_t tok = r.samp.sample(logits.data(), int(logits.size()));
    r.ids.push_back(tok);
    if (r.first) {
      met_.first_token(std::chrono::duration<double>(clock_type::now() - r.j->submitted_).count());
      r.first = false;
    }
    if (std::find(o_.stop_ids.begin(), o_.stop_ids.end(), tok) != o_.stop_ids.end()) {
      finish(r, "stop");
    } else if (r.out.add(tok_.decode(std::vector<int32_t>{tok}))) {
      finish(r, "stop");
    } else if (int64_t(r.ids.size()) >= q.max_tokens) {
      finish(r, "length");
    } else {
      r.h->s->append({tok});
      r.h->tokens.push_back(tok);
      r.st.completion_tokens = int64_t(r.ids.size());
      r.st.text = r.out.text().substr(0, r.out.sendable());
      r.j->publish(r.st);
    }
  }
  for (auto& r : active_)
    if (r.st.done && r.h) {
      r.h->last_used = ++clock_;
      idle_.push_back(std::move(r.h));
    }
  std::erase_if(active_, [](const running& r) { return r.st.done; });
  update_gauges();
  return true;
}

engine::engine(scheduler& s) : s_(s) {
  t_ = std::thread([this] {
    while (!stop_) {
      try {
        if (!s_.step()) s_.wait_for_work(std::chrono::milliseconds(200));
      } catch (const std::exception& e) {
        GSA_LOG_WARN("scheduler step failed: {}", e.what());
      }
    }
  });
}

engine::~engine() {
  stop_ = true;
  s_.wake();
  t_.join();
}

}  // namespace gsa::serve
