// String helpers shared by the metrics and the task generators. Several LongBench metrics are defined by
// Python string methods and regular expressions, so these reproduce Python 3 semantics on UTF-8 input:
// whitespace is str.isspace() (ASCII and Unicode spaces), lengths and comparisons are over code points where
// Python's would be, and the Unicode properties (case, \w, \d) come from ICU. ICU may know a newer Unicode
// version than the Python that ran LongBench; only characters assigned in between can differ.
// Invalid UTF-8 bytes decode to U+FFFD, one per byte, so no input throws.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "core/utf8.h"

namespace gsa::eval {

// Byte offset of the first byte that is not well-formed UTF-8 (a stray continuation byte, a truncated or
// overlong sequence, a surrogate, a value past U+10FFFF); npos when the whole string is valid.
size_t find_invalid_utf8(std::string_view s);
// s with every ill-formed part replaced by U+FFFD, one per maximal invalid subpart, as Python's
// bytes.decode("utf-8", errors="replace") does (and so Hugging Face's decode of tokens that split a character).
std::string utf8_sanitize(std::string_view s);
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
// Python str.lower(): the full Unicode lowercase mapping of every script, including the one-to-many mappings
// ("\u0130" -> "i\u0307") and Greek final sigma in context, through ICU's root-locale case mapping.
std::string py_lower(std::string_view s);
// Python re's \w for str patterns: str.isalnum() (letters Lu/Ll/Lt/Lm/Lo and every character with a numeric
// value, "\u2460" included) or '_'. Combining marks, format characters (U+200B) and symbols are not word
// characters; \b sits between a \w and a non-\w character.
bool py_isword(char32_t c);
// Python re's \d for str patterns (str.isdecimal()): general category Nd, every script's decimal digits.
bool py_isdecimal(char32_t c);
// s with Python str.strip() whitespace removed at both ends.
std::string_view strip_ws(std::string_view s);

}  // namespace gsa::eval
