// Cutting a session back to a prefix of its tokens (session.h truncate / cut_point): a held conversation that a
// new prompt shares only in part continues from the common prefix.
#include <algorithm>

#include "core/error.h"
#include "infer/session.h"

namespace gsa::infer {

int session::cut_point(int want) const {
  if (opts_.meth == method::h2o || !pending_.empty()) return 0;
  int n = std::clamp(want, 0, raw_done_);
  if (uses_gists(opts_.meth)) n -= n % chunk_;
  if (!cache_->truncatable(n)) n -= n % cache_->layout().page_size;
  return cache_->truncatable(n) ? n : 0;
}

void session::truncate(int n_raw) {
  if (!pending_.empty()) fail("truncate: the session has {} queued rows; compute them first", pending_.size());
  if (opts_.meth == method::h2o)
    fail(
        "method h2o cannot cut a session back: its kept tokens were chosen by the attention of the rows that would "
        "be cut");
  if (n_raw < 0 || n_raw > raw_done_) fail("truncate: keep {} tokens of a session that holds {}", n_raw, raw_done_);
  if (uses_gists(opts_.meth) && n_raw % chunk_ != 0)
    fail("truncate: {} tokens is not a chunk boundary (chunks of {}): the gists after a chunk summarise all of it",
         n_raw, chunk_);
  if (n_raw == raw_done_) return;
  const int S = gist::raw_position(s_, chunk_, n_raw);  // the stream positions kept: [0, S)
  std::vector<int64_t> gists(gists_done_.size(), 0);
  const auto kept_gists = std::lower_bound(gist_positions_.begin(), gist_positions_.end(), S);
  for (auto it = gist_positions_.begin(); it != kept_gists; ++it) gists[size_t(s_.level[*it])]++;
  cache_->truncate(n_raw, gists);  // checks what the cache can do before anything here changes

  for (auto* v : {&s_.ids, &s_.pos, &s_.labels, &s_.chunk, &s_.raw_index}) v->resize(size_t(S));
  s_.level.resize(size_t(S));
  if (S > 0) s_.labels.back() = gist::ignore_label;  // the last row predicts nothing yet
  const int chunks = (n_raw + chunk_ - 1) / chunk_;
  s_.chunk_raw_begin.resize(size_t(chunks));
  s_.chunk_raw_end.resize(size_t(chunks));
  s_.chunk_gist_begin.resize(size_t(chunks));
  if (n_raw % chunk_ != 0) s_.chunk_raw_end.back() = S;  // a baseline's page cut inside
  addr_.resize(size_t(S));
  gist_positions_.erase(kept_gists, gist_positions_.end());
  for (size_t l = 0; l < gists.size(); l++) gists_done_[l] = int(gists[l]);
  raw_done_ = raw_queued_ = n_raw;
  logits_.clear();
  std::erase_if(records_, [S](const row_record& r) { return r.pos >= S; });
  if (S < prefill_rows_) {  // inside the prefilled context: as if only those tokens had been prefilled
    prefill_rows_ = S;
    prefill_plans_.clear();
    budget_ = -1;
  }
  // Selection state built for the rows that were cut.
  base_pos_ = -1;
  base_keys_.clear();
  dl_ = decode_lists();
  dl_rows_of_.clear();
  dl_prev_.reset();
  dl_cand_build_ = -1;
  dl_selects_ = false;
}

}  // namespace gsa::infer
