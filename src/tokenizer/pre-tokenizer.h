// Pre-tokenizers of tokenizer.json ("pre_tokenizer" field): Split (regex or string pattern; behaviors Isolated
// and Removed; invert), ByteLevel (optional prefix space, optional GPT-2 regex) and Sequence. They cut a
// section of normalized text into pre-tokens that BPE encodes independently. The byte-level character mapping
// itself is not done here: the BPE model works on raw bytes (see byte-level.h), so a ByteLevel step only
// contributes its splitting options.
#pragma once
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace gsa::tok {

class pre_tokenizer {
 public:
  virtual ~pre_tokenizer() = default;
  // Replaces `pieces` by their pre-tokens. Pieces are views into the caller's text or into `arena`, which
  // owns any text a step had to create (a prefix space); arena elements never move (deque).
  virtual void split(std::vector<std::string_view>& pieces, std::deque<std::string>& arena) const = 0;
  // True when some step maps bytes to the byte-level alphabet (a ByteLevel pre-tokenizer is present).
  virtual bool byte_level() const { return false; }
};

// nullptr for a JSON null. `source` names the file in error messages.
std::unique_ptr<pre_tokenizer> make_pre_tokenizer(const nlohmann::json& cfg, const std::string& source);

}  // namespace gsa::tok
