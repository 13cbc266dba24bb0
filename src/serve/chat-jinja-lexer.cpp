// Preprocessing (the whitespace options) and the lexer. The rules are the reference renderer's, written anew:
// inside a tag, `-` or `+` right after an operator or an opening bracket is the sign of a number literal (or a
// unary operator); after a value it is a binary operator.
#include <cstring>

#include "core/error.h"
#include "core/utf8.h"
#include "serve/chat-jinja-syntax.h"
#include "serve/chat-jinja-text.h"

namespace gsa::serve::jinja {

namespace {

// Text with the original line of every byte.
struct mapped {
  std::string s;
  std::vector<int> line;
  void put(const mapped& from, size_t i) {
    s += from.s[i];
    line.push_back(from.line[i]);
  }
  void put_range(const mapped& from, size_t begin, size_t end) {
    for (size_t i = begin; i < end; i++) put(from, i);
  }
};

bool space_at(const std::string& s, size_t i, size_t* next) {
  size_t j = i;
  bool sp = js_space(utf8_next(s, j));
  if (sp) *next = j;
  return sp;
}

size_t skip_spaces(const std::string& s, size_t i) {
  size_t next;
  while (i < s.size() && space_at(s, i, &next)) i = next;
  return i;
}

// lstrip_blocks: spaces and tabs before a block or comment tag at the start of a line go.
mapped lstrip_blocks(const mapped& in) {
  mapped out;
  const std::string& s = in.s;
  bool line_start = true;
  for (size_t i = 0; i < s.size();) {
    if (line_start) {
      size_t j = i;
      while (j < s.size() && (s[j] == ' ' || s[j] == '\t')) j++;
      if (j + 1 < s.size() && s[j] == '{' && std::strchr("#%-", s[j + 1]) && s[j + 1] != '\0') i = j;
      line_start = false;
      continue;
    }
    unsigned char c = s[i];
    // JavaScript's multiline ^ also matches after \r, U+2028 and U+2029.
    if (c == '\n' || c == '\r') {
      line_start = true;
    } else if (c == 0xE2 && i + 2 < s.size() && (unsigned char)s[i + 1] == 0x80 &&
               ((unsigned char)s[i + 2] == 0xA8 || (unsigned char)s[i + 2] == 0xA9)) {
      out.put_range(in, i, i + 3);
      i += 3;
      line_start = true;
      continue;
    }
    out.put(in, i++);
  }
  return out;
}

// trim_blocks: the newline right after a block or comment tag goes (also after `-}`).
mapped trim_blocks(const mapped& in) {
  mapped out;
  const std::string& s = in.s;
  for (size_t i = 0; i < s.size();) {
    if (std::strchr("#%-", s[i]) && s[i] != '\0' && i + 2 < s.size() && s[i + 1] == '}' && s[i + 2] == '\n') {
      out.put_range(in, i, i + 2);
      i += 3;
    } else {
      out.put(in, i++);
    }
  }
  return out;
}

// A `{% generation %}` / `{% endgeneration %}` marker at i: its end, and whether it strips left / right.
bool generation_tag(const std::string& s, size_t i, size_t* end, bool* lstrip, bool* rstrip) {
  if (s.compare(i, 2, "{%") != 0) return false;
  size_t j = i + 2;
  *lstrip = j < s.size() && s[j] == '-';
  if (*lstrip) j++;
  j = skip_spaces(s, j);
  if (s.compare(j, 3, "end") == 0 && s.compare(j + 3, 10, "generation") == 0) j += 3;
  if (s.compare(j, 10, "generation") != 0) return false;
  j = skip_spaces(s, j + 10);
  *rstrip = j < s.size() && s[j] == '-';
  if (*rstrip) j++;
  if (s.compare(j, 2, "%}") != 0) return false;
  *end = j + 2;
  return true;
}

mapped drop_generation_tags(const mapped& in) {
  if (in.s.find("generation") == std::string::npos) return in;
  mapped out;
  const std::string& s = in.s;
  size_t end;
  bool ls, rs;
  for (size_t i = 0; i < s.size();) {
    size_t run_end = skip_spaces(s, i);
    if (generation_tag(s, run_end, &end, &ls, &rs)) {
      if (!ls) out.put_range(in, i, run_end);
      size_t after = skip_spaces(s, end);
      if (!rs) out.put_range(in, end, after);
      i = after;
    } else if (run_end > i) {
      out.put_range(in, i, run_end);
      i = run_end;
    } else {
      out.put(in, i++);
    }
  }
  return out;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_word(char c) { return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
int hex_value(char c) {
  if (is_digit(c)) return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

struct lexer {
  mapped src;
  std::vector<token> tokens;
  size_t pos = 0;
  int curly_depth = 0;

  int line_at(size_t i) const {
    if (src.line.empty()) return 1;
    return src.line[std::min(i, src.line.size() - 1)];
  }
  [[noreturn]] void error(size_t at, const std::string& what) const {
    fail("chat template line {}: {}", line_at(at), what);
  }
  void push(tok type, std::string value, size_t at) { tokens.push_back({type, std::move(value), line_at(at)}); }
  tok last() const { return tokens.empty() ? tok::text : tokens.back().type; }
  bool at_start() const { return tokens.empty(); }

  void strip_trailing_whitespace() {
    if (tokens.empty() || tokens.back().type != tok::text) return;
    tokens.back().value = js_trim(tokens.back().value, false, true);
    if (tokens.back().value.empty()) tokens.pop_back();
  }
  bool starts(const char* lit) const { return src.s.compare(pos, std::strlen(lit), lit) == 0; }

  // A string literal's body after its opening quote; escapes as in JavaScript source.
  std::string string_literal(char quote, size_t open) {
    const std::string& s = src.s;
    std::string out;
    while (true) {
      if (pos >= s.size()) error(open, "string literal is not closed");
      char c = s[pos];
      if (c == quote) break;
      if (c != '\\') {
        out += c;
        pos++;
        continue;
      }
      if (++pos >= s.size()) error(open, "string literal is not closed");
      char e = s[pos++];
      if (e == 'x' || e == 'u') {
        int len = e == 'x' ? 2 : 4;
        char32_t v = 0;
        for (int k = 0; k < len; k++) {
          int h = pos + k < s.size() ? hex_value(s[pos + k]) : -1;
          if (h < 0) error(pos, fmt::format("invalid \\{} escape in a string literal", e));
          v = v * 16 + h;
        }
        pos += len;
        // A surrogate pair written as two \u escapes is one character.
        if (v >= 0xD800 && v <= 0xDBFF && s.compare(pos, 2, "\\u") == 0) {
          char32_t lo = 0;
          bool ok = pos + 6 <= s.size();
          for (int k = 0; ok && k < 4; k++) {
            int h = hex_value(s[pos + 2 + k]);
            ok = h >= 0;
            lo = lo * 16 + h;
          }
          if (ok && lo >= 0xDC00 && lo <= 0xDFFF) {
            v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
            pos += 6;
          }
        }
        utf8_append(out, v >= 0xD800 && v <= 0xDFFF ? char32_t(0xFFFD) : v);
        continue;
      }
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'v': out += '\v'; break;
        case '\'': case '"': case '\\': out += e; break;
        default: error(pos - 1, fmt::format("unknown escape '\\{}' in a string literal", e));
      }
    }
    pos++;  // the closing quote
    return out;
  }

  std::string digits() {
    size_t b = pos;
    while (pos < src.s.size() && is_digit(src.s[pos])) pos++;
    return src.s.substr(b, pos - b);
  }

  void run() {
    const std::string& s = src.s;
    while (pos < s.size()) {
      tok lt = last();
      if (at_start() || lt == tok::close_stmt || lt == tok::close_expr || lt == tok::comment) {
        size_t b = pos;
        while (pos < s.size() && !(s[pos] == '{' && pos + 1 < s.size() && std::strchr("%{#", s[pos + 1]) &&
                                   s[pos + 1] != '\0'))
          pos++;
        if (pos > b) {
          push(tok::text, s.substr(b, pos - b), b);
          continue;
        }
      }
      if (starts("{#")) {
        size_t open = pos;
        pos += 2;
        bool strip_before = pos < s.size() && s[pos] == '-';
        if (strip_before) pos++;
        size_t close = s.find("#}", pos);
        if (close == std::string::npos) error(open, "comment '{#' is not closed with '#}'");
        std::string body = s.substr(pos, close - pos);
        bool strip_after = !body.empty() && body.back() == '-';
        if (strip_before) strip_trailing_whitespace();
        push(tok::comment, body, open);
        pos = close + 2;
        if (strip_after) pos = skip_spaces(s, pos);
        continue;
      }
      if (starts("{%-") || starts("{{-")) {
        strip_trailing_whitespace();
        bool stmt = s[pos + 1] == '%';
        push(stmt ? tok::open_stmt : tok::open_expr, stmt ? "{%" : "{{", pos);
        if (!stmt) curly_depth = 0;
        pos += 3;
        continue;
      }
      pos = skip_spaces(s, pos);
      if (pos >= s.size()) error(s.size() - 1, "the template ends inside a tag");
      if (starts("-%}") || starts("-}}")) {
        bool stmt = s[pos + 1] == '%';
        push(stmt ? tok::close_stmt : tok::close_expr, stmt ? "%}" : "}}", pos);
        pos = skip_spaces(s, pos + 3);
        continue;
      }
      char c = s[pos];
      if (c == '-' || c == '+') {
        if (at_start() || lt == tok::text) error(pos, fmt::format("unexpected '{}' outside a tag", c));
        if (lt != tok::identifier && lt != tok::number && lt != tok::string && lt != tok::rparen &&
            lt != tok::rbracket) {
          size_t at = pos++;
          std::string num = digits();
          if (!num.empty() && pos + 1 < s.size() && s[pos] == '.' && is_digit(s[pos + 1])) {
            pos++;
            num += "." + digits();
          }
          push(num.empty() ? tok::unary : tok::number, std::string(1, c) + num, at);
          continue;
        }
      }
      if (operator_token()) continue;
      if (c == '\'' || c == '"') {
        size_t open = pos++;
        push(tok::string, string_literal(c, open), open);
        continue;
      }
      if (is_digit(c)) {
        size_t at = pos;
        std::string num = digits();
        if (last() != tok::dot && pos + 1 < s.size() && s[pos] == '.' && is_digit(s[pos + 1])) {
          pos++;
          num += "." + digits();
        }
        push(tok::number, num, at);
        continue;
      }
      if (is_word(c)) {
        size_t b = pos;
        while (pos < s.size() && is_word(s[pos])) pos++;
        push(tok::identifier, s.substr(b, pos - b), b);
        continue;
      }
      size_t i = pos;
      std::string ch;
      utf8_append(ch, utf8_next(s, i));
      error(pos, fmt::format("unexpected character '{}'", ch));
    }
  }

  bool operator_token() {
    static const std::pair<const char*, tok> table[] = {
        {"{%", tok::open_stmt}, {"%}", tok::close_stmt}, {"{{", tok::open_expr}, {"}}", tok::close_expr},
        {"(", tok::lparen}, {")", tok::rparen}, {"{", tok::lbrace}, {"}", tok::rbrace},
        {"[", tok::lbracket}, {"]", tok::rbracket}, {",", tok::comma}, {".", tok::dot}, {":", tok::colon},
        {"|", tok::pipe}, {"<=", tok::comparison}, {">=", tok::comparison}, {"==", tok::comparison},
        {"!=", tok::comparison}, {"<", tok::comparison}, {">", tok::comparison}, {"+", tok::additive},
        {"-", tok::additive}, {"~", tok::additive}, {"**", tok::power}, {"*", tok::multiplicative},
        {"//", tok::multiplicative}, {"/", tok::multiplicative}, {"%", tok::multiplicative}, {"=", tok::equals}};
    for (const auto& [seq, type] : table) {
      if (type == tok::close_expr && curly_depth > 0) continue;  // `}}` closing a dict literal
      if (!starts(seq)) continue;
      push(type, seq, pos);
      if (type == tok::open_expr) curly_depth = 0;
      if (type == tok::lbrace) curly_depth++;
      if (type == tok::rbrace) curly_depth--;
      pos += std::strlen(seq);
      return true;
    }
    return false;
  }
};

}  // namespace

std::vector<token> tokenize(const std::string& source) {
  if (source.size() > max_template_bytes)
    fail("chat template is {} bytes; at most {} are accepted", source.size(), max_template_bytes);
  mapped m;
  m.s = source;
  m.line.resize(source.size());
  int line = 1;
  for (size_t i = 0; i < source.size(); i++) {
    m.line[i] = line;
    if (source[i] == '\n') line++;
  }
  if (!m.s.empty() && m.s.back() == '\n') {
    m.s.pop_back();
    m.line.pop_back();
  }
  lexer lx;
  lx.src = drop_generation_tags(trim_blocks(lstrip_blocks(m)));
  lx.run();
  return std::move(lx.tokens);
}

}  // namespace gsa::serve::jinja
