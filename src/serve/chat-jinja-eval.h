// The chat-template evaluator: walks the syntax tree (chat-jinja-syntax.h) over values (chat-jinja-value.h).
// Semantics are the reference renderer's: `set` inside a loop body stays in the loop, macros see the caller's
// variables, a `for` over a dict walks its keys, `break` drops the output of its iteration so far.
//
// Untrusted templates are bounded: the evaluation depth (macro recursion), the number of steps, the length of
// any list and the size of any string (and of the output) are limited; going past a limit is a gsa::error.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "serve/chat-jinja-syntax.h"
#include "serve/chat-jinja-value.h"

namespace gsa::serve::jinja {

struct limits {
  size_t max_output = size_t(64) << 20;  // bytes of any string the template builds, the output included
  uint64_t max_steps = 20'000'000;       // nodes evaluated plus loop iterations (about a second)
  int max_depth = 1000;                  // nested evaluation frames (macro recursion)
  size_t max_items = size_t(1) << 20;    // elements of a list the template builds (range, +)
};

struct scope {
  scope* parent = nullptr;
  std::vector<std::pair<std::string, value>> vars;
  // The variable, or nullptr when no enclosing scope has it.
  const value* find(const std::string& name) const;
  void set(const std::string& name, value v);
};

struct interpreter {
  limits lim;
  size_limit out_lim;
  uint64_t steps = 0;
  int depth = 0;

  explicit interpreter(const limits& l) : lim(l), out_lim{l.max_output} {}

  enum class flow { normal, brk, cont };
  // Renders a whole program; throws gsa::error on any failure.
  std::string render(const node& program, scope& globals);

  flow exec_block(const std::vector<node_ptr>& body, scope& sc, std::string& out);
  flow exec(const node& n, scope& sc, std::string& out);
  value eval(const node& n, scope& sc);
  std::string eval_block_string(const std::vector<node_ptr>& body, scope& sc, const char* what);

  call_args eval_args(const std::vector<node_ptr>& args, scope& sc);
  value call(const value& fn, call_args& args, scope& sc, const node& at);
  value binary(const node& n, scope& sc);
  value member(const value& obj, const node& n, scope& sc);
  value property(const value& obj, const value& prop, const node& at);
  value slice(const value& obj, const node& s, scope& sc);
  void exec_for(const node& n, scope& sc, std::string& out);
  void exec_set(const node& n, scope& sc, const value& v);
  value define_macro(const node& n);

  // chat-jinja-builtins.cpp
  value apply_filter(const value& operand, const node& filter, scope& sc);
  bool apply_test(const value& operand, const std::string& name, const value* arg, const node& at);
  value method(const value& obj, const std::string& name, const node& at);  // a string's or dict's builtin

  void step();
  void check_items(size_t n, const node& at) const;
  [[noreturn]] void error(const node& at, const std::string& what) const;
};

// true, false, none (and True, False, None), namespace, range, raise_exception, strftime_now.
void install_globals(scope& globals);

}  // namespace gsa::serve::jinja
