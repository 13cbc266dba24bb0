// Text normalizers of tokenizer.json ("normalizer" field): NFC, NFD, NFKC, NFKD (through ICU), Lowercase,
// Prepend, Replace (plain string pattern) and Sequence. Input and output are UTF-8; an unknown type is a
// gsa::error naming the tokenizer file and the type.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace gsa::tok {

class normalizer {
 public:
  virtual ~normalizer() = default;
  virtual std::string apply(std::string_view text) const = 0;
};

// nullptr for a JSON null (no normalization). `source` names the file in error messages.
std::unique_ptr<normalizer> make_normalizer(const nlohmann::json& cfg, const std::string& source);

// Unicode NFC of UTF-8 text (the text must be valid UTF-8).
std::string nfc(std::string_view text);

}  // namespace gsa::tok
