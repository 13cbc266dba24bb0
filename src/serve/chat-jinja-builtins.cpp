// Filters, tests, string and dict methods, and the global functions of the chat-template evaluator. Each one
// does what the reference renderer's does (its choices where Python's Jinja differs: strip('\n') strips all
// whitespace, `capitalize` leaves the rest of the string as it is, `first` of an empty list is undefined).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <set>

#include "core/error.h"
#include "serve/chat-jinja-eval.h"
#include "serve/chat-jinja-text.h"

namespace gsa::serve::jinja {

namespace {

bool numeric_like(const value& v) { return v.is_number() || v.k == kind::boolean; }
double numeric(const value& v) { return v.k == kind::boolean ? (v.b ? 1 : 0) : v.num; }

// JavaScript's Array.prototype.join of the underlying values: none and undefined become "".
std::string join_piece(const value& v, const size_limit& lim) {
  if (v.is_undefined_or_null()) return "";
  return js_string(v, lim);
}

// The reference's ordering for sort and dictsort: numbers with numbers, strings with strings (case-insensitive
// unless asked), anything else is an error.
int compare(const interpreter& in, const value& a, const value& b, bool case_sensitive, const node& at) {
  if (a.k == kind::null && b.k == kind::null) return 0;
  if (a.k == kind::undefined && b.k == kind::undefined) return 0;
  if (a.is_undefined_or_null() || b.is_undefined_or_null())
    in.error(at, fmt::format("cannot compare {} with {}", kind_name(a), kind_name(b)));
  if (numeric_like(a) && numeric_like(b)) {
    double x = numeric(a), y = numeric(b);
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.k != kind::string || b.k != kind::string)
    in.error(at, fmt::format("cannot compare {} with {}", kind_name(a), kind_name(b)));
  std::string x = case_sensitive ? a.s() : to_lower(a.s()), y = case_sensitive ? b.s() : to_lower(b.s());
  return x < y ? -1 : x > y ? 1 : 0;
}

// item.a.b (dotted path; list indices allowed) as sort(attribute=) and map(attribute=) read it.
value attribute_path(const value& item, const std::string& path) {
  value v = item;
  size_t begin = 0;
  while (true) {
    size_t dot = path.find('.', begin);
    std::string part = path.substr(begin, dot == std::string::npos ? std::string::npos : dot - begin);
    if (v.k == kind::object || v.k == kind::name_space) {
      const value* f = v.obj->find(part);
      v = f ? *f : value::undef();
    } else if (v.k == kind::array) {
      char* end = nullptr;
      long idx = std::strtol(part.c_str(), &end, 10);
      if (end == part.c_str() || idx < 0 || size_t(idx) >= v.list().size()) return value::undef();
      v = v.list()[idx];
    } else {
      return value::undef();
    }
    if (dot == std::string::npos) return v;
    begin = dot + 1;
  }
}

const value* arg(const call_args& a, size_t i, const char* name) {
  if (i < a.positional.size()) return &a.positional[i];
  return name ? a.keyword(name) : nullptr;
}

bool bool_arg(const interpreter& in, const call_args& a, size_t i, const char* name, bool def, const node& at) {
  const value* v = arg(a, i, name);
  if (!v) return def;
  if (v->k != kind::boolean) in.error(at, fmt::format("'{}' must be a boolean", name));
  return v->b;
}

// JavaScript's parseInt(s, 10) / parseFloat(s): the longest numeric prefix after leading whitespace.
bool js_parse_number(const std::string& raw, bool integer, double* out) {
  std::string s = js_trim(raw, true, false);
  size_t i = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) i++;
  if (!integer && s.compare(i, 8, "Infinity") == 0) {
    *out = s[0] == '-' ? -INFINITY : INFINITY;
    return true;
  }
  size_t digits_begin = i;
  while (i < s.size() && std::isdigit((unsigned char)s[i])) i++;
  size_t int_digits = i - digits_begin, frac_digits = 0;
  if (!integer && i < s.size() && s[i] == '.') {
    size_t j = i + 1;
    while (j < s.size() && std::isdigit((unsigned char)s[j])) j++;
    frac_digits = j - i - 1;
    if (int_digits + frac_digits > 0) i = j;
  }
  if (int_digits + frac_digits == 0) return false;
  if (!integer && i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    size_t j = i + 1;
    if (j < s.size() && (s[j] == '+' || s[j] == '-')) j++;
    size_t e = j;
    while (j < s.size() && std::isdigit((unsigned char)s[j])) j++;
    if (j > e) i = j;
  }
  *out = std::strtod(s.substr(0, i).c_str(), nullptr);
  if (integer) *out = std::trunc(*out);
  return true;
}

std::string indent_lines(const std::string& s, size_t width, bool first, bool blank) {
  std::string out, pad(width, ' ');
  size_t begin = 0, line = 0;
  while (true) {
    size_t nl = s.find('\n', begin);
    std::string part = s.substr(begin, nl == std::string::npos ? std::string::npos : nl - begin);
    if (!((!first && line == 0) || (!blank && part.empty()))) out += pad;
    out += part;
    if (nl == std::string::npos) return out;
    out += '\n';
    begin = nl + 1;
    line++;
  }
}

std::string title_case(const std::string& s) {
  auto word = [](unsigned char c) { return std::isalnum(c) || c == '_'; };
  std::string out = s;
  for (size_t i = 0; i < out.size(); i++)
    if ((unsigned char)out[i] < 0x80 && word(out[i]) && (i == 0 || !word(out[i - 1])))
      out[i] = char(std::toupper((unsigned char)out[i]));
  return out;
}

std::string capitalize(const std::string& s) {
  if (s.empty()) return s;
  size_t i = 0;
  char32_t c = utf8_next(s, i);
  if (c >= 0x10000) return s;  // JavaScript upper-cases half a surrogate pair: nothing changes
  return to_upper(s.substr(0, i)) + s.substr(i);
}

std::string replace_all(const interpreter& in, const std::string& s, const std::string& from, const std::string& to,
                        double count) {
  std::string out;
  long long left = count < 0 ? -1 : (long long)count;
  if (from.empty()) {  // between every character, and at both ends
    size_t i = 0;
    while (true) {
      if (left != 0) {
        out += to;
        if (left > 0) left--;
      }
      if (i >= s.size()) break;
      size_t j = i;
      utf8_next(s, j);
      out.append(s, i, j - i);
      i = j;
      in.out_lim.check(out.size());
    }
    return out;
  }
  size_t pos = 0;
  while (left != 0) {
    size_t hit = s.find(from, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out += to;
    pos = hit + from.size();
    if (left > 0) left--;
    in.out_lim.check(out.size());
  }
  out.append(s, pos, std::string::npos);
  in.out_lim.check(out.size());
  return out;
}

value split(interpreter& in, const std::string& s, const call_args& a, const node& at) {
  const value* sep = arg(a, 0, nullptr);
  const value* maxv = arg(a, 1, nullptr);
  if (!a.keywords.empty()) in.error(at, "split() takes its arguments by position");
  if (sep && sep->k != kind::string && sep->k != kind::null) in.error(at, "split(): the separator must be a string or none");
  if (maxv && maxv->k != kind::integer) in.error(at, "split(): maxsplit must be an integer");
  double maxsplit = maxv ? maxv->num : -1;
  std::vector<value> parts;
  if (!sep || sep->k == kind::null) {
    std::string text = js_trim(s, true, false);
    size_t i = 0;
    while (i < text.size()) {
      size_t next;
      size_t j = i;
      if (js_space(utf8_next(text, j))) {
        i = j;
        continue;
      }
      size_t begin = i;
      for (next = i; next < text.size();) {
        size_t k = next;
        if (js_space(utf8_next(text, k))) break;
        next = k;
      }
      if (maxsplit != -1 && double(parts.size()) >= maxsplit) {
        parts.push_back(value::string(text.substr(begin)));
        break;
      }
      parts.push_back(value::string(text.substr(begin, next - begin)));
      i = next;
    }
  } else {
    const std::string& d = sep->s();
    if (d.empty()) in.error(at, "split(): empty separator");
    size_t pos = 0;
    while (true) {
      size_t hit = s.find(d, pos);
      if (hit == std::string::npos || (maxsplit != -1 && double(parts.size()) >= maxsplit)) {
        parts.push_back(value::string(s.substr(pos)));
        break;
      }
      parts.push_back(value::string(s.substr(pos, hit - pos)));
      pos = hit + d.size();
    }
  }
  in.check_items(parts.size(), at);
  return value::array(std::move(parts));
}

value dictsort(interpreter& in, const value& obj, const call_args& a, const node& at) {
  bool case_sensitive = bool_arg(in, a, 0, "case_sensitive", false, at);
  const value* by = arg(a, 1, "by");
  if (by && (by->k != kind::string || (by->s() != "key" && by->s() != "value")))
    in.error(at, "dictsort(): 'by' must be 'key' or 'value'");
  bool by_value = by && by->s() == "value";
  bool reverse = bool_arg(in, a, 2, "reverse", false, at);
  std::vector<value> pairs;
  for (const auto& [k, v] : obj.obj->items) pairs.push_back(value::array({value::string(k), v}));
  std::stable_sort(pairs.begin(), pairs.end(), [&](const value& x, const value& y) {
    int c = compare(in, x.list()[by_value], y.list()[by_value], case_sensitive, at);
    return reverse ? c > 0 : c < 0;
  });
  return value::array(std::move(pairs));
}

}  // namespace

value interpreter::method(const value& obj, const std::string& name, const node& at) {
  if (obj.k == kind::array) return name == "length" ? value::integer(double(obj.list().size())) : value::undef();
  if (obj.k == kind::object) {
    auto bound = [&](auto f) {
      return value::func(name, [obj, f, &at](interpreter& in, call_args& a, scope&) { return f(in, obj, a, at); });
    };
    if (name == "items" || name == "keys" || name == "values") {
      std::string which = name;
      return bound([which](interpreter&, const value& o, call_args&, const node&) {
        std::vector<value> out;
        for (const auto& [k, v] : o.obj->items)
          out.push_back(which == "keys" ? value::string(k) : which == "values" ? v
                                                                                : value::array({value::string(k), v}));
        return value::array(std::move(out));
      });
    }
    if (name == "get")
      return bound([](interpreter& in, const value& o, call_args& a, const node& at) {
        const value* key = arg(a, 0, nullptr);
        if (!key || key->k != kind::string) in.error(at, "get(): the key must be a string");
        if (const value* v = o.obj->find(key->s())) return *v;
        const value* def = arg(a, 1, nullptr);
        return def ? *def : value::null();
      });
    if (name == "dictsort") return bound(dictsort);
    return value::undef();
  }
  if (obj.k != kind::string) return value::undef();
  const std::string& s = obj.s();
  if (name == "length") return value::integer(double(utf16_length(s)));
  auto string_fn = [&](std::function<value(interpreter&, call_args&)> f) {
    return value::func(name, [f](interpreter& in, call_args& a, scope&) { return f(in, a); });
  };
  auto str = obj.str;
  if (name == "upper") return string_fn([str](interpreter&, call_args&) { return value::string(to_upper(*str)); });
  if (name == "lower") return string_fn([str](interpreter&, call_args&) { return value::string(to_lower(*str)); });
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    // The reference ignores the argument: strip('\n') strips every kind of whitespace.
    bool l = name != "rstrip", r = name != "lstrip";
    return string_fn([str, l, r](interpreter&, call_args&) { return value::string(js_trim(*str, l, r)); });
  }
  if (name == "title") return string_fn([str](interpreter&, call_args&) { return value::string(title_case(*str)); });
  if (name == "capitalize")
    return string_fn([str](interpreter&, call_args&) { return value::string(capitalize(*str)); });
  if (name == "startswith" || name == "endswith") {
    bool starts = name == "startswith";
    return string_fn([str, starts, &at, name](interpreter& in, call_args& a) {
      const value* p = arg(a, 0, nullptr);
      if (!p) in.error(at, fmt::format("{}() needs an argument", name));
      auto test = [&](const value& v) {
        if (v.k != kind::string) in.error(at, fmt::format("{}() takes a string or a tuple of strings", name));
        const std::string& x = v.s();
        return x.size() <= str->size() &&
               (starts ? str->compare(0, x.size(), x) == 0 : str->compare(str->size() - x.size(), x.size(), x) == 0);
      };
      if (p->k == kind::array) {
        for (const value& e : p->list())
          if (test(e)) return value::boolean(true);
        return value::boolean(false);
      }
      return value::boolean(test(*p));
    });
  }
  if (name == "split") return string_fn([str, &at](interpreter& in, call_args& a) { return split(in, *str, a, at); });
  if (name == "replace")
    return string_fn([str, &at](interpreter& in, call_args& a) {
      const value* from = arg(a, 0, nullptr);
      const value* to = arg(a, 1, nullptr);
      if (!from || !to || from->k != kind::string || to->k != kind::string)
        in.error(at, "replace() takes two strings");
      const value* count = arg(a, 2, "count");
      if (count && count->k != kind::integer && count->k != kind::null)
        in.error(at, "replace(): count must be an integer");
      double c = count && count->k == kind::integer ? count->num : -1;
      if (c == 0) return value::string(*str);
      return value::string(replace_all(in, *str, from->s(), to->s(), c));
    });
  return value::undef();
}

bool interpreter::apply_test(const value& v, const std::string& name, const value* other, const node& at) {
  if (name == "defined") return v.k != kind::undefined;
  if (name == "undefined") return v.k == kind::undefined;
  if (name == "none") return v.k == kind::null;
  if (name == "boolean") return v.k == kind::boolean;
  if (name == "false") return v.k == kind::boolean && !v.b;
  if (name == "true") return v.k == kind::boolean && v.b;
  if (name == "string") return v.k == kind::string;
  if (name == "number") return v.is_number();
  if (name == "integer") return v.k == kind::integer;
  if (name == "callable") return v.k == kind::function;
  if (name == "iterable") return (v.k == kind::array && !v.tuple) || v.k == kind::string;
  if (name == "mapping") return v.k == kind::object;
  if (name == "sequence") return v.k == kind::array || v.k == kind::object || v.k == kind::string;
  if (name == "lower") return v.k == kind::string && v.s() == to_lower(v.s());
  if (name == "upper") return v.k == kind::string && v.s() == to_upper(v.s());
  if (name == "odd" || name == "even") {
    if (v.k != kind::integer) error(at, fmt::format("'{}' needs an integer, got {}", name, kind_name(v)));
    bool odd = std::fmod(v.num, 2) != 0;
    return name == "odd" ? odd : !odd;
  }
  if (name == "equalto" || name == "eq") return strict_equal(v, other ? *other : value::undef());
  error(at, fmt::format("unknown test '{}'", name));
}

value interpreter::apply_filter(const value& v, const node& filter, scope& sc) {
  const bool has_args = filter.kind == nk::call;
  const std::string& name = has_args ? filter.x->text : filter.text;
  call_args a;
  if (has_args) a = eval_args(filter.a, sc);
  auto unknown = [&]() -> value {
    error(filter, fmt::format("unknown filter '{}' for {}", name, kind_name(v)));
  };
  if (name == "safe" && !has_args) return v;
  if (name == "tojson") {
    json_options o;
    const value* indent = a.keyword("indent");
    if (indent && indent->k != kind::integer && indent->k != kind::null) error(filter, "tojson: indent must be an integer");
    if (indent && indent->k == kind::integer) o.indent = (int)std::min(std::max(indent->num, 0.0), 64.0);
    o.ensure_ascii = has_args && bool_arg(*this, a, size_t(-1), "ensure_ascii", false, filter);
    o.sort_keys = has_args && bool_arg(*this, a, size_t(-1), "sort_keys", false, filter);
    std::string item_sep, key_sep;
    if (const value* seps = a.keyword("separators"); seps && seps->k != kind::null) {
      if (seps->k != kind::array || seps->list().size() != 2 || seps->list()[0].k != kind::string ||
          seps->list()[1].k != kind::string)
        error(filter, "tojson: separators must be a tuple of two strings");
      item_sep = seps->list()[0].s();
      key_sep = seps->list()[1].s();
      o.item_sep = &item_sep;
      o.key_sep = &key_sep;
    }
    std::string out;
    append_json(out, v, o, out_lim);
    return value::string(std::move(out));
  }
  if (name == "default" && has_args) {
    value def = a.positional.empty() ? value::string("") : a.positional[0];
    bool boolean = bool_arg(*this, a, 1, "boolean", false, filter);
    return v.k == kind::undefined || (boolean && !truthy(v)) ? def : v;
  }
  if (name == "join" && has_args) {
    const value* sep = arg(a, 0, "separator");
    if (sep && sep->k != kind::string) error(filter, "join: the separator must be a string");
    std::string d = sep ? sep->s() : "", out;
    if (v.k == kind::string) {
      auto cps = code_points(v.s());
      for (size_t i = 0; i < cps.size(); i++) {
        if (i) out += d;
        out += from_code_points(&cps[i], &cps[i] + 1);
        out_lim.check(out.size());
      }
    } else if (v.k == kind::array) {
      for (size_t i = 0; i < v.list().size(); i++) {
        if (i) out += d;
        out += join_piece(v.list()[i], out_lim);
        out_lim.check(out.size());
      }
    } else {
      unknown();
    }
    return value::string(std::move(out));
  }
  if ((name == "int" || name == "float") && has_args) {
    const value* def = arg(a, 0, "default");
    bool integer = name == "int";
    value fallback = def ? *def : integer ? value::integer(0) : value::floating(0);
    if (v.k == kind::string) {
      double d;
      if (!js_parse_number(v.s(), integer, &d)) return fallback;
      return integer ? value::integer(d) : value::floating(d);
    }
    if (v.is_number()) return v;
    if (v.k == kind::boolean) return integer ? value::integer(v.b) : value::floating(v.b);
    unknown();
  }
  if (v.k == kind::array) {
    const auto& items = v.list();
    if (name == "list" && !has_args) return v;
    if (name == "first" && !has_args) return items.empty() ? value::undef() : items.front();
    if (name == "last" && !has_args) return items.empty() ? value::undef() : items.back();
    if (name == "length" && !has_args) return value::integer(double(items.size()));
    if (name == "reverse" && !has_args) return value::array(std::vector<value>(items.rbegin(), items.rend()));
    if (name == "join") {
      std::string out;
      for (const value& e : items) out += join_piece(e, out_lim), out_lim.check(out.size());
      return value::string(std::move(out));
    }
    if (name == "string" && !has_args) {
      json_options o;
      o.undefined_as_null = false;
      std::string out;
      append_json(out, v, o, out_lim);
      return value::string(std::move(out));
    }
    if (name == "unique" && !has_args) {
      std::vector<value> out;
      for (const value& e : items) {
        bool seen = false;
        for (const value& o : out) seen = seen || strict_equal(o, e);
        if (!seen) out.push_back(e);
      }
      return value::array(std::move(out));
    }
    if (name == "sort") {
      bool reverse = bool_arg(*this, a, 0, "reverse", false, filter);
      bool case_sensitive = bool_arg(*this, a, 1, "case_sensitive", false, filter);
      const value* attr = arg(a, 2, "attribute");
      if (attr && attr->k != kind::string && attr->k != kind::integer && attr->k != kind::null)
        error(filter, "sort: attribute must be a string, an integer or none");
      std::string path = !attr || attr->k == kind::null ? "" : attr->k == kind::string ? attr->s() : js_number(attr->num);
      auto key = [&](const value& e) { return path.empty() ? e : attribute_path(e, path); };
      std::vector<value> out = items;
      std::stable_sort(out.begin(), out.end(), [&](const value& x, const value& y) {
        int c = compare(*this, key(x), key(y), case_sensitive, filter);
        return reverse ? c > 0 : c < 0;
      });
      return value::array(std::move(out));
    }
    if ((name == "selectattr" || name == "rejectattr") && has_args) {
      bool select = name == "selectattr";
      for (const value& e : items)
        if (e.k != kind::object && e.k != kind::name_space) error(filter, fmt::format("{} needs a list of dicts", name));
      for (const auto& arg_node : filter.a)
        if (arg_node->kind != nk::str_lit) error(filter, fmt::format("the arguments of {} must be strings", name));
      if (a.positional.empty()) error(filter, fmt::format("{} needs an attribute name", name));
      const std::string& attr = a.positional[0].s();
      std::vector<value> out;
      for (const value& e : items) {
        const value* f = e.obj->find(attr);
        bool r = false;
        if (f) r = a.positional.size() > 1 ? apply_test(*f, a.positional[1].s(), a.positional.size() > 2 ? &a.positional[2] : nullptr, filter)
                                          : truthy(*f);
        if (r == select) out.push_back(e);
      }
      return value::array(std::move(out));
    }
    if (name == "map" && has_args) {
      const value* attr = a.keyword("attribute");
      if (!attr) error(filter, "map is supported with attribute= only");
      if (attr->k != kind::string) error(filter, "map: attribute must be a string");
      const value* def = a.keyword("default");
      std::vector<value> out;
      for (const value& e : items) {
        if (e.k != kind::object && e.k != kind::name_space) error(filter, "map(attribute=) needs a list of dicts");
        value x = attribute_path(e, attr->s());
        out.push_back(x.k == kind::undefined && def ? *def : x);
      }
      return value::array(std::move(out));
    }
    return unknown();
  }
  if (v.k == kind::string) {
    const std::string& s = v.s();
    if (name == "length" && !has_args) return value::integer(double(utf16_length(s)));
    if (name == "upper" && !has_args) return value::string(to_upper(s));
    if (name == "lower" && !has_args) return value::string(to_lower(s));
    if (name == "title" && !has_args) return value::string(title_case(s));
    if (name == "capitalize" && !has_args) return value::string(capitalize(s));
    if (name == "trim" && !has_args) return value::string(js_trim(s));
    if ((name == "join" || name == "string") && !has_args) return v;
    if ((name == "int" || name == "float") && !has_args) {
      double d;
      if (!js_parse_number(s, name == "int", &d)) d = 0;
      return name == "int" ? value::integer(d) : value::floating(d);
    }
    if (name == "indent") {
      const value* width = arg(a, 0, "width");
      if (width && width->k != kind::integer) error(filter, "indent: width must be an integer");
      double w = width ? width->num : 4;
      if (w < 0 || w > 256) error(filter, "indent: width must be between 0 and 256");
      bool first = has_args && bool_arg(*this, a, 1, "first", false, filter);
      bool blank = has_args && bool_arg(*this, a, 2, "blank", false, filter);
      std::string out = indent_lines(s, size_t(w), first, blank);
      out_lim.check(out.size());
      return value::string(std::move(out));
    }
    if (name == "replace" && has_args) {
      value fn = method(v, "replace", filter);
      return call(fn, a, sc, filter);
    }
    return unknown();
  }
  if (v.is_number()) {
    if (name == "abs" && !has_args)
      return v.k == kind::integer ? value::integer(std::fabs(v.num)) : value::floating(std::fabs(v.num));
    if (name == "int" && !has_args) return value::integer(std::floor(v.num));
    if (name == "float" && !has_args) return value::floating(v.num);
    if (name == "string" && !has_args) return value::string(to_output(v, out_lim));
    return unknown();
  }
  if (v.k == kind::object) {
    if (name == "items" && !has_args) return call(method(v, "items", filter), a, sc, filter);
    if (name == "length" && !has_args) return value::integer(double(v.obj->items.size()));
    value fn = method(v, name, filter);
    if (fn.k == kind::function) return call(fn, a, sc, filter);
    return unknown();
  }
  if (v.k == kind::boolean && !has_args) {
    if (name == "bool") return v;
    if (name == "int") return value::integer(v.b);
    if (name == "float") return value::floating(v.b);
    if (name == "string") return value::string(v.b ? "true" : "false");
  }
  return unknown();
}

void install_globals(scope& g) {
  g.set("namespace", value::func("namespace", [](interpreter& in, call_args& a, scope&) {
    auto d = std::make_shared<dict>();
    if (a.positional.size() > 1) fail("chat template: namespace() takes at most 1 positional argument");
    if (!a.positional.empty()) {
      const value& src = a.positional[0];
      if (src.k == kind::object) {
        d->items = src.obj->items;
      } else if (src.k == kind::array) {
        for (const value& pair : src.list()) {
          if (pair.k != kind::array || pair.list().size() != 2 || pair.list()[0].k != kind::string)
            fail("chat template: namespace() takes a dict or a list of [name, value] pairs");
          d->set(pair.list()[0].s(), pair.list()[1]);
        }
      } else {
        fail("chat template: namespace() takes a dict or a list of [name, value] pairs, not {}", kind_name(src));
      }
    }
    for (const auto& [k, v] : a.keywords) d->set(k, v);
    return value::object(std::move(d), kind::name_space);
  }));
  for (const char* t : {"true", "True"}) g.set(t, value::boolean(true));
  for (const char* f : {"false", "False"}) g.set(f, value::boolean(false));
  for (const char* n : {"none", "None"}) g.set(n, value::null());
  g.set("raise_exception", value::func("raise_exception", [](interpreter& in, call_args& a, scope&) -> value {
    // The template's own message, as the reference reports it (its arguments joined with ",").
    std::string msg;
    for (size_t i = 0; i < a.positional.size(); i++) {
      if (i) msg += ',';
      msg += to_output(a.positional[i], in.out_lim);
    }
    if (msg.empty()) msg = "raise_exception() called by the chat template";
    throw error(msg);
  }));
  g.set("range", value::func("range", [](interpreter& in, call_args& a, scope&) {
    if (a.positional.empty() || a.positional.size() > 3 || !a.keywords.empty())
      fail("chat template: range() takes 1 to 3 integers");
    for (const value& v : a.positional)
      if (!v.is_number()) fail("chat template: range() takes integers, not {}", kind_name(v));
    double start = 0, stop, step = 1;
    if (a.positional.size() == 1) stop = a.positional[0].num;
    else start = a.positional[0].num, stop = a.positional[1].num;
    if (a.positional.size() == 3) step = a.positional[2].num;
    if (step == 0) fail("chat template: range() step must not be zero");
    double n = std::max(0.0, std::ceil((stop - start) / step));
    if (n > double(in.lim.max_items))
      fail("chat template: range() of {} items; at most {} are allowed", n, in.lim.max_items);
    std::vector<value> out;
    for (double i = start; step > 0 ? i < stop : i > stop; i += step)
      out.push_back(std::fmod(i, 1.0) == 0 ? value::integer(i) : value::floating(i));
    return value::array(std::move(out));
  }));
  g.set("strftime_now", value::func("strftime_now", [](interpreter&, call_args& a, scope&) {
    if (a.positional.empty() || a.positional[0].k != kind::string)
      fail("chat template: strftime_now() takes a format string");
    static const char* months[] = {"January", "February", "March", "April", "May", "June", "July",
                                   "August", "September", "October", "November", "December"};
    std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    const std::string& f = a.positional[0].s();
    std::string out;
    auto two = [](int v) { return (v < 10 ? "0" : "") + std::to_string(v); };
    // The directives the reference knows; any other stays as written.
    for (size_t i = 0; i < f.size(); i++) {
      if (f[i] != '%' || i + 1 >= f.size()) {
        out += f[i];
        continue;
      }
      char d = f[i + 1];
      if (d == 'Y') out += std::to_string(tm.tm_year + 1900);
      else if (d == 'm') out += two(tm.tm_mon + 1);
      else if (d == 'd') out += two(tm.tm_mday);
      else if (d == 'b') out += std::string(months[tm.tm_mon]).substr(0, 3);
      else if (d == 'B') out += months[tm.tm_mon];
      else if (d == 'H') out += two(tm.tm_hour);
      else if (d == 'M') out += two(tm.tm_min);
      else if (d == '%') out += '%';
      else {
        out += f[i];
        continue;
      }
      i++;
    }
    return value::string(std::move(out));
  }));
}

}  // namespace gsa::serve::jinja
