// The GPT-2 byte <-> character table, built once.
#include "tokenizer/byte-level.h"

#include <array>

namespace gsa::tok {
namespace {

struct tables {
  std::array<char32_t, 256> to_char{};
  std::array<int16_t, 0x144> to_byte{};
  tables() {
    to_byte.fill(-1);
    int n = 0;
    for (int b = 0; b < 256; b++) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      char32_t c = printable ? char32_t(b) : char32_t(256 + n++);
      to_char[b] = c;
      to_byte[c] = int16_t(b);
    }
  }
};
const tables& tab() {
  static const tables t;
  return t;
}

}  // namespace

char32_t byte_to_char(uint8_t b) { return tab().to_char[b]; }
int char_to_byte(char32_t c) { return c < 0x144 ? tab().to_byte[c] : -1; }

std::string bytes_to_byte_level(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) append_utf8(out, byte_to_char(b));
  return out;
}

size_t find_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned char b = p[i];
    if (b < 0x80) {
      i++;
      continue;
    }
    int len;
    char32_t c;
    if (b >= 0xC2 && b <= 0xDF) len = 2, c = b & 0x1F;
    else if (b >= 0xE0 && b <= 0xEF) len = 3, c = b & 0x0F;
    else if (b >= 0xF0 && b <= 0xF4) len = 4, c = b & 0x07;
    else return i;
    if (i + len > n) return i;
    for (int k = 1; k < len; k++) {
      if ((p[i + k] & 0xC0) != 0x80) return i;
      c = (c << 6) | (p[i + k] & 0x3F);
    }
    if ((len == 3 && c < 0x800) || (len == 4 && c < 0x10000) || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
      return i;
    i += len;
  }
  return std::string_view::npos;
}

std::optional<std::string> byte_level_to_bytes(std::string_view text) {
  if (find_invalid_utf8(text) != std::string_view::npos) return std::nullopt;
  std::string out;
  out.reserve(text.size());
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  for (size_t i = 0; i < text.size();) {
    int len = utf8_len(p[i]);
    char32_t c = len == 1 ? p[i] : p[i] & (0x7F >> len);
    for (int k = 1; k < len; k++) c = (c << 6) | (p[i + k] & 0x3F);
    i += len;
    int b = char_to_byte(c);
    if (b < 0) return std::nullopt;
    out += char(b);
  }
  return out;
}

}  // namespace gsa::tok
