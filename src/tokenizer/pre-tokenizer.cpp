// Pre-tokenizers. Semantics follow the reference (tokenizers.js): Split with behavior Isolated keeps both the
// matches and the text between them, Removed keeps only the text between, invert keeps only the matches;
// ByteLevel's own regex is GPT-2's with JavaScript's \s (which has U+FEFF and lacks U+0085).
#include "tokenizer/pre-tokenizer.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/regex.h"

namespace gsa::tok {
namespace {

std::string escape_literal(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

enum class split_mode { isolated, removed, matches_only };

struct split_step : pre_tokenizer {
  std::unique_ptr<regex> re;
  split_mode mode = split_mode::isolated;
  void split(std::vector<std::string_view>& pieces, std::deque<std::string>&) const override {
    std::vector<std::string_view> out;
    out.reserve(pieces.size() * 4);
    std::vector<std::pair<size_t, size_t>> m;
    for (std::string_view p : pieces) {
      m.clear();
      re->find_all(p, m);
      size_t prev = 0;
      for (auto [b, n] : m) {
        if (mode != split_mode::matches_only && b > prev) out.push_back(p.substr(prev, b - prev));
        if (mode != split_mode::removed) out.push_back(p.substr(b, n));
        prev = b + n;
      }
      if (mode != split_mode::matches_only && prev < p.size()) out.push_back(p.substr(prev));
    }
    pieces.swap(out);
  }
};

// JavaScript's \s, used by ByteLevel's built-in regex.
constexpr const char* js_space =
    "\\t\\n\\x{0B}\\f\\r \\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}\\x{FEFF}";

struct byte_level_step : pre_tokenizer {
  bool add_prefix_space = false;
  std::unique_ptr<regex> re;  // null when use_regex is false
  void split(std::vector<std::string_view>& pieces, std::deque<std::string>& arena) const override {
    if (add_prefix_space)
      for (auto& p : pieces)
        if (p.empty() || p[0] != ' ') p = arena.emplace_back(" " + std::string(p));
    if (!re) return;
    std::vector<std::string_view> out;
    std::vector<std::pair<size_t, size_t>> m;
    for (std::string_view p : pieces) {
      m.clear();
      re->find_all(p, m);
      for (auto [b, n] : m) out.push_back(p.substr(b, n));
    }
    pieces.swap(out);
  }
  bool byte_level() const override { return true; }
};

struct sequence_step : pre_tokenizer {
  std::vector<std::unique_ptr<pre_tokenizer>> steps;
  void split(std::vector<std::string_view>& pieces, std::deque<std::string>& arena) const override {
    for (auto& s : steps) s->split(pieces, arena);
  }
  bool byte_level() const override {
    for (auto& s : steps)
      if (s->byte_level()) return true;
    return false;
  }
};

}  // namespace

std::unique_ptr<pre_tokenizer> make_pre_tokenizer(const nlohmann::json& cfg, const std::string& source) {
  if (cfg.is_null()) return nullptr;
  std::string type = cfg.value("type", "");
  if (type == "Sequence") {
    auto s = std::make_unique<sequence_step>();
    for (auto& c : cfg.at("pretokenizers"))
      if (auto p = make_pre_tokenizer(c, source)) s->steps.push_back(std::move(p));
    return s;
  }
  if (type == "Split") {
    auto s = std::make_unique<split_step>();
    const auto& pat = cfg.at("pattern");
    std::string what = source + " (Split pre-tokenizer)";
    if (pat.contains("Regex"))
      s->re = std::make_unique<regex>(translate_oniguruma(pat["Regex"].get<std::string>(), what), what);
    else if (pat.contains("String"))
      s->re = std::make_unique<regex>(escape_literal(pat["String"].get<std::string>()), what);
    else
      fail("{}: Split pre-tokenizer pattern must have a 'Regex' or 'String' field", source);
    std::string behavior = cfg.value("behavior", "Isolated");
    if (cfg.value("invert", false)) s->mode = split_mode::matches_only;
    else if (behavior == "Isolated") s->mode = split_mode::isolated;
    else if (behavior == "Removed") s->mode = split_mode::removed;
    else
      fail("{}: Split behavior '{}' is not supported (supported: Isolated, Removed)", source, behavior);
    return s;
  }
  if (type == "ByteLevel") {
    auto b = std::make_unique<byte_level_step>();
    b->add_prefix_space = cfg.value("add_prefix_space", false);
    if (cfg.value("use_regex", true)) {
      std::string sp = js_space;
      b->re = std::make_unique<regex>("'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" + sp +
                                          "\\p{L}\\p{N}]+|[" + sp + "]+(?![^" + sp + "])|[" + sp + "]+",
                                      source + " (ByteLevel pre-tokenizer)");
    }
    return b;
  }
  fail("{}: pre-tokenizer type '{}' is not supported (supported: Split, ByteLevel, Sequence)", source,
       type.empty() ? cfg.dump() : type);
}

}  // namespace gsa::tok
