// Python-compatible string helpers over UTF-8 (see text-util.h).
#include "eval/text-util.h"

#include <unicode/uchar.h>
#include <unicode/ustring.h>

#include "core/error.h"

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

namespace {

// Bytes of the well-formed sequence at s[i], or 0 when it is ill-formed; `bad` is then the length of the
// maximal invalid subpart (the lead byte and the continuation bytes that were still acceptable).
size_t utf8_sequence(std::string_view s, size_t i, size_t& bad) {
  const uint8_t c = uint8_t(s[i]);
  bad = 1;
  if (c < 0x80) return 1;
  const size_t n = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
  if (n == 0) return 0;
  for (size_t k = 1; k < n; k++) {
    if (i + k >= s.size()) return 0;
    const uint8_t b = uint8_t(s[i + k]);
    // The second byte's range excludes overlong forms, surrogates and values past U+10FFFF.
    const uint8_t lo = k > 1 ? 0x80 : c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;
    const uint8_t hi = k > 1 ? 0xBF : c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
    if (b < lo || b > hi) return 0;
    bad = k + 1;
  }
  return n;
}

}  // namespace

size_t find_invalid_utf8(std::string_view s) {
  for (size_t i = 0, bad = 0; i < s.size();) {
    const size_t n = utf8_sequence(s, i, bad);
    if (n == 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

std::string utf8_sanitize(std::string_view s) {
  if (find_invalid_utf8(s) == std::string_view::npos) return std::string(s);
  std::string out;
  out.reserve(s.size() + 8);
  for (size_t i = 0, bad = 0; i < s.size();) {
    const size_t n = utf8_sequence(s, i, bad);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      i += bad;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

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

std::string py_lower(std::string_view s) {
  if (s.empty()) return {};
  // UTF-8 -> UTF-16 (invalid bytes become U+FFFD), lowercase, back. Lowercasing can lengthen the text
  // (U+0130 -> two code points), so retry once with the size ICU asks for.
  UErrorCode err = U_ZERO_ERROR;
  int32_t n16 = 0;
  std::u16string src(s.size(), u'\0');
  u_strFromUTF8WithSub(src.data(), int32_t(src.size()), &n16, s.data(), int32_t(s.size()), 0xFFFD, nullptr, &err);
  GSA_ASSERT(U_SUCCESS(err), "u_strFromUTF8WithSub: {}", u_errorName(err));
  src.resize(size_t(n16));
  std::u16string low(src.size() + 8, u'\0');
  err = U_ZERO_ERROR;
  int32_t nlow = u_strToLower(low.data(), int32_t(low.size()), src.data(), n16, "", &err);
  if (err == U_BUFFER_OVERFLOW_ERROR) {
    low.assign(size_t(nlow), u'\0');
    err = U_ZERO_ERROR;
    nlow = u_strToLower(low.data(), int32_t(low.size()), src.data(), n16, "", &err);
  }
  GSA_ASSERT(U_SUCCESS(err), "u_strToLower: {}", u_errorName(err));
  std::string out(size_t(nlow) * 3, '\0');
  int32_t n8 = 0;
  err = U_ZERO_ERROR;
  u_strToUTF8(out.data(), int32_t(out.size()), &n8, low.data(), nlow, &err);
  GSA_ASSERT(U_SUCCESS(err), "u_strToUTF8: {}", u_errorName(err));
  out.resize(size_t(n8));
  return out;
}

bool py_isword(char32_t c) {
  if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  const UChar32 u = UChar32(c);
  switch (u_charType(u)) {
    case U_UPPERCASE_LETTER:
    case U_LOWERCASE_LETTER:
    case U_TITLECASE_LETTER:
    case U_MODIFIER_LETTER:
    case U_OTHER_LETTER:
      return true;
    default:
      return u_getIntPropertyValue(u, UCHAR_NUMERIC_TYPE) != U_NT_NONE;
  }
}

bool py_isdecimal(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  return u_charType(UChar32(c)) == U_DECIMAL_DIGIT_NUMBER;
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
