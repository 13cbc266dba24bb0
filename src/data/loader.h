// Random training windows from a token corpus, deterministic from a seed. The whole loader state is the rng
// (two words) and the count of windows drawn, so a checkpoint restores it exactly (state() / set_state()).
// A window of n tokens starts uniformly in [0, size - n]; windows may cross document separators (the model
// sees the separator, as in GPT-style packing) and shard boundaries.
#pragma once
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "data/dataset.h"

namespace gsa::data {

class window_loader {
 public:
  // The corpus must outlive the loader. Throws gsa::error when the corpus is shorter than one window.
  window_loader(const token_corpus& corpus, int64_t window, uint64_t seed);

  int64_t window() const { return window_; }
  int64_t drawn() const { return drawn_; }
  // The next window (resized to window()).
  void next(std::vector<int32_t>& out);
  // Start offset the next call to next() will use, without drawing it.
  int64_t peek_offset() const;

  nlohmann::json state() const;  // {"s0": "...", "s1": "...", "drawn": n} (u64 as decimal strings: exact in JSON)
  void set_state(const nlohmann::json& j);

 private:
  const token_corpus* corpus_;
  int64_t window_;
  rng rng_;
  int64_t drawn_ = 0;
};

// n fixed validation windows: evenly spaced over the corpus (deterministic, identical at every evaluation).
std::vector<std::vector<int32_t>> fixed_windows(const token_corpus& corpus, int64_t window, int n);

}  // namespace gsa::data
