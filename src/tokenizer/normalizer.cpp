// Normalizers. ICU does the Unicode forms on UTF-8 directly (normalizeUTF8), after a quick check so that
// text which is already normalized (nearly all of it) is only scanned, never rewritten.
#include "tokenizer/normalizer.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>
#include <unicode/unistr.h>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace gsa::tok {
namespace {

enum class form { nfc, nfd, nfkc, nfkd };

const icu::Normalizer2* icu_instance(form f) {
  UErrorCode st = U_ZERO_ERROR;
  const icu::Normalizer2* n = nullptr;
  switch (f) {
    case form::nfc: n = icu::Normalizer2::getNFCInstance(st); break;
    case form::nfd: n = icu::Normalizer2::getNFDInstance(st); break;
    case form::nfkc: n = icu::Normalizer2::getNFKCInstance(st); break;
    case form::nfkd: n = icu::Normalizer2::getNFKDInstance(st); break;
  }
  if (U_FAILURE(st) || !n) fail("ICU normalizer data is not available: {}", u_errorName(st));
  return n;
}

std::string icu_normalize(form f, std::string_view text) {
  bool ascii = true;
  for (unsigned char c : text) ascii &= c < 0x80;
  if (ascii) return std::string(text);  // ASCII is invariant under all four forms
  const icu::Normalizer2* n = icu_instance(f);
  UErrorCode st = U_ZERO_ERROR;
  icu::StringPiece sp(text.data(), int32_t(text.size()));
  if (n->isNormalizedUTF8(sp, st) && U_SUCCESS(st)) return std::string(text);
  st = U_ZERO_ERROR;
  std::string out;
  out.reserve(text.size() + text.size() / 8);
  icu::StringByteSink<std::string> sink(&out);
  n->normalizeUTF8(0, sp, sink, nullptr, st);
  if (U_FAILURE(st)) fail("Unicode normalization failed: {}", u_errorName(st));
  return out;
}

struct unicode_form : normalizer {
  form f;
  explicit unicode_form(form f) : f(f) {}
  std::string apply(std::string_view t) const override { return icu_normalize(f, t); }
};

struct lowercase : normalizer {
  std::string apply(std::string_view t) const override {
    icu::UnicodeString u = icu::UnicodeString::fromUTF8(icu::StringPiece(t.data(), int32_t(t.size())));
    std::string out;
    u.toLower().toUTF8String(out);
    return out;
  }
};

struct prepend : normalizer {
  std::string prefix;
  std::string apply(std::string_view t) const override { return t.empty() ? std::string() : prefix + std::string(t); }
};

struct replace : normalizer {
  std::string from, to;
  std::string apply(std::string_view t) const override {
    if (from.empty()) return std::string(t);
    std::string out;
    size_t i = 0;
    for (size_t j; (j = t.find(from, i)) != std::string_view::npos; i = j + from.size()) {
      out.append(t.substr(i, j - i));
      out += to;
    }
    out.append(t.substr(i));
    return out;
  }
};

struct sequence : normalizer {
  std::vector<std::unique_ptr<normalizer>> parts;
  std::string apply(std::string_view t) const override {
    std::string s(t);
    for (auto& p : parts) s = p->apply(s);
    return s;
  }
};

}  // namespace

std::string nfc(std::string_view text) { return icu_normalize(form::nfc, text); }

std::unique_ptr<normalizer> make_normalizer(const nlohmann::json& cfg, const std::string& source) {
  if (cfg.is_null()) return nullptr;
  std::string type = cfg.value("type", "");
  if (type == "NFC") return std::make_unique<unicode_form>(form::nfc);
  if (type == "NFD") return std::make_unique<unicode_form>(form::nfd);
  if (type == "NFKC") return std::make_unique<unicode_form>(form::nfkc);
  if (type == "NFKD") return std::make_unique<unicode_form>(form::nfkd);
  if (type == "Lowercase") return std::make_unique<lowercase>();
  if (type == "Prepend") {
    auto p = std::make_unique<prepend>();
    p->prefix = cfg.at("prepend").get<std::string>();
    return p;
  }
  if (type == "Replace" && cfg.contains("pattern") && cfg["pattern"].contains("String")) {
    auto r = std::make_unique<replace>();
    r->from = cfg["pattern"]["String"].get<std::string>();
    r->to = cfg.at("content").get<std::string>();
    return r;
  }
  if (type == "Sequence") {
    auto s = std::make_unique<sequence>();
    for (auto& c : cfg.at("normalizers"))
      if (auto n = make_normalizer(c, source)) s->parts.push_back(std::move(n));
    return s;
  }
  fail("{}: normalizer type '{}' is not supported (supported: NFC, NFD, NFKC, NFKD, Lowercase, Prepend, "
       "Replace with a String pattern, Sequence)",
       source, type.empty() ? cfg.dump() : type);
}

}  // namespace gsa::tok
