// Sampling and the generation loop over a batch of sessions.
// sampler: greedy when temperature == 0; else softmax(logits / temperature) restricted to the top_k largest
// (0 = all) and then to the smallest prefix of descending probability whose mass reaches top_p, sampled with a
// seeded generator (same seed, same logits -> same tokens).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/rng.h"
#include "infer/session.h"

namespace gsa::infer {

struct sampling {
  float temperature = 0.0f;  // 0: greedy
  int top_k = 0;             // 0: no limit
  float top_p = 1.0f;        // (0, 1]
  uint64_t seed = 0;
  void validate() const;     // throws gsa::error naming the option
};

class sampler {
 public:
  explicit sampler(const sampling& s);
  int32_t sample(const float* logits, int V);

 private:
  sampling s_;
  rng r_;
};

struct generate_options {
  int max_tokens = 64;
  sampling samp;
  std::vector<int32_t> stop_ids;  // end-of-sequence ids: generation stops after emitting one
  // Called after each new token with the tokens generated so far; true stops (stop strings live here).
  std::function<bool(int session_index, const std::vector<int32_t>& generated)> stop;
  // Called after each step with that step's statistics (a token and the gists inserted after it).
  std::function<void(int session_index, const step_stats&)> on_step;
};

struct generation {
  std::vector<int32_t> ids;
  std::string finish_reason;  // "length", "stop_id", "stop"
};

// Generates for every session of the batch (each must have logits: prefilled or appended and run), stepping
// them together. Queued tokens are run first.
std::vector<generation> generate(const std::vector<session*>& batch, const generate_options& opts);

}  // namespace gsa::infer
