// The gist mask as a predicate; the rules and their reasons are in visibility.h.
#include "gist/visibility.h"

#include <algorithm>

namespace gsa::gist {

visibility::visibility(const stream& s, const gsa_config& cfg) : s_(s), cfg_(cfg) {
  span_.resize(cfg.levels());
  for (int l = 0; l < cfg.levels(); l++) span_[l] = chunks_per_unit(cfg, l);
}

bool visibility::gist_rule(int mq, int mk, int j) const {
  if (j == cfg_.levels() - 1) return true;
  const int p = span_[j + 1];
  const int pq = mq / p, pk = mk / p;
  return pk == pq || pk + 1 == pq;
}

bool visibility::operator()(int q, int k) const {
  if (k < 0 || k > q) return false;
  const int lq = s_.level[q], lk = s_.level[k];
  const int mq = s_.chunk[q], mk = s_.chunk[k];
  if (lq <= 0) {
    if (lk < 0) return mk == mq || (mk < mq && mk >= mq - cfg_.local_chunks) || s_.raw_index[k] < cfg_.sink;
    return gist_rule(mq, mk, lk);
  }
  if (lk < lq - 1) return false;  // raw tokens (lk = -1) included
  return gist_rule(mq, mk, lk);
}

bool visibility::operator()(int q, int k, const std::vector<int32_t>& unfolded) const {
  if ((*this)(q, k)) return true;
  if (k < 0 || k > q) return false;
  const int lk = s_.level[k];
  if (lk >= 0 && cfg_.gists_all) return true;
  return lk <= 0 && std::binary_search(unfolded.begin(), unfolded.end(), s_.chunk[k]);
}

}  // namespace gsa::gist
