// The counters and histograms of `gsa serve`, rendered as Prometheus text (exposition format 0.0.4) by GET /metrics.
// Thread-safe: HTTP threads and the scheduler record into one registry; gauges that describe the scheduler's
// state (sessions, queue, KV bytes per tier) are passed to render() as a snapshot.
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace gsa::serve {

// Cumulative histogram with fixed upper bounds (plus +Inf).
struct histogram {
  std::vector<double> bounds;
  std::vector<uint64_t> counts;  // per bound, not cumulative; last = above every bound
  double sum = 0;
  uint64_t count = 0;
  explicit histogram(std::vector<double> b = {}) : bounds(std::move(b)), counts(bounds.size() + 1, 0) {}
  void observe(double v);
};

// What the scheduler holds at one moment.
struct scheduler_gauges {
  int active = 0, idle = 0, spilled = 0, queued = 0, max_sessions = 0;
  int64_t kv_memory = 0, kv_file = 0, kv_dropped = 0;  // bytes over every held session, per tier
  int64_t kv_gpu = 0;  // sessions on the GPU (--device cuda): the capacity of their K/V pools in GPU memory
};

class metrics {
 public:
  metrics();
  void request(const std::string& endpoint, int status, double seconds);  // every HTTP request
  void tokens(int64_t prompt, int64_t reused, int64_t completion);        // one finished generation
  void first_token(double seconds);                                       // submit -> first token
  void step(int batch, double seconds);                                   // one batched decode step
  void finished(const std::string& reason);                               // stop, length, cancelled, error
  void evicted(const char* action);     // an idle session left memory: "dropped" (KV freed) or "spilled" (to its file)
  void restored();                      // a spilled session was read back for a request
  void reused(const std::string& how);  // a request continued a held session: "whole" or "cut" (cut back first)
  std::string render(const scheduler_gauges& g) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  std::map<std::string, histogram> latency_;  // per endpoint
  histogram ttft_, step_, batch_;
  uint64_t prompt_ = 0, reused_ = 0, completion_ = 0, steps_ = 0;
  std::map<std::string, uint64_t> finished_, evicted_, reused_sessions_;
  uint64_t restored_ = 0;
};

}  // namespace gsa::serve
