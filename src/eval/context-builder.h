// Builds a task context of a requested length in tokens: filler units (sentences, JSON pairs, passages)
// with needles inserted between units at depth fractions of the filler. Lengths are measured with the
// caller's tokenizer callback; the builder estimates per-unit costs, assembles, measures the whole context
// and corrects its budget a few times, so it tokenizes the full context only a handful of times.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace gsa::eval {

// Token ids of a text; only the count is used. A callback that adds BOS/EOS is fine: the constant
// overhead of an empty string is subtracted.
using token_counter = std::function<std::vector<int32_t>(std::string_view)>;

// Counts whitespace-separated words: a tokenizer stand-in for tests and dry runs.
token_counter whitespace_counter();

struct context_plan {
  std::string head;  // before the first piece (instruction, opening brace); includes its own separator
  std::string tail;  // after the last piece
  std::string sep;   // between pieces
  std::function<std::string(size_t)> unit;  // the i-th filler unit of an endless stream, deterministic in i
  // Fill what the whole units leave with the first of the next 64 units that fits, to land closer to the
  // target. Units are never cut: filler ends at a unit (a sentence) boundary, so no needle follows half a
  // sentence.
  bool allow_extra = true;
  std::vector<std::string> needles;
  std::vector<double> depths;  // per needle, in [0, 1]; needles at one boundary keep their list order
  // Optional wrapper for each piece (filler or needle) by its 1-based ordinal (e.g. "Document 3: ...").
  std::function<std::string(size_t, const std::string&)> decorate;
};

struct built_context {
  std::string context;
  std::vector<size_t> needle_offsets;  // byte offset of each needle's text in context, plan order
  int64_t tokens = 0;                  // measured length of context
};

// The context closest to target_tokens from below (above only when the unit granularity forces it).
// Throws gsa::error naming `task` when the head, tail and needles alone exceed the target.
built_context build_context(const context_plan& plan, int64_t target_tokens, const token_counter& count,
                            std::string_view task);

}  // namespace gsa::eval
