// Byte-level BPE model: vocabulary and ranked merges over raw bytes. A word (one pre-token, raw bytes) starts
// as one symbol per byte and the adjacent pair with the lowest merge rank is merged until none applies; ties
// go to the leftmost pair. This is the reference's order exactly (rank, then position), so ids agree.
// With ignore_merges (Llama 3) a word that is itself a vocabulary entry is emitted whole, before any merging.
// Immutable after construction; encode() is safe to call from several threads.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace gsa::tok {

// Open-addressing map (left id, right id) -> (rank, merged id): the encoder's inner loop is this lookup.
class merge_table {
 public:
  struct entry {
    uint64_t key;
    int32_t rank;
    int32_t merged;
  };
  void reserve(size_t n);
  // Later insertions of the same pair overwrite earlier ones (the reference keeps the last rank).
  void insert(int32_t left, int32_t right, int32_t rank, int32_t merged);
  const entry* find(int32_t left, int32_t right) const {
    uint64_t k = key(left, right);
    for (size_t i = hash(k) & mask_;; i = (i + 1) & mask_) {
      const entry& e = slots_[i];
      if (e.key == k) return &e;
      if (e.key == empty) return nullptr;
    }
  }
  size_t size() const { return size_; }

 private:
  static constexpr uint64_t empty = ~uint64_t(0);
  static uint64_t key(int32_t l, int32_t r) { return (uint64_t(uint32_t(l)) << 32) | uint32_t(r); }
  static size_t hash(uint64_t k) { return size_t((k * 0x9E3779B97F4A7C15ull) >> 20); }
  std::vector<entry> slots_;
  size_t mask_ = 0, size_ = 0;
};

// Ids of words already encoded during one encode() call; text repeats its words, so most are hits.
struct bpe_cache {
  std::unordered_map<std::string, std::pair<uint32_t, uint32_t>> words;  // word -> range of ids
  std::vector<int32_t> ids;
};

struct bpe_model {
  std::unordered_map<std::string, int32_t> bytes_to_id;  // raw-byte token -> id (the model's vocab)
  int32_t byte_id[256];                                   // id of each single byte
  merge_table merges;
  bool ignore_merges = false;

  // Appends the ids of each word (raw bytes), looking short words up in `cache` first.
  void encode(std::span<const std::string_view> words, std::vector<int32_t>& out, bpe_cache& cache) const;
  // One word. Words longer than heap_from bytes use a heap (O(n log n)); shorter ones a scan (O(n^2), faster
  // for the short words that dominate text). Both give the same ids; tests check that.
  void encode_word(std::string_view word, std::vector<int32_t>& out, size_t heap_from = 48) const;
};

}  // namespace gsa::tok
