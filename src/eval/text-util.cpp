// Python-compatible string helpers over UTF-8 (see text-util.h).
#include "eval/text-util.h"

namespace gsa::eval {

namespace {

// Decodes one code point at s[i]; sets len to the bytes consumed (>= 1).
char32_t decode_one(std::string_view s, size_t i, size_t& len) {
  auto b = [&](size_t k) { return uint8_t(s[i + k]); };
  uint8_t c = b(0);
  len = 1;
  if (c < 0x80) return c;
  size_t n = c >= 0xF0 && c < 0xF8 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 0;
  if (n == 0 || i + n > s.size()) return 0xFFFD;
  char32_t cp = n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
  for (size_t k = 1; k < n; k++) {
    if ((b(k) & 0xC0) != 0x80) return 0xFFFD;
    cp = (cp << 6) | (b(k) & 0x3F);
  }
  len = n;
  return cp;
}

}  // namespace

std::u32string utf8_decode(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0, len = 0; i < s.size(); i += len) out.push_back(decode_one(s, i, len));
  return out;
}

bool py_isspace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

std::vector<std::string> split_ws(std::string_view s) {
  std::vector<std::string> out;
  size_t start = std::string_view::npos;
  for (size_t i = 0, len = 0; i < s.size(); i += len) {
    bool space = py_isspace(decode_one(s, i, len));
    if (space && start != std::string_view::npos) {
      out.emplace_back(s.substr(start, i - start));
      start = std::string_view::npos;
    } else if (!space && start == std::string_view::npos) {
      start = i;
    }
  }
  if (start != std::string_view::npos) out.emplace_back(s.substr(start));
  return out;
}

std::vector<std::string> split_on(std::string_view s, std::string_view sep) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (true) {
    size_t hit = s.find(sep, pos);
    if (hit == std::string_view::npos) break;
    out.emplace_back(s.substr(pos, hit - pos));
    pos = hit + sep.size();
  }
  out.emplace_back(s.substr(pos));
  return out;
}

std::string collapse_ws(std::string_view s) { return join(split_ws(s), " "); }

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); i++) {
    if (i) out += sep;
    out += parts[i];
  }
  return out;
}

std::string ascii_lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
  return out;
}

std::string_view strip_ws(std::string_view s) {
  size_t b = 0, e = s.size();
  // Whitespace code points are at most 3 bytes; scan by decoding from the front, and by
  // finding the last non-space code point from the front too (UTF-8 is not easily read backwards).
  size_t last_end = 0;
  bool seen = false;
  for (size_t i = 0, len = 0; i < s.size(); i += len) {
    bool space = py_isspace(decode_one(s, i, len));
    if (!space) {
      if (!seen) b = i;
      seen = true;
      last_end = i + len;
    }
  }
  if (!seen) return s.substr(0, 0);
  e = last_end;
  return s.substr(b, e - b);
}

}  // namespace gsa::eval
