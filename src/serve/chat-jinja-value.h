// Values of the chat-template evaluator. They behave as the reference renderer's (@huggingface/jinja) runtime
// values: numbers are JavaScript doubles tagged integer or float, `==` is JavaScript's loose equality on the
// underlying values, lists and dicts compare by identity, dicts keep insertion order, printing a list or dict
// prints its JSON. Lists and dicts are shared (copying a value is cheap); only namespaces are ever mutated.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace gsa::serve::jinja {

enum class kind : unsigned char {
  undefined, null, boolean, integer, floating, string, array, object, name_space, function
};

struct value;
struct dict {
  std::vector<std::pair<std::string, value>> items;
  const value* find(const std::string& key) const;
  void set(const std::string& key, value v);
};
struct interpreter;
struct scope;
struct call_args {
  std::vector<value> positional;
  std::vector<std::pair<std::string, value>> keywords;
  const value* keyword(const std::string& name) const;
};
struct function {
  std::string name;
  std::function<value(interpreter&, call_args&, scope&)> call;
};

struct value {
  kind k = kind::undefined;
  bool tuple = false;  // an array made by (a, b): prints and behaves as a list
  bool b = false;
  double num = 0;
  std::shared_ptr<const std::string> str;
  std::shared_ptr<const std::vector<value>> arr;
  std::shared_ptr<dict> obj;  // object or namespace
  std::shared_ptr<const function> fn;

  static value undef() { return {}; }
  static value null() { value v; v.k = kind::null; return v; }
  static value boolean(bool x) { value v; v.k = kind::boolean; v.b = x; return v; }
  static value integer(double x) { value v; v.k = kind::integer; v.num = x; return v; }
  static value floating(double x) { value v; v.k = kind::floating; v.num = x; return v; }
  static value string(std::string s) {
    value v;
    v.k = kind::string;
    v.str = std::make_shared<const std::string>(std::move(s));
    return v;
  }
  static value array(std::vector<value> items) {
    value v;
    v.k = kind::array;
    v.arr = std::make_shared<const std::vector<value>>(std::move(items));
    return v;
  }
  static value object(std::shared_ptr<dict> d, kind k = kind::object) {
    value v;
    v.k = k;
    v.obj = std::move(d);
    return v;
  }
  static value func(std::string name, std::function<value(interpreter&, call_args&, scope&)> f) {
    value v;
    v.k = kind::function;
    v.fn = std::make_shared<const function>(function{std::move(name), std::move(f)});
    return v;
  }

  bool is_number() const { return k == kind::integer || k == kind::floating; }
  bool is_undefined_or_null() const { return k == kind::undefined || k == kind::null; }
  const std::string& s() const { return *str; }
  const std::vector<value>& list() const { return *arr; }
};

// The reference's type names, used in error messages ("StringValue" would mean nothing to a user).
const char* kind_name(const value& v);
bool truthy(const value& v);
// `==`: JavaScript's loose equality of the two values; `in` on a list: strict equality.
bool loose_equal(const value& a, const value& b);
bool strict_equal(const value& a, const value& b);

// Output limits: building a string longer than this is an error (a template doubling a string in a loop).
struct size_limit {
  size_t max_bytes;
  void check(size_t n) const;
};

// What `{{ v }}` prints (v neither null nor undefined): strings as they are, numbers as JavaScript prints them,
// booleans as true/false, lists and dicts as JSON.
void append_output(std::string& out, const value& v, const size_limit& lim);
std::string to_output(const value& v, const size_limit& lim);
// The `tojson` filter and the JSON printed for lists and dicts. indent <= 0: one line with ", " and ": ".
struct json_options {
  int indent = 0;
  bool ensure_ascii = false;
  bool sort_keys = false;
  const std::string* item_sep = nullptr;  // separators=(item, key)
  const std::string* key_sep = nullptr;
  bool undefined_as_null = true;
};
void append_json(std::string& out, const value& v, const json_options& o, const size_limit& lim, int depth = 0);
// JavaScript's String(x) of the underlying value, as the reference's `~` and `+` use: a list becomes its
// items joined with ",", a dict "[object Map]".
std::string js_string(const value& v, const size_limit& lim);

// A JSON value (a request's messages, tools ...) as a template value. Keys that are array indices come first,
// in numeric order, as they do in a JavaScript object.
value from_json(const nlohmann::ordered_json& j);

}  // namespace gsa::serve::jinja
