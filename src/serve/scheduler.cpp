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
  infer::session probe(m_, o_.session);  // refuses a method the model cannot run, before any request
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
  auto add = [&](const held& h) {
    const kv::cache_bytes b = h.s->cache().bytes();
    g.kv_memory += b.resident;
    g.kv_file += b.file;
    g.kv_dropped += b.dropped;
    g.kv_gpu += b.device;
  };
  for (const auto& r : active_) add(*r.h);
  for (const auto& h : idle_) add(*h);
  std::lock_guard<std::mutex> l(mu_);
  g.queued = int(queue_.size());
  gauges_ = g;
}

void scheduler::drop_idle() {
  drop_idle_ = true;
  wake();
}

std::unique_ptr<scheduler::held> scheduler::take_session(const job_request& r, int64_t& reused) {
  reused = 0;
  int best = -1;
  if (r.reuse)
    for (size_t i = 0; i < idle_.size(); i++) {
      const auto& t = idle_[i]->tokens;
      if (t.size() <= r.prompt.size() && int64_t(t.size()) > reused &&
          std::equal(t.begin(), t.end(), r.prompt.begin())) {
        best = int(i);
        reused = int64_t(t.size());
      }
    }
  if (best >= 0) {
    auto h = std::move(idle_[best]);
    idle_.erase(idle_.begin() + best);
    const std::vector<int32_t> rest(r.prompt.begin() + reused, r.prompt.end());
    h->s->append(rest);  // computed by the next run_pending, batched with the other sessions' rows
    h->tokens.insert(h->tokens.end(), rest.begin(), rest.end());
    return h;
  }
  while (!idle_.empty() && int(active_.size() + idle_.size()) >= o_.max_sessions) {
    auto lru = std::min_element(idle_.begin(), idle_.end(),
                                [](const auto& a, const auto& b) { return a->last_used < b->last_used; });
    idle_.erase(lru);
    met_.evicted("dropped");
  }
  auto h = std::make_unique<held>();
  h->s = std::make_unique<infer::session>(m_, o_.session);
  h->s->prefill(r.prompt);
  h->s->take_stats();
  h->tokens = r.prompt;
  return h;
}

void scheduler::admit() {
  for (;;) {
    std::shared_ptr<job> j;
    {
      std::lock_guard<std::mutex> g(mu_);
      if (queue_.empty() || int(active_.size()) >= o_.max_sessions) return;
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
      int64_t reused = 0;
      auto h = take_session(r, reused);
      st.reused_tokens = reused;
      running run{j, std::move(h), infer::sampler(r.samp), text_output(r.stop), st, {}, true};
      if (r.stats)
        run.st.stats = {{"method", infer::method_name(o_.session.meth)},
                        {"prompt_tokens_reused", reused},
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
    for (size_t i = 0; i < idle_.size(); i++) met_.evicted("dropped");
    idle_.clear();
    malloc_trim(0);  // KV pages are many small blocks: hand the freed heap back to the system
  }
  admit();
  if (active_.empty()) {
    update_gauges();
    return false;
  }
  std::vector<infer::session*> batch;
  for (auto& r : active_)
    if (r.h->s->has_pending()) batch.push_back(r.h->s.get());
  if (!batch.empty()) {
    const auto t0 = clock_type::now();
    try {
      infer::run_pending(batch);
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
    met_.step(int(batch.size()), std::chrono::duration<double>(clock_type::now() - t0).count());
    for (auto& r : active_)
      if (std::find(batch.begin(), batch.end(), r.h->s.get()) != batch.end()) record_step(r, r.h->s->take_stats());
  }
  for (auto& r : active_) {
    if (r.j->cancelled()) {
      finish(r, "cancelled");
      continue;
    }
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
