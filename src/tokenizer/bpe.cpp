// BPE merging over byte ids.
#include "tokenizer/bpe.h"

#include <algorithm>
#include <queue>

namespace gsa::tok {

void merge_table::reserve(size_t n) {
  size_t cap = 16;
  while (cap < n * 2) cap *= 2;
  std::vector<entry> old;
  old.swap(slots_);
  slots_.assign(cap, entry{empty, 0, 0});
  mask_ = cap - 1;
  size_ = 0;
  for (auto& e : old)
    if (e.key != empty) insert(int32_t(e.key >> 32), int32_t(uint32_t(e.key)), e.rank, e.merged);
}

void merge_table::insert(int32_t left, int32_t right, int32_t rank, int32_t merged) {
  if ((size_ + 1) * 2 > slots_.size()) reserve(std::max<size_t>(16, size_ * 2 + 2));
  uint64_t k = key(left, right);
  for (size_t i = hash(k) & mask_;; i = (i + 1) & mask_) {
    entry& e = slots_[i];
    if (e.key == k) {
      e.rank = rank;
      e.merged = merged;
      return;
    }
    if (e.key == empty) {
      e = entry{k, rank, merged};
      size_++;
      return;
    }
  }
}

namespace {

// Short words: repeatedly merge the best adjacent pair, scanning the whole (small) symbol list.
void merge_scan(const merge_table& mt, std::vector<int32_t>& sym) {
  while (sym.size() > 1) {
    int32_t best_rank = INT32_MAX, best_merged = -1;
    size_t best = 0;
    for (size_t i = 0; i + 1 < sym.size(); i++) {
      const auto* e = mt.find(sym[i], sym[i + 1]);
      if (e && e->rank < best_rank) best_rank = e->rank, best_merged = e->merged, best = i;
    }
    if (best_merged < 0) return;
    sym[best] = best_merged;
    sym.erase(sym.begin() + best + 1);
  }
}

// Long words: a min-heap of candidate pairs keyed by (rank, left position), with stale entries skipped.
void merge_heap(const merge_table& mt, std::vector<int32_t>& sym) {
  const int n = int(sym.size());
  std::vector<int> next(n), prev(n);
  for (int i = 0; i < n; i++) next[i] = i + 1 < n ? i + 1 : -1, prev[i] = i - 1;
  struct cand {
    int32_t rank;
    int left, right;
    int32_t left_id, right_id;
    bool operator>(const cand& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<cand, std::vector<cand>, std::greater<cand>> q;
  auto push = [&](int l) {
    int r = next[l];
    if (r < 0) return;
    if (const auto* e = mt.find(sym[l], sym[r])) q.push(cand{e->rank, l, r, sym[l], sym[r]});
  };
  for (int i = 0; i + 1 < n; i++) push(i);
  std::vector<char> alive(n, 1);
  while (!q.empty()) {
    cand c = q.top();
    q.pop();
    if (!alive[c.left] || !alive[c.right] || next[c.left] != c.right || sym[c.left] != c.left_id ||
        sym[c.right] != c.right_id)
      continue;
    sym[c.left] = mt.find(c.left_id, c.right_id)->merged;
    alive[c.right] = 0;
    next[c.left] = next[c.right];
    if (next[c.left] >= 0) prev[next[c.left]] = c.left;
    if (prev[c.left] >= 0) push(prev[c.left]);
    push(c.left);
  }
  size_t k = 0;
  for (int i = 0; i >= 0 && i < n; i = next[i]) sym[k++] = sym[i];
  sym.resize(k);
}

}  // namespace

void bpe_model::encode_word(std::string_view word, std::vector<int32_t>& out, size_t heap_from) const {
  if (word.empty()) return;
  if (word.size() == 1) {
    out.push_back(byte_id[uint8_t(word[0])]);
    return;
  }
  if (ignore_merges) {
    auto it = bytes_to_id.find(std::string(word));
    if (it != bytes_to_id.end()) {
      out.push_back(it->second);
      return;
    }
  }
  thread_local std::vector<int32_t> sym;
  sym.resize(word.size());
  for (size_t i = 0; i < word.size(); i++) sym[i] = byte_id[uint8_t(word[i])];
  if (word.size() >= heap_from) merge_heap(merges, sym);
  else merge_scan(merges, sym);
  out.insert(out.end(), sym.begin(), sym.end());
}

void bpe_model::encode(std::span<const std::string_view> words, std::vector<int32_t>& out,
                       bpe_cache& cache) const {
  for (std::string_view w : words) {
    if (w.size() > 64) {  // long words are rare and not worth the hashing
      encode_word(w, out);
      continue;
    }
    auto [it, fresh] = cache.words.try_emplace(std::string(w));
    if (fresh) {
      uint32_t b = uint32_t(cache.ids.size());
      encode_word(w, cache.ids);
      it->second = {b, uint32_t(cache.ids.size() - b)};
    }
    auto first = cache.ids.begin() + it->second.first;
    out.insert(out.end(), first, first + it->second.second);
  }
}

}  // namespace gsa::tok
