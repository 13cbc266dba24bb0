// Text helpers for the chat-template renderer. The reference renderer (@huggingface/jinja) runs on JavaScript
// strings, so its string operations follow JavaScript's rules: `trim` and `split()` use JavaScript's whitespace
// set (which includes U+00A0, U+3000, U+FEFF ...), `length` counts UTF-16 code units, numbers print as
// Number.prototype.toString prints them and `tojson` quotes as JSON.stringify does. These functions reproduce
// those rules on UTF-8 strings. Invalid UTF-8 bytes decode as U+FFFD, one byte each.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace gsa::serve::jinja {

// The code point at s[i]; advances i past it.
char32_t utf8_next(std::string_view s, size_t& i);
std::vector<char32_t> code_points(std::string_view s);
std::string from_code_points(const char32_t* begin, const char32_t* end);

// JavaScript's \s (and String.prototype.trim's) whitespace.
bool js_space(char32_t c);
std::string js_trim(std::string_view s, bool left = true, bool right = true);
// String.prototype.length: UTF-16 code units.
size_t utf16_length(std::string_view s);
// The character at UTF-16 index i (negative counts from the end), as String.prototype.at; an index inside a
// surrogate pair gives U+FFFD (JavaScript would give half a pair). false when out of range.
bool utf16_at(std::string_view s, long long i, std::string& out);

// Full Unicode case mapping (String.prototype.toUpperCase / toLowerCase), through ICU.
std::string to_upper(std::string_view s);
std::string to_lower(std::string_view s);

// Number.prototype.toString (shortest round trip; "1e+21", "1.5e-7", "NaN", "Infinity").
std::string js_number(double v);
// JSON.stringify of a string; ensure_ascii escapes every UTF-16 unit from U+007F up as \uXXXX.
void json_quote(std::string& out, std::string_view s, bool ensure_ascii);

}  // namespace gsa::serve::jinja
