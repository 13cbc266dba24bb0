// Byte-level BPE training. The corpus is NFC-normalized and cut into pre-tokens by the Llama 3 split regex;
// starting from the 256 bytes, the most frequent adjacent pair (summed over pre-tokens, ties to the smaller
// pair of ids) is merged until the vocabulary, special tokens included, reaches vocab_size or no pair occurs
// min_frequency times. The result is a complete tokenizer.json in the same form as Qwen 3's (NFC, Split +
// ByteLevel, BPE with merges as pairs, ByteLevel decoder), which tokenizer::from_json and the reference load.
// Deterministic: the same texts and options give the same file.
#pragma once
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace gsa::tok {

struct bpe_train_options {
  size_t vocab_size = 32000;  // including the 256 bytes and the special tokens
  size_t min_frequency = 2;   // a pair seen fewer times is never merged
  // Added after the merges, in this order; the gist tokens are what GSA models insert (DESIGN.md 1.1).
  std::vector<std::string> special_tokens = {"<|endoftext|>", "<|gist|>", "<|gist_1|>", "<|gist_2|>", "<|gist_3|>"};
};

// tokenizer.json of a BPE trained on `texts` (UTF-8).
nlohmann::json train_bpe(std::span<const std::string> texts, const bpe_train_options& opt);

// Writes dir/tokenizer.json and a matching dir/tokenizer_config.json (creating dir).
void write_tokenizer(const nlohmann::json& tokenizer_json, const std::filesystem::path& dir);

}  // namespace gsa::tok
