// BPE training with incremental pair counts: each merge only revisits the pre-tokens that contain the merged
// pair, and a lazy max-heap (stale entries are skipped when their count no longer matches) finds the next pair.
#include "tokenizer/bpe-trainer.h"

#include <algorithm>
#include <deque>
#include <fstream>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/byte-level.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/pre-tokenizer.h"

namespace gsa::tok {
namespace {

using json = nlohmann::json;

const char* split_regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

json pre_tokenizer_json() {
  return {{"type", "Sequence"},
          {"pretokenizers",
           json::array({{{"type", "Split"}, {"pattern", {{"Regex", split_regex}}}, {"behavior", "Isolated"},
                         {"invert", false}},
                        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false},
                         {"use_regex", false}}})}};
}

uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

struct word {
  std::vector<int32_t> sym;
  int64_t freq;
};

struct candidate {
  int64_t count;
  uint64_t pair;
  // Max-heap: larger count first, then the smaller pair of ids.
  bool operator<(const candidate& o) const { return count != o.count ? count < o.count : pair > o.pair; }
};

}  // namespace

json train_bpe(std::span<const std::string> texts, const bpe_train_options& opt) {
  const size_t n_special = opt.special_tokens.size();
  if (opt.vocab_size < 256 + n_special)
    fail("BPE vocabulary size {} is too small: it must hold the 256 bytes and {} special tokens",
         opt.vocab_size, n_special);

  // Count pre-tokens.
  auto pre = make_pre_tokenizer(pre_tokenizer_json(), "BPE trainer");
  std::unordered_map<std::string, int64_t> counts;
  for (const std::string& raw : texts) {
    if (size_t bad = find_invalid_utf8(raw); bad != std::string::npos)
      fail("training text is not valid UTF-8 (byte offset {}); convert it to UTF-8 first", bad);
    std::string text = nfc(raw);
    std::vector<std::string_view> pieces{text};
    std::deque<std::string> arena;
    pre->split(pieces, arena);
    for (auto p : pieces) counts[std::string(p)]++;
  }
  std::vector<std::pair<std::string, int64_t>> sorted(counts.begin(), counts.end());
  std::sort(sorted.begin(), sorted.end());  // a fixed order makes training deterministic
  std::vector<word> words;
  words.reserve(sorted.size());
  for (auto& [w, f] : sorted) {
    word x{{}, f};
    for (unsigned char b : w) x.sym.push_back(b);
    words.push_back(std::move(x));
  }

  // Token strings (raw bytes); ids 0..255 are the bytes themselves.
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; b++) tokens.emplace_back(1, char(b));

  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<uint32_t>> where;  // pair -> words that had it (may repeat)
  auto add_pairs = [&](uint32_t wi, int64_t sign) {
    const word& w = words[wi];
    for (size_t i = 0; i + 1 < w.sym.size(); i++) {
      uint64_t k = pair_key(w.sym[i], w.sym[i + 1]);
      pair_count[k] += sign * w.freq;
      if (sign > 0) where[k].push_back(wi);
    }
  };
  for (uint32_t wi = 0; wi < words.size(); wi++) add_pairs(wi, +1);
  std::priority_queue<candidate> heap;
  for (auto& [k, c] : pair_count) heap.push({c, k});

  json merges = json::array();
  const size_t target_merges = opt.vocab_size - 256 - n_special;
  std::vector<uint32_t> seen(words.size(), UINT32_MAX);
  while (merges.size() < target_merges && !heap.empty()) {
    candidate top = heap.top();
    heap.pop();
    auto it = pair_count.find(top.pair);
    if (it == pair_count.end() || it->second != top.count) continue;  // stale
    if (top.count < int64_t(opt.min_frequency)) break;
    const int32_t a = int32_t(top.pair >> 32), b = int32_t(uint32_t(top.pair));
    const int32_t c = int32_t(tokens.size());
    tokens.push_back(tokens[a] + tokens[b]);
    merges.push_back(json::array({bytes_to_byte_level(tokens[a]), bytes_to_byte_level(tokens[b])}));

    std::unordered_set<uint64_t> touched;
    std::vector<uint32_t> users = std::move(where[top.pair]);
    where.erase(top.pair);
    for (uint32_t wi : users) {
      if (seen[wi] == uint32_t(c)) continue;  // listed twice
      seen[wi] = uint32_t(c);
      word& w = words[wi];
      bool has = false;
      for (size_t i = 0; i + 1 < w.sym.size() && !has; i++) has = w.sym[i] == a && w.sym[i + 1] == b;
      if (!has) continue;
      for (size_t i = 0; i + 1 < w.sym.size(); i++) touched.insert(pair_key(w.sym[i], w.sym[i + 1]));
      add_pairs(wi, -1);
      std::vector<int32_t> next;
      next.reserve(w.sym.size());
      for (size_t i = 0; i < w.sym.size(); i++) {
        if (i + 1 < w.sym.size() && w.sym[i] == a && w.sym[i + 1] == b) {
          next.push_back(c);
          i++;
        } else {
          next.push_back(w.sym[i]);
        }
      }
      w.sym.swap(next);
      add_pairs(wi, +1);
      for (size_t i = 0; i + 1 < w.sym.size(); i++) touched.insert(pair_key(w.sym[i], w.sym[i + 1]));
    }
    pair_count.erase(top.pair);
    std::vector<uint64_t> order(touched.begin(), touched.end());
    std::sort(order.begin(), order.end());
    for (uint64_t k : order) {
      auto pc = pair_count.find(k);
      if (pc == pair_count.end()) continue;
      if (pc->second <= 0) pair_count.erase(pc);
      else heap.push({pc->second, k});
    }
  }

  json vocab = json::object();
  for (size_t id = 0; id < tokens.size(); id++) vocab[bytes_to_byte_level(tokens[id])] = id;
  json added = json::array();
  for (size_t i = 0; i < n_special; i++)
    added.push_back({{"id", tokens.size() + i}, {"content", opt.special_tokens[i]}, {"single_word", false},
                     {"lstrip", false}, {"rstrip", false}, {"normalized", false}, {"special", true}});
  json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}};
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer", {{"type", "NFC"}}},
          {"pre_tokenizer", pre_tokenizer_json()},
          {"post_processor", byte_level},
          {"decoder", byte_level},
          {"model",
           {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
            {"ignore_merges", false}, {"vocab", vocab}, {"merges", merges}}}};
}

void write_tokenizer(const json& tj, const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) fail("cannot create {}: {}", dir.string(), ec.message());
  json decoder = json::object();
  std::string eos;
  for (const auto& a : tj.at("added_tokens")) {
    decoder[std::to_string(a.at("id").get<int64_t>())] = a;
    if (eos.empty()) eos = a.at("content").get<std::string>();
  }
  json cfg = {{"added_tokens_decoder", decoder},
              {"clean_up_tokenization_spaces", false},
              {"model_max_length", 131072},
              {"tokenizer_class", "PreTrainedTokenizerFast"}};
  if (!eos.empty()) cfg["eos_token"] = eos;
  using file = std::pair<const char*, const json*>;
  for (auto [name, j] : {file{"tokenizer.json", &tj}, file{"tokenizer_config.json", &cfg}}) {
    std::ofstream f(dir / name, std::ios::binary);
    f << j->dump(1) << "\n";
    if (!f) fail("cannot write {}", (dir / name).string());
  }
}

}  // namespace gsa::tok
