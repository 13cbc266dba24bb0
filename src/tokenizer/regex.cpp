// PCRE2 wrapper and the Oniguruma -> PCRE2 translation.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/regex.h"

#include <pcre2.h>

#include "core/error.h"
#include "tokenizer/byte-level.h"

namespace gsa::tok {
namespace {

bool is_ascii_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// Escapes whose Oniguruma meaning differs from PCRE2's (UCP mode); `in_class` selects the form usable inside [].
const char* rewrite_escape(char c, bool in_class) {
  switch (c) {
    case 's': return "\\p{White_Space}";
    case 'S': return "\\P{White_Space}";
    case 'h': return in_class ? "0-9A-Fa-f" : "[0-9A-Fa-f]";
    case 'H': return in_class ? nullptr : "[^0-9A-Fa-f]";
    case 'w': return in_class ? "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}" : "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}]";
    case 'W': return in_class ? nullptr : "[^\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}]";
    default: return nullptr;
  }
}

// Copies one escape starting at p[i] == '\\' (including a braced argument such as \p{L} or \x{41}).
size_t copy_escape(std::string_view p, size_t i, bool in_class, std::string& out, const std::string& what) {
  if (i + 1 >= p.size()) fail("{}: the regex '{}' ends with a lone backslash", what, p);
  char c = p[i + 1];
  if (const char* r = rewrite_escape(c, in_class)) {
    out += r;
    return i + 2;
  }
  size_t end = i + 2;
  if ((c == 'p' || c == 'P' || c == 'x') && end < p.size() && p[end] == '{') {
    size_t close = p.find('}', end);
    if (close == std::string_view::npos) fail("{}: the regex '{}' has an unterminated \\{}{{", what, p, c);
    end = close + 1;
  } else {
    end = i + 1 + utf8_len(uint8_t(c));
  }
  out.append(p.substr(i, end - i));
  return end;
}

}  // namespace

std::string translate_oniguruma(std::string_view p, const std::string& what) {
  std::string out;
  std::vector<bool> fold_stack;
  bool fold = false;
  size_t i = 0;
  while (i < p.size()) {
    char c = p[i];
    if (c == '\\') {
      i = copy_escape(p, i, false, out, what);
    } else if (c == '[') {
      std::string cls = "[";
      size_t j = i + 1;
      if (j < p.size() && p[j] == '^') cls += p[j++];
      if (j < p.size() && p[j] == ']') cls += p[j++];  // a leading ] is literal
      while (j < p.size() && p[j] != ']') {
        if (p[j] == '\\') {
          j = copy_escape(p, j, true, cls, what);
        } else if (p.substr(j, 2) == "[:") {
          size_t close = p.find(":]", j + 2);
          if (close == std::string_view::npos) fail("{}: the regex '{}' has an unterminated POSIX class", what, p);
          cls.append(p.substr(j, close + 2 - j));
          j = close + 2;
        } else if (p[j] == '[' || p.substr(j, 2) == "&&") {
          fail("{}: the regex '{}' has a nested character class or a class intersection; these are not supported",
               what, p);
        } else {
          cls += p[j++];
        }
      }
      if (j >= p.size()) fail("{}: the regex '{}' has an unterminated character class", what, p);
      cls += ']';
      out += fold ? "(?i:" + cls + ")" : cls;
      i = j + 1;
    } else if (c == '(') {
      fold_stack.push_back(fold);
      if (p.substr(i, 4) == "(?i:") {
        out += "(?:";
        fold = true;
        i += 4;
      } else {
        out += c;
        i++;
      }
    } else if (c == ')') {
      if (!fold_stack.empty()) {
        fold = fold_stack.back();
        fold_stack.pop_back();
      }
      out += c;
      i++;
    } else if (fold && is_ascii_letter(c)) {
      char lo = char(c | 0x20), up = char(c & ~0x20);
      out += '[';
      out += lo;
      out += up;
      out += ']';
      i++;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

regex::regex(const std::string& pattern, const std::string& what) : pattern_(pattern), what_(what) {
  pcre2_compile_context* cc = pcre2_compile_context_create(nullptr);
  pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
  int err = 0;
  PCRE2_SIZE off = 0;
  auto* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                             PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &err, &off, cc);
  pcre2_compile_context_free(cc);
  if (!code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    fail("{}: the regex '{}' does not compile at offset {}: {}", what, pattern, size_t(off),
         reinterpret_cast<const char*>(msg));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter where JIT is unavailable
  code_ = code;
}

regex::~regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void regex::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const {
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  pcre2_match_context* mc = nullptr;
  pcre2_jit_stack* js = nullptr;
  auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos <= text.size()) {
    int rc = pcre2_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, md, mc);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !js) {  // long runs (e.g. whitespace) need a larger JIT stack
      mc = pcre2_match_context_create(nullptr);
      js = pcre2_jit_stack_create(64 * 1024, 64 * 1024 * 1024, nullptr);
      pcre2_jit_stack_assign(mc, nullptr, js);
      continue;
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      pcre2_match_data_free(md);
      if (mc) pcre2_match_context_free(mc);
      if (js) pcre2_jit_stack_free(js);
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      fail("{}: the regex '{}' failed on a text of {} bytes: {} (a pattern that backtracks without bound? fix it "
           "in the tokenizer file)",
           what_, pattern_, text.size(), reinterpret_cast<const char*>(msg));
    }
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    size_t b = ov[0], e = ov[1];
    if (e > b) out.emplace_back(b, e - b);  // empty matches split nothing
    pos = e > b ? e : (b < text.size() ? b + utf8_len(uint8_t(text[b])) : text.size() + 1);
  }
  pcre2_match_data_free(md);
  if (mc) pcre2_match_context_free(mc);
  if (js) pcre2_jit_stack_free(js);
}

}  // namespace gsa::tok
