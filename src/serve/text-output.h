// A completion's text, grown token by token, and how much of it may be sent yet. A stop sequence ends the text
// just before it (OpenAI's rule: the stop sequence is not returned). While streaming, bytes that could still
// become the start of a stop sequence, or that end inside a UTF-8 character (a byte-level token can split one),
// are held back until the next token resolves them.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace gsa::serve {

class text_output {
 public:
  explicit text_output(std::vector<std::string> stop = {}) : stop_(std::move(stop)) {}
  // Appends a token's bytes. Returns true when a stop sequence now occurs: the text is cut before its first
  // occurrence and nothing more should be added.
  bool add(std::string_view bytes);
  // No more tokens: everything is sendable.
  void finish() { final_ = true; }
  const std::string& text() const { return text_; }
  // Bytes of text() that can be sent now.
  size_t sendable() const;

 private:
  std::vector<std::string> stop_;
  std::string text_;
  bool stopped_ = false, final_ = false;
};

}  // namespace gsa::serve
