// A Hugging Face tokenizer.json, byte-level BPE (Llama 3, Qwen 2/3, GPT-2 style): normalizer, added/special
// tokens, pre-tokenizer, BPE model, post-processor and ByteLevel decoder. encode() gives the ids the reference
// (tokenizers.js / the Rust crate) gives; decode() returns raw bytes, so decode(encode(x)) == normalize(x)
// exactly (== x for tokenizers without a normalizer, such as Llama 3's).
// Anything outside byte-level BPE (WordPiece, Unigram, unknown component types) fails at load with a
// gsa::error naming the file and the type. A loaded tokenizer is immutable and thread-safe.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace gsa {

class tokenizer {
 public:
  struct added_token {
    std::string content;
    int32_t id = -1;
    bool special = false, lstrip = false, rstrip = false, normalized = false;
  };

  // `path` is a tokenizer.json or a folder holding one.
  static tokenizer load(const std::filesystem::path& path);
  // From parsed JSON; `source` names the origin in error messages.
  static tokenizer from_json(const nlohmann::json& j, const std::string& source);

  tokenizer(tokenizer&&) noexcept;
  tokenizer& operator=(tokenizer&&) noexcept;
  ~tokenizer();

  // `text` must be valid UTF-8 (gsa::error names the byte offset otherwise). Added tokens found in the text
  // (special or not) always become their ids; add_special applies the post-processor's template (BOS/EOS).
  std::vector<int32_t> encode(std::string_view text, bool add_special = false) const;
  // Raw bytes of the tokens (a piece of a multi-byte character stays as its bytes). Unknown ids throw.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // Id of a token written as in tokenizer.json (byte-level form, e.g. "Ġthe", or an added token's content),
  // -1 when absent.
  int32_t token_id(std::string_view token) const;
  // Raw bytes of one token ("" for an id not in the vocabulary).
  const std::string& token_bytes(int32_t id) const;
  // One past the largest id (vocabulary and added tokens).
  size_t vocab_size() const;
  const std::vector<added_token>& added_tokens() const;

  // Checks, at load, that this tokenizer can drive a model with `model_vocab` embedding rows whose special ids
  // (config.json's bos_token_id / eos_token_id) are `special_ids`: every id the tokenizer defines must be a row
  // of the model (a 128k tokenizer on a 4k-row model would otherwise index past the embeddings), and every special
  // id must be a token of the tokenizer (else generation stops on an id it cannot decode). Throws gsa::error
  // naming the tokenizer and `model_source`. Models may have more rows than the tokenizer (padding, gist rows).
  void check_fits_model(int64_t model_vocab, std::span<const int64_t> bos_ids, std::span<const int64_t> eos_ids,
                        const std::string& model_source) const;

 private:
  struct impl;
  explicit tokenizer(std::unique_ptr<impl> p);
  static tokenizer from_json_parts(const nlohmann::json& j, const std::string& source, const char** part);
  std::unique_ptr<impl> p_;
};

}  // namespace gsa
