// Stop sequences and held-back bytes; contract in text-output.h.
#include "serve/text-output.h"

#include <algorithm>

#include "serve/api.h"

namespace gsa::serve {

bool text_output::add(std::string_view bytes) {
  if (stopped_) return true;
  size_t longest = 0;
  for (const auto& s : stop_) longest = std::max(longest, s.size());
  // A new occurrence must end inside the new bytes: search from where it could begin.
  const size_t from = text_.size() > longest ? text_.size() - longest + 1 : 0;
  text_.append(bytes);
  size_t cut = std::string::npos;
  for (const auto& s : stop_) cut = std::min(cut, text_.find(s, from));
  if (cut == std::string::npos) return false;
  text_.resize(cut);
  stopped_ = final_ = true;
  return true;
}

size_t text_output::sendable() const {
  if (final_) return text_.size();
  size_t n = text_.size();
  // Hold back the longest suffix that is a proper prefix of a stop sequence.
  for (const auto& s : stop_)
    for (size_t k = std::min(s.size() - 1, text_.size()); k > 0; k--)
      if (text_.compare(text_.size() - k, k, s, 0, k) == 0) {
        n = std::min(n, text_.size() - k);
        break;
      }
  return utf8_complete_prefix(std::string_view(text_).substr(0, n));
}

}  // namespace gsa::serve
