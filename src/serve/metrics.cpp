// Prometheus text rendering; contract in metrics.h.
#include "serve/metrics.h"

#include <fmt/format.h>

namespace gsa::serve {

namespace {

const std::vector<double> latency_bounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
const std::vector<double> step_bounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1};
const std::vector<double> batch_bounds = {1, 2, 4, 8, 16, 32, 64, 128};

void head(std::string& out, const char* name, const char* type, const char* help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void render_histogram(std::string& out, const char* name, const histogram& h, const std::string& labels = {}) {
  uint64_t cum = 0;
  const std::string sep = labels.empty() ? "" : ",";
  for (size_t i = 0; i < h.bounds.size(); i++) {
    cum += h.counts[i];
    out += fmt::format("{}_bucket{{{}{}le=\"{}\"}} {}\n", name, labels, sep, h.bounds[i], cum);
  }
  cum += h.counts.back();
  out += fmt::format("{}_bucket{{{}{}le=\"+Inf\"}} {}\n", name, labels, sep, cum);
  const std::string l = labels.empty() ? "" : "{" + labels + "}";
  out += fmt::format("{}_sum{} {}\n{}_count{} {}\n", name, l, h.sum, name, l, h.count);
}

}  // namespace

void histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds.size() && v > bounds[i]) i++;
  counts[i]++;
  sum += v;
  count++;
}

metrics::metrics() : ttft_(latency_bounds), step_(step_bounds), batch_(batch_bounds) {}

void metrics::request(const std::string& endpoint, int status, double seconds) {
  std::lock_guard<std::mutex> g(mu_);
  requests_[{endpoint, status}]++;
  auto it = latency_.try_emplace(endpoint, latency_bounds).first;
  it->second.observe(seconds);
}

void metrics::tokens(int64_t prompt, int64_t reused, int64_t completion) {
  std::lock_guard<std::mutex> g(mu_);
  prompt_ += uint64_t(prompt);
  reused_ += uint64_t(reused);
  completion_ += uint64_t(completion);
}

void metrics::first_token(double seconds) {
  std::lock_guard<std::mutex> g(mu_);
  ttft_.observe(seconds);
}

void metrics::step(int batch, double seconds) {
  std::lock_guard<std::mutex> g(mu_);
  steps_++;
  step_.observe(seconds);
  batch_.observe(batch);
}

void metrics::finished(const std::string& reason) {
  std::lock_guard<std::mutex> g(mu_);
  finished_[reason]++;
}

void metrics::evicted(const char* action) {
  std::lock_guard<std::mutex> g(mu_);
  evicted_[action]++;
}

void metrics::restored() {
  std::lock_guard<std::mutex> g(mu_);
  restored_++;
}

void metrics::reused(const std::string& how) {
  std::lock_guard<std::mutex> g(mu_);
  reused_sessions_[how]++;
}

std::string metrics::render(const scheduler_gauges& s) const {
  std::lock_guard<std::mutex> g(mu_);
  std::string out;
  head(out, "gsa_requests_total", "counter", "HTTP requests by endpoint and status");
  for (const auto& [k, n] : requests_)
    out += fmt::format("gsa_requests_total{{endpoint=\"{}\",status=\"{}\"}} {}\n", k.first, k.second, n);
  head(out, "gsa_request_duration_seconds", "histogram", "HTTP request latency (whole response) by endpoint");
  for (const auto& [e, h] : latency_)
    render_histogram(out, "gsa_request_duration_seconds", h, "endpoint=\"" + e + "\"");
  head(out, "gsa_time_to_first_token_seconds", "histogram", "From a generation's submission to its first token");
  render_histogram(out, "gsa_time_to_first_token_seconds", ttft_);
  head(out, "gsa_decode_step_seconds", "histogram", "One batched decode step (every active sequence one row)");
  render_histogram(out, "gsa_decode_step_seconds", step_);
  head(out, "gsa_decode_batch_size", "histogram", "Sequences per batched decode step");
  render_histogram(out, "gsa_decode_batch_size", batch_);
  head(out, "gsa_prompt_tokens_total", "counter", "Prompt tokens of finished generations");
  out += fmt::format("gsa_prompt_tokens_total {}\n", prompt_);
  head(out, "gsa_prompt_tokens_reused_total", "counter",
       "Prompt tokens whose KV a held session already had (not prefilled again)");
  out += fmt::format("gsa_prompt_tokens_reused_total {}\n", reused_);
  head(out, "gsa_completion_tokens_total", "counter", "Generated tokens");
  out += fmt::format("gsa_completion_tokens_total {}\n", completion_);
  head(out, "gsa_generations_total", "counter", "Finished generations by reason (stop, length, cancelled, error)");
  for (const auto& [r, n] : finished_) out += fmt::format("gsa_generations_total{{reason=\"{}\"}} {}\n", r, n);
  auto count = [](const std::map<std::string, uint64_t>& m, const char* k) { return m.count(k) ? m.at(k) : 0; };
  head(out, "gsa_sessions_evicted_total", "counter",
       "Idle sessions evicted from memory (least recently used first) and what happened to their KV: dropped "
       "(freed) or spilled (to the session's KV file, read back when a request continues it)");
  out += fmt::format("gsa_sessions_evicted_total{{action=\"dropped\"}} {}\n", count(evicted_, "dropped"));
  out += fmt::format("gsa_sessions_evicted_total{{action=\"spilled\"}} {}\n", count(evicted_, "spilled"));
  head(out, "gsa_sessions_restored_total", "counter", "Spilled sessions read back from their KV file for a request");
  out += fmt::format("gsa_sessions_restored_total {}\n", restored_);
  head(out, "gsa_sessions_reused_total", "counter",
       "Requests that continued a held session: whole (the session's tokens start the prompt) or cut (cut back to a "
       "prefix it shares with the prompt)");
  out += fmt::format("gsa_sessions_reused_total{{how=\"whole\"}} {}\ngsa_sessions_reused_total{{how=\"cut\"}} {}\n",
                     count(reused_sessions_, "whole"), count(reused_sessions_, "cut"));
  head(out, "gsa_sessions", "gauge",
       "Sessions held: generating (active), kept for a follow-up turn (idle), idle with the KV in its file (spilled)");
  out += fmt::format(
      "gsa_sessions{{state=\"active\"}} {}\ngsa_sessions{{state=\"idle\"}} {}\ngsa_sessions{{state=\"spilled\"}} {}\n",
      s.active, s.idle, s.spilled);
  head(out, "gsa_sessions_max", "gauge", "--max-sessions");
  out += fmt::format("gsa_sessions_max {}\n", s.max_sessions);
  head(out, "gsa_requests_queued", "gauge", "Generations waiting for a session");
  out += fmt::format("gsa_requests_queued {}\n", s.queued);
  head(out, "gsa_kv_bytes", "gauge",
       "KV cache bytes of every held session by tier (memory: resident; file: spilled pages; dropped: freed pages; "
       "gpu: K/V pools in GPU memory)");
  out += fmt::format(
      "gsa_kv_bytes{{tier=\"memory\"}} {}\ngsa_kv_bytes{{tier=\"file\"}} {}\ngsa_kv_bytes{{tier=\"dropped\"}} {}\n"
      "gsa_kv_bytes{{tier=\"gpu\"}} {}\n",
      s.kv_memory, s.kv_file, s.kv_dropped, s.kv_gpu);
  return out;
}

}  // namespace gsa::serve
