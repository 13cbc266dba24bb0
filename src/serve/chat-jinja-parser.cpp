// Recursive-descent parser for the chat-template subset. Precedence, loosest first: `a if b else c`, or, and,
// not, comparisons (== != < > <= >= in, not in), + - ~, * / // %, **, `is` tests, `|` filters, unary - +,
// calls / member access / indexing / slicing, literals. This is the grammar the reference renderer accepts
// (its quirks included: `is` binds tighter than `**`, arrays may omit commas); what it does not accept is an
// error naming the line.
#include <algorithm>

#include "core/error.h"
#include "serve/chat-jinja-syntax.h"

namespace gsa::serve::jinja {

namespace {

const char* tok_name(tok t) {
  switch (t) {
    case tok::text: return "text";
    case tok::number: return "a number";
    case tok::string: return "a string";
    case tok::identifier: return "a name";
    case tok::equals: return "'='";
    case tok::lparen: return "'('";
    case tok::rparen: return "')'";
    case tok::open_stmt: return "'{%'";
    case tok::close_stmt: return "'%}'";
    case tok::open_expr: return "'{{'";
    case tok::close_expr: return "'}}'";
    case tok::lbracket: return "'['";
    case tok::rbracket: return "']'";
    case tok::lbrace: return "'{'";
    case tok::rbrace: return "'}'";
    case tok::comma: return "','";
    case tok::dot: return "'.'";
    case tok::colon: return "':'";
    case tok::pipe: return "'|'";
    case tok::additive: return "an operator";
    case tok::multiplicative: return "an operator";
    case tok::power: return "'**'";
    case tok::comparison: return "a comparison";
    case tok::unary: return "a sign";
    case tok::comment: return "a comment";
  }
  return "a token";
}

struct parser {
  const std::vector<token>& t;
  size_t cur = 0;
  int depth = 0;

  struct guard {
    parser& p;
    guard(parser& p_, int line) : p(p_) {
      if (++p.depth > max_nesting)
        fail("chat template line {}: nested more than {} levels deep (blocks, brackets or operators)", line,
             max_nesting);
    }
    ~guard() { p.depth--; }
  };

  bool eof() const { return cur >= t.size(); }
  int line() const { return t.empty() ? 1 : t[std::min(cur, t.size() - 1)].line; }
  std::string describe() const {
    if (eof()) return "the end of the template";
    const token& k = t[cur];
    if (k.type == tok::identifier || k.type == tok::number) return "'" + k.value + "'";
    if (k.type == tok::string) return "a string";
    if (k.type == tok::additive || k.type == tok::multiplicative || k.type == tok::comparison ||
        k.type == tok::unary)
      return "'" + k.value + "'";
    return tok_name(k.type);
  }
  [[noreturn]] void error(const std::string& what) const {
    fail("chat template line {}: {}, found {}", line(), what, describe());
  }
  bool is(tok type, size_t ahead = 0) const { return cur + ahead < t.size() && t[cur + ahead].type == type; }
  bool is_name(const char* name, size_t ahead = 0) const {
    return is(tok::identifier, ahead) && t[cur + ahead].value == name;
  }
  bool is_statement(std::initializer_list<const char*> names) const {
    if (!is(tok::open_stmt) || !is(tok::identifier, 1)) return false;
    for (const char* n : names)
      if (t[cur + 1].value == n) return true;
    return false;
  }
  const token& expect(tok type, const char* what) {
    if (!is(type)) error(fmt::format("expected {} {}", tok_name(type), what));
    return t[cur++];
  }
  void expect_name(const char* name) {
    if (!is_name(name)) error(fmt::format("expected '{}'", name));
    cur++;
  }

  node_ptr make(nk kind, int ln) {
    auto n = std::make_unique<node>();
    n->kind = kind;
    n->line = ln;
    return n;
  }
  // Sets the height from the children; refuses trees too tall to walk recursively.
  node_ptr finish(node_ptr n) {
    int h = 0;
    for (const node* c : {n->x.get(), n->y.get(), n->z.get()})
      if (c) h = std::max(h, c->height);
    for (const auto& c : n->a) h = std::max(h, c->height);
    for (const auto& c : n->b) h = std::max(h, c->height);
    for (const auto& [k, v] : n->pairs) h = std::max({h, k->height, v->height});
    n->height = h + 1;
    if (n->height > max_tree_height)
      fail("chat template line {}: expression or block nesting deeper than {}", n->line, max_tree_height);
    return n;
  }
  node_ptr make2(nk kind, int ln, std::string text, node_ptr x, node_ptr y = nullptr) {
    auto n = make(kind, ln);
    n->text = std::move(text);
    n->x = std::move(x);
    n->y = std::move(y);
    return finish(std::move(n));
  }

  // ---- statements ----
  node_ptr parse_any() {
    if (eof()) error("expected text, '{{' or '{%'");
    const token& k = t[cur];
    switch (k.type) {
      case tok::comment: {
        cur++;
        return make(nk::comment, k.line);
      }
      case tok::text: {
        cur++;
        auto n = make(nk::str_lit, k.line);
        n->text = k.value;
        return n;
      }
      case tok::open_stmt: return parse_statement();
      case tok::open_expr: {
        cur++;
        auto e = parse_expression();
        expect(tok::close_expr, "to close '{{'");
        return e;
      }
      default: error("unexpected token");
    }
  }

  // Statements until one of `ends`; the opening statement's name and line make the error when none comes.
  std::vector<node_ptr> parse_body(std::initializer_list<const char*> ends, const char* opened, int open_line) {
    std::vector<node_ptr> body;
    while (!is_statement(ends)) {
      if (eof())
        fail("chat template line {}: '{{% {} %}}' is never closed (expected '{{% {} %}}' before the end)",
             open_line, opened, *ends.begin());
      body.push_back(parse_any());
    }
    return body;
  }
  void parse_end(const char* name) {
    expect(tok::open_stmt, "");
    expect_name(name);
    expect(tok::close_stmt, fmt::format("after '{}'", name).c_str());
  }

  node_ptr parse_statement() {
    guard g(*this, line());
    expect(tok::open_stmt, "");
    if (!is(tok::identifier)) error("expected a statement name after '{%'");
    const token& name = t[cur++];
    int ln = name.line;
    const std::string& n = name.value;
    if (n == "set") return parse_set(ln);
    if (n == "if") {
      auto r = parse_if(ln);
      parse_end("endif");
      return r;
    }
    if (n == "for") {
      auto r = parse_for(ln);
      parse_end("endfor");
      return r;
    }
    if (n == "macro") {
      auto r = make(nk::macro_stmt, ln);
      if (!is(tok::identifier)) error("expected the macro's name");
      r->text = t[cur++].value;
      r->a = parse_args(true);
      expect(tok::close_stmt, "after the macro's parameters");
      r->b = parse_body({"endmacro"}, "macro", ln);
      parse_end("endmacro");
      return finish(std::move(r));
    }
    if (n == "call") {
      auto r = make(nk::call_stmt, ln);
      if (is(tok::lparen)) r->a = parse_args(true);
      if (!is(tok::identifier)) error("expected a macro name after 'call'");
      auto callee = make(nk::identifier, line());
      callee->text = t[cur++].value;
      auto call = make(nk::call, ln);
      call->x = std::move(callee);
      call->a = parse_args(false);
      r->x = finish(std::move(call));
      expect(tok::close_stmt, "after the call");
      r->b = parse_body({"endcall"}, "call", ln);
      parse_end("endcall");
      return finish(std::move(r));
    }
    if (n == "filter") {
      auto r = make(nk::filter_stmt, ln);
      r->x = parse_filter_spec();
      expect(tok::close_stmt, "after the filter");
      r->a = parse_body({"endfilter"}, "filter", ln);
      parse_end("endfilter");
      return finish(std::move(r));
    }
    if (n == "break" || n == "continue") {
      expect(tok::close_stmt, fmt::format("after '{}'", n).c_str());
      return make(n == "break" ? nk::break_stmt : nk::continue_stmt, ln);
    }
    if (n == "endif" || n == "endfor" || n == "else" || n == "elif" || n == "endmacro" || n == "endset" ||
        n == "endcall" || n == "endfilter")
      fail("chat template line {}: '{{% {} %}}' without the block it would close", ln, n);
    fail("chat template line {}: unknown statement '{{% {} %}}' (supported: set, if, for, macro, call, filter, "
         "break, continue)", ln, n);
  }

  node_ptr parse_set(int ln) {
    auto r = make(nk::set_stmt, ln);
    r->x = parse_sequence(false);
    if (r->x->kind != nk::identifier && r->x->kind != nk::tuple_lit && r->x->kind != nk::member)
      fail("chat template line {}: 'set' needs a name, names or ns.attribute on its left", ln);
    if (is(tok::equals)) {
      cur++;
      r->y = parse_sequence(false);
    } else {
      expect(tok::close_stmt, "or '=' after the name in 'set'");
      r->a = parse_body({"endset"}, "set", ln);
      expect(tok::open_stmt, "");
      expect_name("endset");
    }
    expect(tok::close_stmt, "to close 'set'");
    return finish(std::move(r));
  }

  node_ptr parse_if(int ln) {
    auto r = make(nk::if_stmt, ln);
    r->x = parse_expression();
    expect(tok::close_stmt, "after the condition of 'if'");
    r->a = parse_body({"elif", "else", "endif"}, "if", ln);
    if (is_statement({"elif"})) {
      int eln = t[cur + 1].line;
      cur += 2;
      r->b.push_back(parse_if(eln));
    } else if (is_statement({"else"})) {
      cur += 2;
      expect(tok::close_stmt, "after 'else'");
      r->b = parse_body({"endif"}, "if", ln);
    }
    return finish(std::move(r));
  }

  node_ptr parse_for(int ln) {
    auto r = make(nk::for_stmt, ln);
    r->x = parse_sequence(true);
    if (r->x->kind != nk::identifier && r->x->kind != nk::tuple_lit)
      fail("chat template line {}: 'for' needs a name or names before 'in'", ln);
    for (const auto& v : r->x->a)
      if (v->kind != nk::identifier) fail("chat template line {}: 'for' can unpack into names only", ln);
    if (!is_name("in")) error("expected 'in' after the loop variable");
    cur++;
    auto iterable = parse_expression();
    if (iterable->kind == nk::select_expr) {  // for x in xs if cond
      r->y = std::move(iterable->x);
      r->z = std::move(iterable->y);
    } else {
      r->y = std::move(iterable);
    }
    expect(tok::close_stmt, "after the loop header");
    r->a = parse_body({"endfor", "else"}, "for", ln);
    if (is_statement({"else"})) {
      cur += 2;
      expect(tok::close_stmt, "after 'else'");
      r->b = parse_body({"endfor"}, "for", ln);
    }
    return finish(std::move(r));
  }

  node_ptr parse_filter_spec() {
    if (!is(tok::identifier)) error("expected a filter name");
    auto f = make(nk::identifier, line());
    f->text = t[cur++].value;
    if (!is(tok::lparen)) return f;
    auto call = make(nk::call, f->line);
    call->x = std::move(f);
    call->a = parse_args(false);
    return finish(std::move(call));
  }

  // ---- expressions ----
  node_ptr parse_sequence(bool primary) {
    int ln = line();
    auto first = primary ? parse_primary() : parse_expression();
    if (!is(tok::comma)) return first;
    auto tuple = make(nk::tuple_lit, ln);
    tuple->a.push_back(std::move(first));
    while (is(tok::comma)) {
      cur++;
      tuple->a.push_back(primary ? parse_primary() : parse_expression());
    }
    return finish(std::move(tuple));
  }

  node_ptr parse_expression() {
    guard g(*this, line());
    int ln = line();
    auto a = parse_or();
    if (!is_name("if")) return a;
    cur++;
    auto test = parse_or();
    if (is_name("else")) {
      cur++;
      auto r = make(nk::ternary, ln);
      r->x = std::move(test);
      r->y = std::move(a);
      r->z = parse_expression();
      return finish(std::move(r));
    }
    return make2(nk::select_expr, ln, "", std::move(a), std::move(test));
  }

  node_ptr parse_or() {
    auto left = parse_and();
    while (is_name("or")) {
      int ln = t[cur++].line;
      left = make2(nk::binary, ln, "or", std::move(left), parse_and());
    }
    return left;
  }
  node_ptr parse_and() {
    auto left = parse_not();
    while (is_name("and")) {
      int ln = t[cur++].line;
      left = make2(nk::binary, ln, "and", std::move(left), parse_not());
    }
    return left;
  }
  node_ptr parse_not() {
    if (!is_name("not")) return parse_comparison();
    guard g(*this, line());
    int ln = t[cur++].line;
    return make2(nk::unary, ln, "not", parse_not());
  }
  node_ptr parse_comparison() {
    auto left = parse_additive();
    while (true) {
      std::string op;
      int ln = line();
      if (is_name("not") && is_name("in", 1)) {
        op = "not in";
        cur += 2;
      } else if (is_name("in") || is(tok::comparison)) {
        op = t[cur++].value;
      } else {
        return left;
      }
      left = make2(nk::binary, ln, op, std::move(left), parse_additive());
    }
  }
  node_ptr parse_additive() {
    auto left = parse_multiplicative();
    while (is(tok::additive)) {
      const token& op = t[cur++];
      left = make2(nk::binary, op.line, op.value, std::move(left), parse_multiplicative());
    }
    return left;
  }
  node_ptr parse_multiplicative() {
    auto left = parse_power();
    while (is(tok::multiplicative)) {
      const token& op = t[cur++];
      left = make2(nk::binary, op.line, op.value, std::move(left), parse_power());
    }
    return left;
  }
  node_ptr parse_power() {
    auto left = parse_test();
    while (is(tok::power)) {
      const token& op = t[cur++];
      left = make2(nk::binary, op.line, op.value, std::move(left), parse_test());
    }
    return left;
  }
  node_ptr parse_test() {
    auto operand = parse_filter();
    while (is_name("is")) {
      int ln = t[cur++].line;
      bool negate = is_name("not");
      if (negate) cur++;
      if (!is(tok::identifier)) error("expected a test name after 'is'");
      auto r = make2(nk::test_expr, ln, t[cur++].value, std::move(operand));
      r->negate = negate;
      operand = std::move(r);
    }
    return operand;
  }
  node_ptr parse_filter() {
    auto operand = parse_unary_sign();
    while (is(tok::pipe)) {
      int ln = t[cur++].line;
      operand = make2(nk::filter_expr, ln, "", std::move(operand), parse_filter_spec());
    }
    return operand;
  }
  node_ptr parse_unary_sign() {
    if ((is(tok::unary) || is(tok::additive)) && (t[cur].value == "-" || t[cur].value == "+")) {
      guard g(*this, line());
      const token& op = t[cur++];
      return make2(nk::unary, op.line, op.value, parse_unary_sign());
    }
    return parse_call_member();
  }
  node_ptr parse_call_member() {
    auto e = parse_member(parse_primary());
    while (is(tok::lparen)) {
      auto call = make(nk::call, line());
      call->x = std::move(e);
      call->a = parse_args(false);
      e = parse_member(finish(std::move(call)));
    }
    return e;
  }

  // ( args ) of a call (kwargs, *spread, **spread) or of a macro's parameter list (names, name=default).
  std::vector<node_ptr> parse_args(bool parameters) {
    expect(tok::lparen, "to open the argument list");
    std::vector<node_ptr> args;
    bool keyword_seen = false;
    while (!is(tok::rparen)) {
      if (eof()) error("expected ')' to close the argument list");
      int ln = line();
      bool kwspread = is(tok::power), spread = is(tok::multiplicative) && t[cur].value == "*";
      if (parameters && (kwspread || spread)) error("argument unpacking in a parameter list");
      node_ptr arg;
      if (kwspread || spread) {
        cur++;
        arg = make2(kwspread ? nk::kwspread : nk::spread, ln, "", parse_expression());
      } else {
        arg = parse_expression();
        if (is(tok::equals)) {
          cur++;
          if (arg->kind != nk::identifier) error("a keyword argument needs a name before '='");
          arg = make2(nk::kwarg, ln, arg->text, parse_expression());
        }
        if (parameters && arg->kind != nk::identifier && arg->kind != nk::kwarg)
          fail("chat template line {}: a macro parameter must be a name or name=default", ln);
        if (arg->kind == nk::kwarg) keyword_seen = true;
        else if (keyword_seen)
          fail("chat template line {}: positional argument after a keyword argument", ln);
      }
      args.push_back(std::move(arg));
      if (is(tok::comma)) cur++;
      else if (!is(tok::rparen)) error("expected ',' or ')' in the argument list");
    }
    cur++;
    return args;
  }

  node_ptr parse_member(node_ptr object) {
    while (is(tok::dot) || is(tok::lbracket)) {
      int ln = line();
      bool computed = t[cur++].type == tok::lbracket;
      node_ptr prop;
      if (!computed) {
        if (!is(tok::identifier) && !(is(tok::number) && t[cur].value.find_first_of(".-+") == std::string::npos))
          error("expected a name after '.'");
        prop = make(is(tok::identifier) ? nk::identifier : nk::int_lit, ln);
        prop->text = t[cur].value;
        prop->num = prop->kind == nk::int_lit ? std::stod(t[cur].value) : 0;
        cur++;
      } else {
        prop = parse_subscript();
        expect(tok::rbracket, "to close '['");
      }
      auto m = make2(nk::member, ln, "", std::move(object), std::move(prop));
      m->computed = computed;
      object = std::move(m);
    }
    return object;
  }
  // [i] or [start:stop:step]
  node_ptr parse_subscript() {
    int ln = line();
    std::vector<node_ptr> parts;
    bool is_slice = false;
    while (!is(tok::rbracket)) {
      if (eof()) error("expected ']'");
      if (is(tok::colon)) {
        parts.push_back(nullptr);
        cur++;
        is_slice = true;
        continue;
      }
      if (!parts.empty() && !is_slice) error("expected ':' or ']' in a subscript");
      parts.push_back(parse_expression());
      if (is(tok::colon)) {
        cur++;
        is_slice = true;
      }
    }
    if (parts.empty()) error("expected an index or a slice in '[]'");
    if (!is_slice) return std::move(parts[0]);
    if (parts.size() > 3) fail("chat template line {}: a slice has at most 3 parts", ln);
    auto s = make(nk::slice, ln);
    parts.resize(3);
    s->x = std::move(parts[0]);
    s->y = std::move(parts[1]);
    s->z = std::move(parts[2]);
    return finish(std::move(s));
  }

  node_ptr parse_primary() {
    if (eof()) error("expected a value");
    const token& k = t[cur++];
    switch (k.type) {
      case tok::number: {
        auto n = make(k.value.find('.') == std::string::npos ? nk::int_lit : nk::float_lit, k.line);
        n->num = std::stod(k.value);
        return n;
      }
      case tok::string: {
        auto n = make(nk::str_lit, k.line);
        n->text = k.value;
        while (is(tok::string)) n->text += t[cur++].value;  // adjacent literals concatenate
        return n;
      }
      case tok::identifier: {
        auto n = make(nk::identifier, k.line);
        n->text = k.value;
        return n;
      }
      case tok::lparen: {
        guard g(*this, k.line);
        auto e = parse_sequence(false);
        expect(tok::rparen, "to close '('");
        return e;
      }
      case tok::lbracket: {
        guard g(*this, k.line);
        auto n = make(nk::array_lit, k.line);
        while (!is(tok::rbracket)) {
          if (eof()) error("expected ']' to close the list");
          n->a.push_back(parse_expression());
          if (is(tok::comma)) cur++;
        }
        cur++;
        return finish(std::move(n));
      }
      case tok::lbrace: {
        guard g(*this, k.line);
        auto n = make(nk::object_lit, k.line);
        while (!is(tok::rbrace)) {
          if (eof()) error("expected '}' to close the dict");
          auto key = parse_expression();
          expect(tok::colon, "between a key and its value");
          n->pairs.emplace_back(std::move(key), parse_expression());
          if (is(tok::comma)) cur++;
        }
        cur++;
        return finish(std::move(n));
      }
      default:
        cur--;
        error("expected a value");
    }
  }
};

}  // namespace

node_ptr parse_template(const std::string& source) {
  std::vector<token> tokens = tokenize(source);
  parser p{tokens};
  auto program = std::make_unique<node>();
  program->kind = nk::program;
  program->line = 1;
  while (!p.eof()) program->a.push_back(p.parse_any());
  return p.finish(std::move(program));
}

}  // namespace gsa::serve::jinja
