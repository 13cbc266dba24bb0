// A compiled Unicode regular expression (PCRE2, 8-bit, UTF + UCP, JIT) for the Split pre-tokenizer.
// tokenizer.json patterns are written for Oniguruma (the Rust tokenizers crate); translate_oniguruma() maps
// the constructs whose meaning differs in PCRE2 onto PCRE2 syntax the way the reference (tokenizers.js) does:
// \s is Unicode White_Space, \h is a hex digit, (?i:...) folds ASCII letters only, ^ and $ are line anchors.
// A regex object is immutable after construction and may be used from several threads at once.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace gsa::tok {

std::string translate_oniguruma(std::string_view pattern, const std::string& what);

class regex {
 public:
  // `pattern` is PCRE2 syntax; `what` names the source in the error message when it does not compile.
  regex(const std::string& pattern, const std::string& what);
  ~regex();
  regex(const regex&) = delete;
  regex& operator=(const regex&) = delete;

  // Every non-empty, non-overlapping match in valid UTF-8 `text`, left to right, as (offset, length) pairs
  // (appended). After an empty match the search moves on by one character, like JavaScript's matchAll.
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;

 private:
  void* code_ = nullptr;  // pcre2_code_8*
  std::string pattern_, what_;  // for errors
};

}  // namespace gsa::tok
