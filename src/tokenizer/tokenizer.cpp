// tokenizer.json loading and the encode/decode pipeline. The order of steps is the reference's:
//   1. cut the text at added tokens matched verbatim (longest match, left to right; lstrip/rstrip trim the
//      neighbouring text), 2. normalize each remaining section, 3. cut again at added tokens that are matched
//      after normalization, 4. pre-tokenize, 5. BPE each pre-token, 6. post-processor template.
#include "tokenizer/tokenizer.h"

#include <deque>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json-util.h"
#include "tokenizer/bpe.h"
#include "tokenizer/byte-level.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/pre-tokenizer.h"

namespace gsa {
namespace {

using json = nlohmann::json;

// Greedy longest match of a set of added tokens, left to right (the reference's DictionarySplitter).
struct token_splitter {
  const std::vector<tokenizer::added_token>* tokens = nullptr;
  std::vector<int> by_first[256];  // token indices by first byte, longest first
  bool empty = true;

  void add(int index) {
    const std::string& c = (*tokens)[index].content;
    if (c.empty()) return;
    auto& v = by_first[uint8_t(c[0])];
    v.push_back(index);
    std::stable_sort(v.begin(), v.end(), [&](int a, int b) {
      return (*tokens)[a].content.size() > (*tokens)[b].content.size();
    });
    empty = false;
  }
  int match(std::string_view text, size_t pos) const {
    for (int i : by_first[uint8_t(text[pos])])
      if (text.substr(pos).starts_with((*tokens)[i].content)) return i;
    return -1;
  }
  // Pieces of `text`: (view, index of the added token or -1 for plain text).
  void split(std::string_view text, std::vector<std::pair<std::string_view, int>>& out) const {
    if (empty) {
      out.emplace_back(text, -1);
      return;
    }
    size_t start = 0;
    for (size_t i = 0; i < text.size();) {
      int m = match(text, i);
      if (m < 0) {
        i++;
        continue;
      }
      if (i > start) out.emplace_back(text.substr(start, i - start), -1);
      size_t n = (*tokens)[m].content.size();
      out.emplace_back(text.substr(i, n), m);
      i += n;
      start = i;
    }
    if (start < text.size()) out.emplace_back(text.substr(start), -1);
  }
};

// A token id field: an integer in [0, 2^31 - 1]. nlohmann's get<int32_t>() would truncate 2^32 + 5 to 5 and
// convert 1e300 with undefined behaviour.
int32_t token_id_field(const json& v, const std::string& source, const std::string& field) {
  if (!v.is_number_integer() || (v.is_number_unsigned() ? v.get<uint64_t>() > uint64_t(INT32_MAX)
                                                         : v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX))
    fail("{}: {} must be a token id (an integer from 0 to 2^31 - 1), got {}", source, field, v.dump());
  return int32_t(v.get<int64_t>());
}

// JavaScript's whitespace (String.prototype.trim), which lstrip/rstrip use in the reference.
bool is_js_space(char32_t c) {
  return c == 9 || c == 10 || c == 11 || c == 12 || c == 13 || c == 32 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000 || c == 0xFEFF;
}
char32_t decode_at(std::string_view s, size_t i, int len) {
  auto b = uint8_t(s[i]);
  char32_t c = len == 1 ? b : b & (0x7F >> len);
  for (int k = 1; k < len; k++) c = (c << 6) | (uint8_t(s[i + k]) & 0x3F);
  return c;
}
std::string_view trim_start(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    int len = tok::utf8_len(uint8_t(s[i]));
    if (!is_js_space(decode_at(s, i, len))) break;
    i += len;
  }
  return s.substr(i);
}
std::string_view trim_end(std::string_view s) {
  size_t e = s.size();
  while (e > 0) {
    size_t b = e - 1;
    while (b > 0 && (uint8_t(s[b]) & 0xC0) == 0x80) b--;
    if (!is_js_space(decode_at(s, b, int(e - b)))) break;
    e = b;
  }
  return s.substr(0, e);
}

// The reference applies lstrip/rstrip of an added token to the text pieces beside it.
void apply_strips(std::vector<std::pair<std::string_view, int>>& parts,
                  const std::vector<tokenizer::added_token>& added) {
  for (size_t i = 0; i < parts.size(); i++) {
    if (parts[i].second < 0) continue;
    const auto& t = added[parts[i].second];
    if (t.lstrip && i > 0 && parts[i - 1].second < 0) parts[i - 1].first = trim_end(parts[i - 1].first);
    if (t.rstrip && i + 1 < parts.size() && parts[i + 1].second < 0)
      parts[i + 1].first = trim_start(parts[i + 1].first);
  }
}

}  // namespace

struct tokenizer::impl {
  std::string source;
  std::unique_ptr<tok::normalizer> norm;
  std::unique_ptr<tok::pre_tokenizer> pre;
  tok::bpe_model bpe;
  std::vector<added_token> added;
  token_splitter verbatim, after_norm;
  std::unordered_map<std::string, int32_t> literal_ids;  // added tokens, and vocab entries outside the alphabet
  std::vector<std::string> id_bytes;                    // decode table
  std::vector<uint8_t> id_kind;                         // 0 absent, 1 vocab, 2 added, 3 special
  std::vector<int32_t> prefix, suffix;                  // post-processor template around the text
  int64_t id_limit = 0;  // ids must be below: the vocabulary plus the added tokens (the file's own count)

  void set_id(int32_t id, std::string bytes, uint8_t kind) {
    if (id < 0) fail("{}: negative token id {}", source, id);
    // Bounded by the number of tokens the file defines, so a stray huge id cannot allocate gigabytes (or overflow).
    if (id >= id_limit)
      fail("{}: token id {} is not below the {} tokens the file defines (vocabulary + added tokens): the file is "
           "corrupt", source, id, id_limit);
    if (size_t(id) >= id_bytes.size()) id_bytes.resize(id + 1), id_kind.resize(id + 1, 0);
    id_bytes[id] = std::move(bytes);
    id_kind[id] = kind;
  }
  int32_t lookup(std::string_view token) const {
    if (auto it = literal_ids.find(std::string(token)); it != literal_ids.end()) return it->second;
    if (auto raw = tok::byte_level_to_bytes(token))
      if (auto it = bpe.bytes_to_id.find(*raw); it != bpe.bytes_to_id.end()) return it->second;
    return -1;
  }

  void load_model(const json& m);
  void load_post_processor(const json& pp);
  void encode_plain(std::string_view text, std::vector<int32_t>& out, tok::bpe_cache& cache) const;
};

void tokenizer::impl::load_model(const json& m) {
  std::string type = m.value("type", m.contains("merges") ? "BPE" : "");
  if (type != "BPE")
    fail("{}: model type '{}' is not supported: gsa reads byte-level BPE tokenizers only", source,
         type.empty() ? "(none)" : type);
  if (m.contains("dropout") && !m["dropout"].is_null() && m["dropout"].get<double>() != 0.0)
    fail("{}: BPE dropout is not supported (set model.dropout to null)", source);
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (m.contains(k) && m[k].is_string() && !m[k].get<std::string>().empty())
      fail("{}: BPE option model.{} is not supported for byte-level BPE", source, k);
  bpe.ignore_merges = m.value("ignore_merges", false);

  const json& vocab = m.at("vocab");
  bpe.bytes_to_id.reserve(vocab.size() * 2);
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    int32_t id = token_id_field(it.value(), source, "model.vocab[\"" + it.key() + "\"]");
    if (auto raw = tok::byte_level_to_bytes(it.key())) {
      bpe.bytes_to_id[*raw] = id;
      set_id(id, *raw, 1);
    } else {  // unreachable by byte-level merges; kept so that it decodes and can be looked up
      literal_ids[it.key()] = id;
      set_id(id, it.key(), 1);
    }
  }
  for (int b = 0; b < 256; b++) {
    auto it = bpe.bytes_to_id.find(std::string(1, char(b)));
    if (it == bpe.bytes_to_id.end())
      fail("{}: the vocabulary lacks the byte-level token for byte 0x{:02X}; not a byte-level BPE vocabulary",
           source, b);
    bpe.byte_id[b] = it->second;
  }

  const json& merges = m.at("merges");
  bpe.merges.reserve(merges.size());
  int32_t rank = 0;
  for (const auto& mg : merges) {
    std::string a, b;
    if (mg.is_string()) {  // "left right"
      const std::string& s = mg.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos) fail("{}: merge '{}' has no space between its two parts", source, s);
      size_t sp2 = s.find(' ', sp + 1);
      a = s.substr(0, sp);
      b = s.substr(sp + 1, sp2 == std::string::npos ? std::string::npos : sp2 - sp - 1);
    } else if (mg.is_array() && mg.size() == 2) {
      a = mg[0].get<std::string>();
      b = mg[1].get<std::string>();
    } else {
      fail("{}: merge #{} is neither a \"left right\" string nor a [left, right] pair", source, rank);
    }
    auto ra = tok::byte_level_to_bytes(a), rb = tok::byte_level_to_bytes(b);
    int32_t r = rank++;
    if (!ra || !rb) continue;  // outside the byte alphabet: can never apply
    auto il = bpe.bytes_to_id.find(*ra), ir = bpe.bytes_to_id.find(*rb), im = bpe.bytes_to_id.find(*ra + *rb);
    // A merge whose parts or result are missing from the vocabulary could only produce unknown tokens.
    if (il == bpe.bytes_to_id.end() || ir == bpe.bytes_to_id.end() || im == bpe.bytes_to_id.end()) continue;
    bpe.merges.insert(il->second, ir->second, r, im->second);
  }
}

void tokenizer::impl::load_post_processor(const json& pp) {
  if (pp.is_null()) return;
  std::string type = pp.value("type", "");
  if (type == "ByteLevel") return;  // only adjusts offsets
  if (type == "Sequence") {
    for (const auto& p : pp.at("processors")) load_post_processor(p);
    return;
  }
  if (type == "TemplateProcessing") {
    bool after = false;
    for (const auto& item : pp.at("single")) {
      if (item.contains("Sequence")) {
        after = true;
      } else if (item.contains("SpecialToken")) {
        std::string name = item["SpecialToken"].at("id").get<std::string>();
        int32_t id = -1;
        if (pp.contains("special_tokens") && pp["special_tokens"].contains(name))
          id = token_id_field(pp["special_tokens"][name].at("ids").at(0), source,
                              "post_processor.special_tokens[\"" + name + "\"].ids[0]");
        else
          id = lookup(name);
        if (id < 0) fail("{}: post-processor template names unknown token '{}'", source, name);
        (after ? suffix : prefix).push_back(id);
      }
    }
    return;
  }
  fail("{}: post-processor type '{}' is not supported (supported: ByteLevel, TemplateProcessing, Sequence)",
       source, type);
}

tokenizer tokenizer::from_json(const json& j, const std::string& source) {
  // Each step says which part of the file it reads, so that a field of the wrong type (which nlohmann reports as
  // "[json.exception.type_error.302] type must be string, but is number") is reported with the file and the part.
  const char* part = "the top level";
  try {
    return from_json_parts(j, source, &part);
  } catch (const json::exception& e) {
    fail("{}: field '{}' is malformed ({}): the file is not a valid tokenizer.json", source, part, e.what());
  }
}

tokenizer tokenizer::from_json_parts(const json& j, const std::string& source, const char** part) {
  auto p = std::make_unique<impl>();
  p->source = source;
  if (!j.is_object() || !j.contains("model"))
    fail("{}: not a Hugging Face tokenizer.json (no 'model' field)", source);
  *part = "normalizer";
  p->norm = tok::make_normalizer(j.value("normalizer", json()), source);
  *part = "pre_tokenizer";
  p->pre = tok::make_pre_tokenizer(j.value("pre_tokenizer", json()), source);
  if (!p->pre || !p->pre->byte_level())
    fail("{}: the pre-tokenizer has no ByteLevel step; gsa reads byte-level BPE tokenizers only", source);
  {
    const json& m = j["model"];
    const size_t n_vocab = m.is_object() && m.contains("vocab") && m["vocab"].is_object() ? m["vocab"].size() : 0;
    const json added = j.value("added_tokens", json::array());
    p->id_limit = int64_t(n_vocab) + int64_t(added.is_array() ? added.size() : 0);
  }
  *part = "model";
  p->load_model(j["model"]);

  *part = "decoder";
  const json dec = j.value("decoder", json());
  auto decoder_ok = [](const json& d) { return d.is_null() || d.value("type", "") == "ByteLevel"; };
  bool ok = decoder_ok(dec);
  if (!ok && dec.value("type", "") == "Sequence") {
    ok = true;
    for (const auto& d : dec.at("decoders")) ok &= decoder_ok(d);
  }
  if (!ok) fail("{}: decoder type '{}' is not supported (supported: ByteLevel)", source, dec.value("type", ""));

  *part = "added_tokens";
  for (const auto& a : j.value("added_tokens", json::array())) {
    added_token t;
    t.content = a.at("content").get<std::string>();
    t.id = token_id_field(a.at("id"), source, "added_tokens[" + std::to_string(p->added.size()) + "].id");
    t.special = a.value("special", false);
    t.lstrip = a.value("lstrip", false);
    t.rstrip = a.value("rstrip", false);
    t.normalized = a.value("normalized", !t.special);
    p->added.push_back(t);
  }
  p->verbatim.tokens = p->after_norm.tokens = &p->added;
  for (size_t i = 0; i < p->added.size(); i++) {
    auto& t = p->added[i];
    p->literal_ids[t.content] = t.id;
    p->set_id(t.id, t.content, t.special ? 3 : 2);
    if (t.normalized && p->norm) {
      // Matched after normalization, in normalized form (what the reference compares against).
      t.content = p->norm->apply(t.content);
      p->after_norm.add(int(i));
    } else {
      p->verbatim.add(int(i));
    }
  }
  *part = "post_processor";
  p->load_post_processor(j.value("post_processor", json()));
  return tokenizer(std::move(p));
}

tokenizer tokenizer::load(const std::filesystem::path& path) {
  std::filesystem::path file = std::filesystem::is_directory(path) ? path / "tokenizer.json" : path;
  std::ifstream f(file, std::ios::binary);
  if (!f) fail("cannot open {}: give a tokenizer.json or a folder holding one", file.string());
  std::stringstream ss;
  ss << f.rdbuf();
  return from_json(parse_json(ss.str(), file.string()), file.string());
}

tokenizer::tokenizer(std::unique_ptr<impl> p) : p_(std::move(p)) {}
tokenizer::tokenizer(tokenizer&&) noexcept = default;
tokenizer& tokenizer::operator=(tokenizer&&) noexcept = default;
tokenizer::~tokenizer() = default;

void tokenizer::impl::encode_plain(std::string_view text, std::vector<int32_t>& out, tok::bpe_cache& cache) const {
  std::vector<std::string_view> pieces{text};
  std::deque<std::string> arena;
  pre->split(pieces, arena);
  bpe.encode(pieces, out, cache);
}

std::vector<int32_t> tokenizer::encode(std::string_view text, bool add_special) const {
  const impl& p = *p_;
  if (size_t bad = tok::find_invalid_utf8(text); bad != std::string_view::npos)
    fail("tokenizer input is not valid UTF-8 (byte offset {}); convert the text to UTF-8 first", bad);
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 8);
  if (add_special) out.insert(out.end(), p.prefix.begin(), p.prefix.end());
  tok::bpe_cache cache;
  std::vector<std::pair<std::string_view, int>> sections, subs;
  p.verbatim.split(text, sections);
  apply_strips(sections, p.added);
  for (auto [sec, tok_index] : sections) {
    if (tok_index >= 0) {
      out.push_back(p.added[tok_index].id);
      continue;
    }
    if (sec.empty()) continue;
    std::string normalized;
    if (p.norm) {
      normalized = p.norm->apply(sec);
      sec = normalized;
    }
    subs.clear();
    p.after_norm.split(sec, subs);
    apply_strips(subs, p.added);
    for (auto [sub, j] : subs) {
      if (j >= 0) out.push_back(p.added[j].id);
      else if (!sub.empty()) p.encode_plain(sub, out, cache);
    }
  }
  if (add_special) out.insert(out.end(), p.suffix.begin(), p.suffix.end());
  return out;
}

std::string tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || size_t(id) >= p_->id_bytes.size() || p_->id_kind[id] == 0)
      fail("cannot decode token id {}: not in the vocabulary of {} (size {})", id, p_->source, vocab_size());
    if (skip_special && p_->id_kind[id] == 3) continue;
    out += p_->id_bytes[id];
  }
  return out;
}

int32_t tokenizer::token_id(std::string_view token) const { return p_->lookup(token); }

const std::string& tokenizer::token_bytes(int32_t id) const {
  static const std::string none;
  return id >= 0 && size_t(id) < p_->id_bytes.size() ? p_->id_bytes[id] : none;
}

size_t tokenizer::vocab_size() const { return p_->id_bytes.size(); }

const std::vector<tokenizer::added_token>& tokenizer::added_tokens() const { return p_->added; }

void tokenizer::check_fits_model(int64_t model_vocab, std::span<const int64_t> bos_ids,
                                 std::span<const int64_t> eos_ids, const std::string& model_source) const {
  const impl& p = *p_;
  if (int64_t(p.id_bytes.size()) > model_vocab) {
    int32_t largest = int32_t(p.id_bytes.size()) - 1;
    fail("{}: the tokenizer defines token ids up to {} but the model {} has {} rows (vocab_size): they do not "
         "belong together; use the tokenizer.json saved with the model", p.source, largest, model_source,
         model_vocab);
  }
  for (auto [ids, field] : {std::pair{bos_ids, "bos_token_id"}, std::pair{eos_ids, "eos_token_id"}})
    for (int64_t id : ids)
      if (id < 0 || id >= int64_t(p.id_kind.size()) || p.id_kind[size_t(id)] == 0)
        fail("{}: the model {} has {} {} in config.json, which is not a token of this tokenizer ({} ids): they do "
             "not belong together; use the tokenizer.json saved with the model", p.source, model_source, field, id,
             p.id_bytes.size());
}

}  // namespace gsa
