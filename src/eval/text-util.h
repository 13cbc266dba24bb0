// String helpers shared by the metrics and the task generators. Several LongBench metrics are defined by
// Python string methods, so these reproduce Python 3 semantics on UTF-8 input: whitespace is str.isspace()
// (ASCII and Unicode spaces), lengths and comparisons are over code points where Python's would be.
// Invalid UTF-8 bytes decode to U+FFFD, one per byte, so no input throws.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "core/utf8.h"

namespace gsa::eval {

// Code points of a UTF-8 string.
std::u32string utf8_decode(std::string_view s);
using ::gsa::utf8_append;

// Python str.isspace() for one code point.
bool py_isspace(char32_t c);

// Python s.split(): runs of whitespace separate, leading/trailing whitespace ignored, no empty pieces.
std::vector<std::string> split_ws(std::string_view s);
// Python s.split(sep) with a non-empty separator: keeps empty pieces ("a..b" -> "a", "", "b").
std::vector<std::string> split_on(std::string_view s, std::string_view sep);
// " ".join(s.split()).
std::string collapse_ws(std::string_view s);
std::string join(const std::vector<std::string>& parts, std::string_view sep);
// ASCII lowercase (non-ASCII bytes untouched).
std::string ascii_lower(std::string_view s);
// s with Python str.strip() whitespace removed at both ends.
std::string_view strip_ws(std::string_view s);

}  // namespace gsa::eval
