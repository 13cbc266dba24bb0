#include "data/loader.h"

#include <algorithm>
#include <string>

#include "core/error.h"

namespace gsa::data {

window_loader::window_loader(const token_corpus& corpus, int64_t window, uint64_t seed)
    : corpus_(&corpus), window_(window), rng_(seed) {
  if (window <= 0) fail("the training window must be positive (got {})", window);
  if (corpus.size() < window)
    fail("the corpus has {} tokens, fewer than one window of {}; prepare more data or lower seq_len", corpus.size(),
         window);
}

int64_t window_loader::peek_offset() const {
  rng r = rng_;
  return int64_t(r.below(uint64_t(corpus_->size() - window_ + 1)));
}

void window_loader::next(std::vector<int32_t>& out) {
  int64_t begin = int64_t(rng_.below(uint64_t(corpus_->size() - window_ + 1)));
  out.resize(size_t(window_));
  corpus_->read(begin, out);
  drawn_++;
}

nlohmann::json window_loader::state() const {
  return {{"s0", std::to_string(rng_.s0)}, {"s1", std::to_string(rng_.s1)}, {"drawn", drawn_}};
}

void window_loader::set_state(const nlohmann::json& j) {
  try {
    rng_.s0 = std::stoull(j.at("s0").get<std::string>());
    rng_.s1 = std::stoull(j.at("s1").get<std::string>());
    drawn_ = j.at("drawn").get<int64_t>();
  } catch (const std::exception& e) {
    fail("data loader state is malformed ({}); the checkpoint's trainer.json is damaged", e.what());
  }
}

std::vector<std::vector<int32_t>> fixed_windows(const token_corpus& corpus, int64_t window, int n) {
  std::vector<std::vector<int32_t>> out;
  if (corpus.size() < window || n <= 0) return out;
  int64_t span = corpus.size() - window;
  n = int(std::min<int64_t>(n, span + 1));  // no duplicate windows in a tiny corpus
  for (int i = 0; i < n; i++) {
    int64_t begin = n == 1 ? 0 : span * i / (n - 1);
    std::vector<int32_t> w(static_cast<size_t>(window));
    corpus.read(begin, w);
    out.push_back(std::move(w));
  }
  return out;
}

}  // namespace gsa::data
