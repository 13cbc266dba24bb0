// The Jinja subset of chat templates: tokens and syntax tree, the lexer and the parser.
//
// Whitespace follows the reference renderer (@huggingface/jinja, as transformers.js calls it): one trailing
// newline of the template is dropped, lstrip_blocks and trim_blocks are on (as transformers sets them), `{%-`
// / `-%}` strip whitespace, `{% generation %}` markers vanish. Every token and node carries the line of the
// ORIGINAL template it came from, so errors can say where. Nesting is bounded (max_nesting) so a hostile
// template cannot overflow the stack.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace gsa::serve::jinja {

constexpr size_t max_template_bytes = 4u << 20;
constexpr int max_nesting = 128;  // blocks inside blocks, and parentheses/operators inside an expression
constexpr int max_tree_height = 512;  // also bounds left-deep chains (a.b.c..., 1+1+1...) the loops build

enum class tok {
  text, number, string, identifier, equals, lparen, rparen, open_stmt, close_stmt, open_expr, close_expr,
  lbracket, rbracket, lbrace, rbrace, comma, dot, colon, pipe, additive, multiplicative, power, comparison,
  unary, comment
};

struct token {
  tok type;
  std::string value;
  int line;
};

// The template's tokens. Throws gsa::error "chat template line N: ..." on a character it cannot read.
std::vector<token> tokenize(const std::string& source);

enum class nk {
  // statements
  program, if_stmt, for_stmt, set_stmt, macro_stmt, call_stmt, filter_stmt, break_stmt, continue_stmt, comment,
  // expressions (a bare expression in a block is output)
  identifier, int_lit, float_lit, str_lit, array_lit, tuple_lit, object_lit, binary, unary, filter_expr,
  test_expr, select_expr, ternary, member, slice, call, kwarg, spread, kwspread
};

struct node;
using node_ptr = std::unique_ptr<node>;

// One tagged node. What each field holds depends on the kind:
//   program        a: body
//   if_stmt        x: test, a: body, b: else body (an elif is one if_stmt there)
//   for_stmt       x: loop variable (identifier or tuple_lit), y: iterable, z: `if` filter or null,
//                  a: body, b: else body
//   set_stmt       x: target (identifier, tuple_lit or member), y: value, or null with a: block body
//   macro_stmt     text: name, a: parameters (identifier or kwarg with its default), b: body
//   call_stmt      x: the call, a: caller parameters, b: body
//   filter_stmt    x: filter (identifier or call), a: body
//   identifier     text;  int_lit / float_lit: num;  str_lit: text;  array_lit / tuple_lit: a
//   object_lit     pairs
//   binary         text: operator (+ - ~ * / // % ** == != < > <= >= in, not in, and, or), x, y
//   unary          text: not, -, +; x
//   filter_expr    x: operand, y: filter (identifier or call)
//   test_expr      x: operand, text: test name, negate
//   select_expr    x: value, y: condition (`a if b` without else)
//   ternary        x: condition, y: if true, z: if false
//   member         x: object, y: property (identifier/int_lit when !computed, else any expression or slice)
//   slice          x, y, z: start, stop, step (each may be null)
//   call           x: callee, a: arguments (expressions, kwarg, spread, kwspread)
//   kwarg          text: name, x: value;  spread / kwspread: x
struct node {
  nk kind;
  int line = 0;
  int height = 1;  // 1 + the tallest child
  std::string text;
  double num = 0;
  bool negate = false, computed = false;
  node_ptr x, y, z;
  std::vector<node_ptr> a, b;
  std::vector<std::pair<node_ptr, node_ptr>> pairs;
};

// The syntax tree of a template. Throws gsa::error naming the line on anything outside the subset.
node_ptr parse_template(const std::string& source);

}  // namespace gsa::serve::jinja
