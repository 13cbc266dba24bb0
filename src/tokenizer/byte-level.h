// The GPT-2 byte-level alphabet: each of the 256 byte values is shown as one printable Unicode character
// (printable Latin-1 bytes as themselves, the rest as U+0100..U+0143), so that any byte string is a string of
// "characters" BPE can merge. Vocabularies of byte-level tokenizers are written in this alphabet; the encoder
// works on raw bytes and only translates at load (vocab, merges) and when writing a tokenizer.json.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/utf8.h"

namespace gsa::tok {

// The code point that stands for byte b.
char32_t byte_to_char(uint8_t b);
// The byte a code point stands for, or -1 when it is outside the alphabet.
int char_to_byte(char32_t c);

// Raw bytes -> byte-level text (UTF-8 of the alphabet characters).
std::string bytes_to_byte_level(std::string_view bytes);
// Byte-level text -> raw bytes; nullopt if the text is not valid UTF-8 or uses a character outside the alphabet.
std::optional<std::string> byte_level_to_bytes(std::string_view text);

// UTF-8 helpers shared by the tokenizer files.
inline void append_utf8(std::string& out, char32_t c) { ::gsa::utf8_append(out, c); }
// Offset of the first invalid UTF-8 sequence, or npos when the whole text is valid (no overlongs,
// no surrogates, nothing above U+10FFFF).
size_t find_invalid_utf8(std::string_view s);
// Length in bytes of the UTF-8 sequence that starts with lead byte b (1 for continuation/invalid bytes).
inline int utf8_len(uint8_t b) { return b < 0x80 ? 1 : b < 0xE0 ? 2 - (b < 0xC0) : b < 0xF0 ? 3 : 4; }

}  // namespace gsa::tok
