#include "serve/chat-jinja-eval.h"

#include <cmath>
#include <unordered_set>
#include <vector>

#include "core/error.h"
#include "serve/chat-jinja-text.h"

namespace gsa::serve::jinja {

const value* scope::find(const std::string& name) const {
  for (const scope* s = this; s; s = s->parent)
    for (const auto& [k, v] : s->vars)
      if (k == name) return &v;
  return nullptr;
}

void scope::set(const std::string& name, value v) {
  for (auto& [k, old] : vars)
    if (k == name) {
      old = std::move(v);
      return;
    }
  vars.emplace_back(name, std::move(v));
}

void interpreter::error(const node& at, const std::string& what) const {
  fail("chat template line {}: {}", at.line, what);
}

void interpreter::step() {
  if (++steps > lim.max_steps)
    fail("chat template: gave up after {} evaluation steps (a loop too long for a chat prompt)", lim.max_steps);
}

void interpreter::check_items(size_t n, const node& at) const {
  if (n > lim.max_items) error(at, fmt::format("a list of {} items; at most {} are allowed", n, lim.max_items));
}

namespace {

struct depth_guard {
  interpreter& in;
  depth_guard(interpreter& i, const node& at) : in(i) {
    if (++in.depth > in.lim.max_depth)
      in.error(at, fmt::format("evaluation nested more than {} deep (a macro calling itself?)", in.lim.max_depth));
  }
  ~depth_guard() { in.depth--; }
};

bool numeric_like(const value& v) { return v.is_number() || v.k == kind::boolean; }
double numeric(const value& v) { return v.k == kind::boolean ? (v.b ? 1 : 0) : v.num; }

}  // namespace

std::string interpreter::render(const node& program, scope& globals) {
  std::string out;
  flow f = exec_block(program.a, globals, out);
  if (f != flow::normal) fail("chat template: '{{% break %}}' or '{{% continue %}}' outside a loop");
  return out;
}

interpreter::flow interpreter::exec_block(const std::vector<node_ptr>& body, scope& sc, std::string& out) {
  for (const auto& n : body) {
    flow f = exec(*n, sc, out);
    if (f != flow::normal) return f;
  }
  return flow::normal;
}

std::string interpreter::eval_block_string(const std::vector<node_ptr>& body, scope& sc, const char* what) {
  std::string out;
  if (exec_block(body, sc, out) != flow::normal && !body.empty())
    error(*body.front(), fmt::format("'break' or 'continue' inside {} is not supported", what));
  return out;
}

interpreter::flow interpreter::exec(const node& n, scope& sc, std::string& out) {
  step();
  depth_guard g(*this, n);
  switch (n.kind) {
    case nk::comment: case nk::macro_stmt:
      if (n.kind == nk::macro_stmt) sc.set(n.text, define_macro(n));
      return flow::normal;
    case nk::break_stmt: return flow::brk;
    case nk::continue_stmt: return flow::cont;
    case nk::if_stmt: return exec_block(truthy(eval(*n.x, sc)) ? n.a : n.b, sc, out);
    case nk::for_stmt: exec_for(n, sc, out); return flow::normal;
    case nk::set_stmt: {
      if (n.y) {
        exec_set(n, sc, eval(*n.y, sc));
        return flow::normal;
      }
      std::string body;
      flow f = exec_block(n.a, sc, body);
      if (f != flow::normal) return f;
      exec_set(n, sc, value::string(std::move(body)));
      return flow::normal;
    }
    case nk::filter_stmt: {
      std::string body;
      flow f = exec_block(n.a, sc, body);
      if (f != flow::normal) return f;
      value v = apply_filter(value::string(std::move(body)), *n.x, sc);
      if (!v.is_undefined_or_null()) append_output(out, v, out_lim);
      return flow::normal;
    }
    case nk::call_stmt: {
      // The body becomes `caller()` inside the called macro.
      // caller() reads this statement's scope, which ends with it: a caller() kept (in a namespace) and called
      // later is refused instead of reading a dead scope.
      const node* stmt = &n;
      scope* env = &sc;
      auto alive = std::make_shared<bool>(true);
      struct expire {
        std::shared_ptr<bool> flag;
        ~expire() { *flag = false; }
      } expire_at_end{alive};
      value caller = value::func("caller", [stmt, env, alive](interpreter& in, call_args& args, scope&) {
        if (!*alive) in.error(*stmt, "caller() called after its call block ended");
        scope s;
        s.parent = env;
        size_t i = 0;
        for (const auto& p : stmt->a) {
          const std::string& name = p->text;
          const value* kw = args.keyword(name);
          if (i < args.positional.size()) s.set(name, args.positional[i]);
          else if (kw) s.set(name, *kw);
          else if (p->kind == nk::kwarg) s.set(name, in.eval(*p->x, s));
          else s.set(name, value::undef());
          i++;
        }
        return value::string(in.eval_block_string(stmt->b, s, "a call block"));
      });
      call_args args = eval_args(n.x->a, sc);
      value fn = eval(*n.x->x, sc);
      scope with_caller;
      with_caller.parent = &sc;
      with_caller.set("caller", caller);
      value v = call(fn, args, with_caller, n);
      if (!v.is_undefined_or_null()) append_output(out, v, out_lim);
      return flow::normal;
    }
    case nk::str_lit:
      out += n.text;
      out_lim.check(out.size());
      return flow::normal;
    default: {
      value v = eval(n, sc);
      if (!v.is_undefined_or_null()) append_output(out, v, out_lim);
      return flow::normal;
    }
  }
}

namespace {

// Whether v holds the object d, through arrays and objects (each container visited once, an explicit stack: values
// may nest deeper than the call stack allows). Assigning such a value into d would make a cycle of shared pointers
// that is never freed (LeakSanitizer found `{% set ns.me = ns %}`).
bool holds(const value& v, const dict* d) {
  std::unordered_set<const void*> seen;
  std::vector<const value*> todo{&v};
  while (!todo.empty()) {
    const value* x = todo.back();
    todo.pop_back();
    if (x->obj) {
      if (x->obj.get() == d) return true;
      if (seen.insert(x->obj.get()).second)
        for (const auto& kv : x->obj->items) todo.push_back(&kv.second);
    }
    if (x->arr && seen.insert(x->arr.get()).second)
      for (const auto& y : *x->arr) todo.push_back(&y);
  }
  return false;
}

}  // namespace

void interpreter::exec_set(const node& n, scope& sc, const value& v) {
  const node& target = *n.x;
  if (target.kind == nk::identifier) {
    sc.set(target.text, v);
  } else if (target.kind == nk::tuple_lit) {
    if (v.k != kind::array) error(n, fmt::format("cannot unpack {} in 'set'", kind_name(v)));
    if (v.list().size() != target.a.size())
      error(n, fmt::format("'set' unpacks {} names from a list of {}", target.a.size(), v.list().size()));
    for (size_t i = 0; i < target.a.size(); i++) {
      if (target.a[i]->kind != nk::identifier) error(n, "'set' can unpack into names only");
      sc.set(target.a[i]->text, v.list()[i]);
    }
  } else {  // member: only a namespace's attribute can be assigned
    value obj = eval(*target.x, sc);
    if (obj.k != kind::name_space) error(n, "'set' can assign attributes of a namespace() only");
    if (target.computed || target.y->kind != nk::identifier) error(n, "'set ns.name = ...' needs a plain name");
    if (holds(v, obj.obj.get()))
      error(n, fmt::format("'set ... .{} = ...' would make the namespace contain itself", target.y->text));
    obj.obj->set(target.y->text, v);
  }
}

void interpreter::exec_for(const node& n, scope& sc, std::string& out) {
  scope loop_scope;
  loop_scope.parent = &sc;
  value iterable = eval(*n.y, loop_scope);
  std::vector<value> keys;
  const std::vector<value>* items;
  if (iterable.k == kind::array) {
    items = &iterable.list();
  } else if (iterable.k == kind::object) {
    for (const auto& [k, v] : iterable.obj->items) keys.push_back(value::string(k));
    items = &keys;
  } else {
    error(n, fmt::format("'for' needs a list or a dict, got {}", kind_name(iterable)));
  }
  const node& var = *n.x;
  auto bind = [&](scope& s, const value& item) {
    if (var.kind == nk::identifier) {
      s.set(var.text, item);
      return;
    }
    if (item.k != kind::array) error(n, fmt::format("cannot unpack {} into the loop variables", kind_name(item)));
    if (item.list().size() != var.a.size())
      error(n, fmt::format("the loop unpacks {} names from a list of {}", var.a.size(), item.list().size()));
    for (size_t j = 0; j < var.a.size(); j++) s.set(var.a[j]->text, item.list()[j]);
  };
  std::vector<value> selected;
  if (n.z) {
    for (const value& item : *items) {
      step();
      scope test_scope;
      test_scope.parent = &loop_scope;
      bind(test_scope, item);
      if (truthy(eval(*n.z, test_scope))) selected.push_back(item);
    }
    items = &selected;
  }
  const size_t count = items->size();
  bool iterated = false;
  for (size_t i = 0; i < count; i++) {
    step();
    auto loop = std::make_shared<dict>();
    loop->items = {{"index", value::integer(double(i + 1))},
                   {"index0", value::integer(double(i))},
                   {"revindex", value::integer(double(count - i))},
                   {"revindex0", value::integer(double(count - i - 1))},
                   {"first", value::boolean(i == 0)},
                   {"last", value::boolean(i + 1 == count)},
                   {"length", value::integer(double(count))},
                   {"previtem", i > 0 ? (*items)[i - 1] : value::undef()},
                   {"nextitem", i + 1 < count ? (*items)[i + 1] : value::undef()}};
    loop_scope.set("loop", value::object(std::move(loop)));
    bind(loop_scope, (*items)[i]);
    size_t mark = out.size();
    flow f = exec_block(n.a, loop_scope, out);
    if (f != flow::normal) {
      out.resize(mark);  // the reference drops what an interrupted iteration printed
      if (f == flow::brk) break;
      continue;
    }
    iterated = true;
  }
  if (!iterated && exec_block(n.b, loop_scope, out) != flow::normal)
    error(n, "'break' or 'continue' in a loop's else block");
}

value interpreter::define_macro(const node& n) {
  // Parameters named kwargs / varargs collect the extra arguments when the body uses them.
  bool wants_kwargs = false, wants_varargs = false;
  std::vector<const node*> stack;
  for (const auto& b : n.b) stack.push_back(b.get());
  while (!stack.empty()) {
    const node* c = stack.back();
    stack.pop_back();
    if (c->kind == nk::identifier) {
      wants_kwargs |= c->text == "kwargs";
      wants_varargs |= c->text == "varargs";
    }
    for (const node* k : {c->x.get(), c->y.get(), c->z.get()})
      if (k) stack.push_back(k);
    for (const auto& k : c->a) stack.push_back(k.get());
    for (const auto& k : c->b) stack.push_back(k.get());
    for (const auto& [k, v] : c->pairs) stack.push_back(k.get()), stack.push_back(v.get());
  }
  for (const auto& p : n.a) {
    if (p->text == "kwargs") wants_kwargs = false;
    if (p->text == "varargs") wants_varargs = false;
  }
  const node* m = &n;
  return value::func(n.text, [m, wants_kwargs, wants_varargs](interpreter& in, call_args& args, scope& caller) {
    scope s;
    s.parent = &caller;
    std::vector<std::pair<std::string, value>> kw = args.keywords;
    std::vector<const node*> pending;
    for (size_t i = 0; i < m->a.size(); i++) {
      const node& p = *m->a[i];
      value v;
      bool given = i < args.positional.size();
      if (given) v = args.positional[i];
      for (size_t k = 0; !given && k < kw.size(); k++)
        if (kw[k].first == p.text) {
          v = kw[k].second;
          kw.erase(kw.begin() + k);
          given = true;
        }
      if (!given && p.kind == nk::kwarg) pending.push_back(&p);
      s.set(p.text, v);
    }
    if (wants_kwargs) {
      auto d = std::make_shared<dict>();
      d->items = kw;
      s.set("kwargs", value::object(std::move(d)));
    } else if (!kw.empty()) {
      in.error(*m, fmt::format("macro '{}' takes no keyword argument '{}'", m->text, kw.front().first));
    }
    if (wants_varargs) {
      std::vector<value> rest;
      for (size_t i = m->a.size(); i < args.positional.size(); i++) rest.push_back(args.positional[i]);
      s.set("varargs", value::array(std::move(rest)));
    } else if (args.positional.size() > m->a.size()) {
      in.error(*m, fmt::format("macro '{}' takes at most {} argument(s), got {}", m->text, m->a.size(),
                               args.positional.size()));
    }
    for (const node* p : pending) s.set(p->text, in.eval(*p->x, s));
    return value::string(in.eval_block_string(m->b, s, "a macro"));
  });
}

call_args interpreter::eval_args(const std::vector<node_ptr>& args, scope& sc) {
  call_args out;
  for (const auto& a : args) {
    if (a->kind == nk::spread) {
      value v = eval(*a->x, sc);
      if (v.k != kind::array) error(*a, fmt::format("cannot unpack {} with '*'", kind_name(v)));
      for (const value& e : v.list()) out.positional.push_back(e);
    } else if (a->kind != nk::kwarg && a->kind != nk::kwspread) {
      out.positional.push_back(eval(*a, sc));
    }
  }
  auto add = [&](const std::string& k, value v, const node& at) {
    if (out.keyword(k)) error(at, fmt::format("keyword argument '{}' given twice", k));
    out.keywords.emplace_back(k, std::move(v));
  };
  for (const auto& a : args) {
    if (a->kind == nk::kwarg) {
      add(a->text, eval(*a->x, sc), *a);
    } else if (a->kind == nk::kwspread) {
      value v = eval(*a->x, sc);
      if (v.k != kind::object) error(*a, fmt::format("'**' needs a dict, got {}", kind_name(v)));
      for (const auto& [k, e] : v.obj->items) add(k, e, *a);
    }
  }
  return out;
}

value interpreter::call(const value& fn, call_args& args, scope& sc, const node& at) {
  if (fn.k != kind::function) error(at, fmt::format("cannot call {}", kind_name(fn)));
  return fn.fn->call(*this, args, sc);
}

value interpreter::eval(const node& n, scope& sc) {
  step();
  depth_guard g(*this, n);
  switch (n.kind) {
    case nk::identifier: {
      const value* v = sc.find(n.text);
      return v ? *v : value::undef();
    }
    case nk::int_lit: return value::integer(n.num);
    case nk::float_lit: return value::floating(n.num);
    case nk::str_lit: return value::string(n.text);
    case nk::array_lit: case nk::tuple_lit: {
      std::vector<value> items;
      for (const auto& e : n.a) items.push_back(eval(*e, sc));
      value v = value::array(std::move(items));
      v.tuple = n.kind == nk::tuple_lit;
      return v;
    }
    case nk::object_lit: {
      auto d = std::make_shared<dict>();
      for (const auto& [k, e] : n.pairs) {
        value key = eval(*k, sc);
        if (key.k != kind::string) error(*k, fmt::format("dict keys must be strings, got {}", kind_name(key)));
        d->set(key.s(), eval(*e, sc));
      }
      return value::object(std::move(d));
    }
    case nk::binary: return binary(n, sc);
    case nk::unary: {
      value v = eval(*n.x, sc);
      if (n.text == "not") return value::boolean(!truthy(v));
      if (!numeric_like(v)) error(n, fmt::format("unary '{}' needs a number, got {}", n.text, kind_name(v)));
      double r = (n.text == "-" ? -1 : 1) * numeric(v);
      return v.k == kind::floating ? value::floating(r) : value::integer(r);
    }
    case nk::filter_expr: return apply_filter(eval(*n.x, sc), *n.y, sc);
    case nk::test_expr: {
      bool r = apply_test(eval(*n.x, sc), n.text, nullptr, n);
      return value::boolean(n.negate ? !r : r);
    }
    case nk::select_expr: return truthy(eval(*n.y, sc)) ? eval(*n.x, sc) : value::undef();
    case nk::ternary: return truthy(eval(*n.x, sc)) ? eval(*n.y, sc) : eval(*n.z, sc);
    case nk::member: return member(eval(*n.x, sc), n, sc);
    case nk::call: {
      call_args args = eval_args(n.a, sc);
      value fn = eval(*n.x, sc);
      return call(fn, args, sc, n);
    }
    default:
      error(n, "this is a statement, not a value");
  }
}

value interpreter::binary(const node& n, scope& sc) {
  const std::string& op = n.text;
  value left = eval(*n.x, sc);
  if (op == "and") return truthy(left) ? eval(*n.y, sc) : left;
  if (op == "or") return truthy(left) ? left : eval(*n.y, sc);
  value right = eval(*n.y, sc);
  if (op == "==") return value::boolean(loose_equal(left, right));
  if (op == "!=") return value::boolean(!loose_equal(left, right));
  bool is_in = op == "in" || op == "not in";
  if (left.k == kind::undefined || right.k == kind::undefined) {
    if (right.k == kind::undefined && is_in) return value::boolean(op == "not in");
    error(n, fmt::format("cannot apply '{}' to an undefined value", op));
  }
  if (left.k == kind::null || right.k == kind::null) error(n, fmt::format("cannot apply '{}' to none", op));
  if (op == "~") {
    std::string s = js_string(left, out_lim);
    s += js_string(right, out_lim);
    out_lim.check(s.size());
    return value::string(std::move(s));
  }
  if (op == "**" && numeric_like(left) && numeric_like(right)) {
    double a = numeric(left), b = numeric(right);
    if (a == 0 && b < 0) error(n, "0 cannot be raised to a negative power");
    double r = std::pow(a, b);
    if (!std::isfinite(r)) error(n, "the power is not a finite number");
    bool is_float = left.k == kind::floating || right.k == kind::floating || b < 0;
    return is_float ? value::floating(r) : value::integer(r);
  }
  if (left.is_number() && right.is_number()) {
    double a = left.num, b = right.num;
    bool is_float = left.k == kind::floating || right.k == kind::floating;
    auto num = [&](double r) { return is_float ? value::floating(r) : value::integer(r); };
    if (op == "+") return num(a + b);
    if (op == "-") return num(a - b);
    if (op == "*") return num(a * b);
    if (op == "/") return value::floating(a / b);
    if (op == "//") return num(std::floor(a / b));
    if (op == "%") return num(std::fmod(a, b));
    if (op == "<") return value::boolean(a < b);
    if (op == ">") return value::boolean(a > b);
    if (op == "<=") return value::boolean(a <= b);
    if (op == ">=") return value::boolean(a >= b);
  } else if (left.k == kind::array && right.k == kind::array) {
    if (op == "+") {
      check_items(left.list().size() + right.list().size(), n);
      std::vector<value> all = left.list();
      all.insert(all.end(), right.list().begin(), right.list().end());
      return value::array(std::move(all));
    }
  } else if (right.k == kind::array && is_in) {
    bool found = false;
    for (const value& e : right.list()) found = found || strict_equal(e, left);
    return value::boolean(found == (op == "in"));
  }
  if ((left.k == kind::string || right.k == kind::string) && op == "+") {
    std::string s = js_string(left, out_lim);
    s += js_string(right, out_lim);
    out_lim.check(s.size());
    return value::string(std::move(s));
  }
  if (left.k == kind::string && right.k == kind::string && is_in)
    return value::boolean((right.s().find(left.s()) != std::string::npos) == (op == "in"));
  if (left.k == kind::string && right.k == kind::object && is_in)
    return value::boolean((right.obj->find(left.s()) != nullptr) == (op == "in"));
  error(n, fmt::format("'{}' is not defined between {} and {}", op, kind_name(left), kind_name(right)));
}

value interpreter::member(const value& obj, const node& n, scope& sc) {
  const node& p = *n.y;
  if (n.computed && p.kind == nk::slice) return slice(obj, p, sc);
  value prop = n.computed ? eval(p, sc) : p.kind == nk::int_lit ? value::integer(p.num) : value::string(p.text);
  return property(obj, prop, n);
}

value interpreter::property(const value& obj, const value& prop, const node& at) {
  if (obj.k == kind::object || obj.k == kind::name_space) {
    if (prop.k != kind::string) error(at, fmt::format("a dict's keys are strings, not {}", kind_name(prop)));
    if (const value* v = obj.obj->find(prop.s())) return *v;
    return obj.k == kind::object ? method(obj, prop.s(), at) : value::undef();
  }
  if (obj.k == kind::array || obj.k == kind::string) {
    if (prop.k == kind::integer) {
      long long i = (long long)prop.num;
      if (obj.k == kind::string) {
        std::string ch;
        return utf16_at(obj.s(), i, ch) ? value::string(ch) : value::undef();
      }
      long long size = (long long)obj.list().size();
      if (i < 0) i += size;
      return i >= 0 && i < size ? obj.list()[size_t(i)] : value::undef();
    }
    if (prop.k == kind::string) return method(obj, prop.s(), at);
    error(at, fmt::format("cannot index {} with {}", kind_name(obj), kind_name(prop)));
  }
  if (prop.k != kind::string) error(at, fmt::format("cannot index {} with {}", kind_name(obj), kind_name(prop)));
  return value::undef();  // attributes of none, undefined, numbers: undefined
}

value interpreter::slice(const value& obj, const node& s, scope& sc) {
  if (obj.k != kind::array && obj.k != kind::string) error(s, fmt::format("cannot slice {}", kind_name(obj)));
  double parts[3];
  bool given[3];
  const node* nodes[3] = {s.x.get(), s.y.get(), s.z.get()};
  for (int i = 0; i < 3; i++) {
    value v = nodes[i] ? eval(*nodes[i], sc) : value::undef();
    given[i] = v.k != kind::undefined;
    if (given[i] && v.k != kind::integer) error(s, fmt::format("slice bounds must be integers, got {}", kind_name(v)));
    parts[i] = v.num;
  }
  double step = given[2] ? parts[2] : 1;
  if (step == 0) error(s, "slice step cannot be zero");
  std::vector<char32_t> cps;
  if (obj.k == kind::string) cps = code_points(obj.s());
  double len = obj.k == kind::string ? double(cps.size()) : double(obj.list().size());
  double start, stop;
  if (step > 0) {
    start = !given[0] ? 0 : parts[0] < 0 ? std::max(len + parts[0], 0.0) : std::min(parts[0], len);
    stop = !given[1] ? len : parts[1] < 0 ? std::max(len + parts[1], 0.0) : std::min(parts[1], len);
  } else {
    start = !given[0] ? len - 1 : parts[0] < 0 ? std::max(len + parts[0], -1.0) : std::min(parts[0], len - 1);
    stop = !given[1] ? -1 : parts[1] < -1 ? std::max(len + parts[1], -1.0) : std::min(parts[1], len - 1);
  }
  std::vector<long long> idx;
  double dir = step > 0 ? 1 : -1;
  for (double i = start; dir * i < dir * stop; i += step) idx.push_back((long long)i);
  if (obj.k == kind::string) {
    std::string out;
    for (long long i : idx) out += from_code_points(&cps[i], &cps[i] + 1);
    return value::string(std::move(out));
  }
  std::vector<value> out;
  for (long long i : idx) out.push_back(obj.list()[i]);
  return value::array(std::move(out));
}

}  // namespace gsa::serve::jinja
