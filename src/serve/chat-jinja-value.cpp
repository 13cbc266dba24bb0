#include "serve/chat-jinja-value.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "core/error.h"
#include "serve/chat-jinja-text.h"

namespace gsa::serve::jinja {

namespace {
constexpr int max_value_depth = 256;  // nested lists/dicts printed or converted (a namespace can hold itself)
}

const value* dict::find(const std::string& key) const {
  for (const auto& [k, v] : items)
    if (k == key) return &v;
  return nullptr;
}

void dict::set(const std::string& key, value v) {
  for (auto& [k, old] : items)
    if (k == key) {
      old = std::move(v);
      return;
    }
  items.emplace_back(key, std::move(v));
}

const value* call_args::keyword(const std::string& name) const {
  for (const auto& [k, v] : keywords)
    if (k == name) return &v;
  return nullptr;
}

const char* kind_name(const value& v) {
  switch (v.k) {
    case kind::undefined: return "undefined";
    case kind::null: return "none";
    case kind::boolean: return "a boolean";
    case kind::integer: return "an integer";
    case kind::floating: return "a float";
    case kind::string: return "a string";
    case kind::array: return "a list";
    case kind::object: return "a dict";
    case kind::name_space: return "a namespace";
    case kind::function: return "a function";
  }
  return "a value";
}

bool truthy(const value& v) {
  switch (v.k) {
    case kind::undefined: case kind::null: return false;
    case kind::boolean: return v.b;
    case kind::integer: case kind::floating: return v.num != 0 && !std::isnan(v.num);
    case kind::string: return !v.s().empty();
    case kind::array: return !v.list().empty();
    case kind::object: return !v.obj->items.empty();
    case kind::name_space: case kind::function: return true;
  }
  return false;
}

void size_limit::check(size_t n) const {
  if (n > max_bytes)
    fail("chat template: the rendered text would exceed {} bytes; the template or the conversation is too large",
         max_bytes);
}

namespace {

// JavaScript's StringToNumber (what `==` does to a string compared with a number).
double js_to_number(const std::string& raw) {
  std::string s = js_trim(raw);
  if (s.empty()) return 0;
  if (s == "Infinity" || s == "+Infinity") return INFINITY;
  if (s == "-Infinity") return -INFINITY;
  if (s.size() > 2 && s[0] == '0' && std::string("xXoObB").find(s[1]) != std::string::npos) {
    int base = (s[1] == 'x' || s[1] == 'X') ? 16 : (s[1] == 'o' || s[1] == 'O') ? 8 : 2;
    double v = 0;
    for (size_t i = 2; i < s.size(); i++) {
      int d = std::isdigit((unsigned char)s[i]) ? s[i] - '0'
              : std::isalpha((unsigned char)s[i]) ? std::tolower(s[i]) - 'a' + 10 : 99;
      if (d >= base) return NAN;
      v = v * base + d;
    }
    return v;
  }
  size_t i = 0;
  if (s[i] == '+' || s[i] == '-') i++;
  size_t int_digits = 0, frac_digits = 0;
  while (i < s.size() && std::isdigit((unsigned char)s[i])) i++, int_digits++;
  if (i < s.size() && s[i] == '.') {
    i++;
    while (i < s.size() && std::isdigit((unsigned char)s[i])) i++, frac_digits++;
  }
  if (int_digits + frac_digits == 0) return NAN;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) i++;
    size_t exp_digits = 0;
    while (i < s.size() && std::isdigit((unsigned char)s[i])) i++, exp_digits++;
    if (exp_digits == 0) return NAN;
  }
  if (i != s.size()) return NAN;
  return std::strtod(s.c_str(), nullptr);
}

// The JavaScript type of a value's underlying representation.
enum class js { undefined, null, boolean, number, string, object };
js js_type(const value& v) {
  switch (v.k) {
    case kind::undefined: return js::undefined;
    case kind::null: return js::null;
    case kind::boolean: return js::boolean;
    case kind::integer: case kind::floating: return js::number;
    case kind::string: return js::string;
    default: return js::object;
  }
}

bool same_object(const value& a, const value& b) {
  if (a.k != b.k && !(a.k == kind::object && b.k == kind::name_space) &&
      !(a.k == kind::name_space && b.k == kind::object))
    return false;
  if (a.arr || b.arr) return a.arr == b.arr;
  if (a.obj || b.obj) return a.obj == b.obj;
  return a.fn == b.fn;
}

std::string float_string(double v) {
  if (v == 0 && std::signbit(v)) return "-0.0";
  if (std::isfinite(v) && std::fmod(v, 1.0) == 0 && std::fabs(v) < 1e21) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.1f", v);
    return buf;
  }
  return js_number(v);
}

}  // namespace

bool strict_equal(const value& a, const value& b) {
  js ta = js_type(a), tb = js_type(b);
  if (ta != tb) return false;
  switch (ta) {
    case js::undefined: case js::null: return true;
    case js::boolean: return a.b == b.b;
    case js::number: return a.num == b.num;
    case js::string: return a.s() == b.s();
    case js::object: return same_object(a, b);
  }
  return false;
}

bool loose_equal(const value& a, const value& b) {
  js ta = js_type(a), tb = js_type(b);
  if (ta == tb) return strict_equal(a, b);
  bool a_nullish = ta == js::undefined || ta == js::null, b_nullish = tb == js::undefined || tb == js::null;
  if (a_nullish || b_nullish) return a_nullish && b_nullish;
  if (ta == js::boolean) return loose_equal(value::integer(a.b ? 1 : 0), b);
  if (tb == js::boolean) return loose_equal(a, value::integer(b.b ? 1 : 0));
  if (ta == js::number && tb == js::string) return a.num == js_to_number(b.s());
  if (ta == js::string && tb == js::number) return js_to_number(a.s()) == b.num;
  // An object against a number or string: compared through its string form.
  size_limit lim{size_t(1) << 30};
  if (ta == js::object) return loose_equal(value::string(js_string(a, lim)), b);
  return loose_equal(a, value::string(js_string(b, lim)));
}

namespace {

void append_runtime_string(std::string& out, const value& v, const size_limit& lim, int depth) {
  switch (v.k) {
    case kind::undefined: out += "undefined"; break;
    case kind::null: out += "null"; break;
    case kind::boolean: out += v.b ? "true" : "false"; break;
    case kind::integer: out += js_number(v.num); break;
    case kind::floating: out += float_string(v.num); break;
    case kind::string: out += v.s(); break;
    case kind::array: case kind::object: case kind::name_space: {
      json_options o;
      o.undefined_as_null = false;
      append_json(out, v, o, lim, depth);
      break;
    }
    case kind::function: fail("chat template: a function cannot be printed (call it)");
  }
  lim.check(out.size());
}

}  // namespace

void append_output(std::string& out, const value& v, const size_limit& lim) {
  append_runtime_string(out, v, lim, 0);
}

std::string to_output(const value& v, const size_limit& lim) {
  std::string out;
  append_output(out, v, lim);
  return out;
}

std::string js_string(const value& v, const size_limit& lim) {
  switch (v.k) {
    case kind::integer: case kind::floating: return js_number(v.num);
    case kind::array: {
      std::string out;
      for (size_t i = 0; i < v.list().size(); i++) {
        if (i) out += ',';
        append_runtime_string(out, v.list()[i], lim, 1);
      }
      return out;
    }
    case kind::object: case kind::name_space: return "[object Map]";
    default: return to_output(v, lim);
  }
}

void append_json(std::string& out, const value& v, const json_options& o, const size_limit& lim, int depth) {
  if (depth > max_value_depth)
    fail("chat template: a value nested more than {} levels deep cannot be printed (does it contain itself?)",
         max_value_depth);
  static const std::string comma_space = ", ", comma = ",", colon_space = ": ";
  const std::string& item_sep = o.item_sep ? *o.item_sep : o.indent > 0 ? comma : comma_space;
  const std::string& key_sep = o.key_sep ? *o.key_sep : colon_space;
  std::string pad_base, pad_child;
  if (o.indent > 0) {
    pad_base = "\n" + std::string(size_t(o.indent) * depth, ' ');
    pad_child = pad_base + std::string(o.indent, ' ');
  }
  switch (v.k) {
    case kind::null: out += "null"; break;
    case kind::undefined: out += o.undefined_as_null ? "null" : "undefined"; break;
    case kind::boolean: out += v.b ? "true" : "false"; break;
    case kind::integer: case kind::floating: out += std::isfinite(v.num) ? js_number(v.num) : "null"; break;
    case kind::string: json_quote(out, v.s(), o.ensure_ascii); break;
    case kind::array: {
      if (v.tuple) fail("chat template: a tuple cannot be printed or converted to JSON (make it a list: [a, b])");
      const auto& items = v.list();
      out += '[';
      for (size_t i = 0; i < items.size(); i++) {
        if (i) out += item_sep;
        if (o.indent > 0) out += pad_child;
        append_json(out, items[i], o, lim, depth + 1);
        lim.check(out.size());
      }
      if (o.indent > 0 && !items.empty()) out += pad_base;
      out += ']';
      break;
    }
    case kind::object: case kind::name_space: {
      std::vector<const std::pair<std::string, value>*> entries;
      for (const auto& e : v.obj->items) entries.push_back(&e);
      if (o.sort_keys) {
        // The reference sorts with localeCompare; case-insensitive order with lowercase first approximates it.
        std::stable_sort(entries.begin(), entries.end(), [](const auto* x, const auto* y) {
          std::string lx = to_lower(x->first), ly = to_lower(y->first);
          if (lx != ly) return lx < ly;
          return x->first > y->first;
        });
      }
      out += '{';
      for (size_t i = 0; i < entries.size(); i++) {
        if (i) out += item_sep;
        if (o.indent > 0) out += pad_child;
        json_quote(out, entries[i]->first, o.ensure_ascii);
        out += key_sep;
        append_json(out, entries[i]->second, o, lim, depth + 1);
        lim.check(out.size());
      }
      if (o.indent > 0 && !entries.empty()) out += pad_base;
      out += '}';
      break;
    }
    case kind::function: fail("chat template: a function cannot be converted to JSON");
  }
  lim.check(out.size());
}

namespace {

// A JavaScript array index ("0", "17"; not "01", "-1", "4294967295").
bool array_index_key(const std::string& k, unsigned long long* out) {
  if (k.empty() || k.size() > 10 || (k.size() > 1 && k[0] == '0')) return false;
  unsigned long long v = 0;
  for (char c : k) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  if (v >= 4294967295ull) return false;
  *out = v;
  return true;
}

value from_json_at(const nlohmann::ordered_json& j, int depth) {
  if (depth > max_value_depth) fail("chat template context nested more than {} levels deep", max_value_depth);
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return value::null();
    case nlohmann::ordered_json::value_t::boolean: return value::boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return value::integer(double(j.get<long long>()));
    case nlohmann::ordered_json::value_t::number_unsigned:
      return value::integer(double(j.get<unsigned long long>()));
    case nlohmann::ordered_json::value_t::number_float: {
      double d = j.get<double>();
      // JSON.parse("2.0") is the integer 2 to JavaScript.
      return std::isfinite(d) && std::fmod(d, 1.0) == 0 ? value::integer(d) : value::floating(d);
    }
    case nlohmann::ordered_json::value_t::string: return value::string(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      std::vector<value> items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(from_json_at(e, depth + 1));
      return value::array(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      auto d = std::make_shared<dict>();
      std::vector<std::pair<unsigned long long, std::string>> index_keys;
      for (const auto& [k, e] : j.items()) {
        unsigned long long idx;
        if (array_index_key(k, &idx)) index_keys.emplace_back(idx, k);
      }
      std::sort(index_keys.begin(), index_keys.end());
      for (const auto& [idx, k] : index_keys) d->items.emplace_back(k, from_json_at(j.at(k), depth + 1));
      for (const auto& [k, e] : j.items()) {
        unsigned long long idx;
        if (!array_index_key(k, &idx)) d->items.emplace_back(k, from_json_at(e, depth + 1));
      }
      return value::object(std::move(d));
    }
    default: fail("chat template context: JSON values of this type (binary) are not supported");
  }
}

}  // namespace

value from_json(const nlohmann::ordered_json& j) { return from_json_at(j, 0); }

}  // namespace gsa::serve::jinja
