#include "serve/chat-jinja-text.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <memory>

#include <unicode/ucasemap.h>

#include "core/utf8.h"

namespace gsa::serve::jinja {

char32_t utf8_next(std::string_view s, size_t& i) {
  unsigned char c = s[i];
  int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (len == 1) {
    i++;
    return c;
  }
  if (len == 0 || i + len > s.size()) {
    i++;
    return 0xFFFD;
  }
  char32_t cp = c & (0x7F >> len);
  for (int k = 1; k < len; k++) {
    unsigned char d = s[i + k];
    if ((d & 0xC0) != 0x80) {
      i++;
      return 0xFFFD;
    }
    cp = (cp << 6) | (d & 0x3F);
  }
  // Overlong forms, surrogates and values past U+10FFFF are not characters.
  static const char32_t min_for_len[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < min_for_len[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    i++;
    return 0xFFFD;
  }
  i += len;
  return cp;
}

std::vector<char32_t> code_points(std::string_view s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) out.push_back(utf8_next(s, i));
  return out;
}

std::string from_code_points(const char32_t* begin, const char32_t* end) {
  std::string out;
  for (const char32_t* p = begin; p != end; ++p) utf8_append(out, *p);
  return out;
}

bool js_space(char32_t c) {
  switch (c) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20: case 0xA0: case 0x1680:
    case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000: case 0xFEFF:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200A;
  }
}

std::string js_trim(std::string_view s, bool left, bool right) {
  size_t begin = 0, end = s.size();
  if (left) {
    while (begin < end) {
      size_t next = begin;
      if (!js_space(utf8_next(s, next))) break;
      begin = next;
    }
  }
  if (right) {
    // Walk forward remembering where the trailing run of spaces starts (UTF-8 cannot be decoded backwards
    // safely when it is invalid).
    size_t i = begin, run = end;
    bool in_run = false;
    while (i < end) {
      size_t at = i;
      bool sp = js_space(utf8_next(s, i));
      if (sp && !in_run) run = at, in_run = true;
      if (!sp) in_run = false;
    }
    if (in_run) end = run;
  }
  return std::string(s.substr(begin, end - begin));
}

size_t utf16_length(std::string_view s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size();) n += utf8_next(s, i) >= 0x10000 ? 2 : 1;
  return n;
}

bool utf16_at(std::string_view s, long long i, std::string& out) {
  long long len = (long long)utf16_length(s);
  if (i < 0) i += len;
  if (i < 0 || i >= len) return false;
  long long unit = 0;
  for (size_t p = 0; p < s.size();) {
    char32_t c = utf8_next(s, p);
    int w = c >= 0x10000 ? 2 : 1;
    if (i < unit + w) {
      out.clear();
      utf8_append(out, i == unit ? (w == 2 ? char32_t(0xFFFD) : c) : char32_t(0xFFFD));
      return true;
    }
    unit += w;
  }
  return false;
}

namespace {

std::string case_map(std::string_view s, bool upper) {
  UErrorCode err = U_ZERO_ERROR;
  std::unique_ptr<UCaseMap, void (*)(UCaseMap*)> map(ucasemap_open("", 0, &err), ucasemap_close);
  std::string out(s.size() + 16, '\0');
  for (int attempt = 0; attempt < 2 && U_SUCCESS(err); attempt++) {
    err = U_ZERO_ERROR;
    int32_t n = upper ? ucasemap_utf8ToUpper(map.get(), out.data(), (int32_t)out.size(), s.data(), (int32_t)s.size(), &err)
                      : ucasemap_utf8ToLower(map.get(), out.data(), (int32_t)out.size(), s.data(), (int32_t)s.size(), &err);
    if (err == U_BUFFER_OVERFLOW_ERROR) {
      out.assign(n, '\0');
      err = U_ZERO_ERROR;
      continue;
    }
    if (U_SUCCESS(err)) {
      out.resize(n);
      return out;
    }
  }
  // ICU refused (invalid UTF-8): ASCII mapping keeps the other bytes as they are.
  std::string ascii(s);
  for (char& c : ascii) {
    if (upper && c >= 'a' && c <= 'z') c = char(c - 32);
    if (!upper && c >= 'A' && c <= 'Z') c = char(c + 32);
  }
  return ascii;
}

}  // namespace

std::string to_upper(std::string_view s) { return case_map(s, true); }
std::string to_lower(std::string_view s) { return case_map(s, false); }

std::string js_number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  if (v == 0) return "0";
  // Shortest round-trip digits and exponent, then ECMAScript's Number::toString layout.
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, std::fabs(v), std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  size_t e_at = sci.find('e');
  std::string digits;
  for (size_t i = 0; i < e_at; i++)
    if (sci[i] != '.') digits += sci[i];
  int n = std::stoi(sci.substr(e_at + 1)) + 1;  // the decimal point sits after n digits
  int k = (int)digits.size();
  std::string out = v < 0 ? "-" : "";
  if (k <= n && n <= 21) {
    out += digits + std::string(n - k, '0');
  } else if (0 < n && n <= 21) {
    out += digits.substr(0, n) + "." + digits.substr(n);
  } else if (-6 < n && n <= 0) {
    out += "0." + std::string(-n, '0') + digits;
  } else {
    out += digits.substr(0, 1);
    if (k > 1) out += "." + digits.substr(1);
    out += n - 1 >= 0 ? "e+" : "e-";
    out += std::to_string(std::abs(n - 1));
  }
  return out;
}

void json_quote(std::string& out, std::string_view s, bool ensure_ascii) {
  static const char* hex = "0123456789abcdef";
  auto unit = [&](unsigned u) {
    out += "\\u";
    for (int shift = 12; shift >= 0; shift -= 4) out += hex[(u >> shift) & 15];
  };
  out += '"';
  for (size_t i = 0; i < s.size();) {
    size_t at = i;
    char32_t c = utf8_next(s, i);
    switch (c) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      default: break;
    }
    if (c < 0x20) {
      unit(c);
    } else if (ensure_ascii && c >= 0x7F) {
      if (c >= 0x10000) {
        unit(0xD800 + ((c - 0x10000) >> 10));
        unit(0xDC00 + ((c - 0x10000) & 0x3FF));
      } else {
        unit(c);
      }
    } else if (c == 0xFFFD && i - at == 1) {
      utf8_append(out, c);  // an invalid byte: emit the replacement character, never the raw byte
    } else {
      out.append(s.substr(at, i - at));
    }
  }
  out += '"';
}

}  // namespace gsa::serve::jinja
