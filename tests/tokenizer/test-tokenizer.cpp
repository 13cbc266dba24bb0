// Encode/decode against golden ids written by the reference library (scripts/tokenizer-goldens) for the real
// Llama 3 and Qwen 3 tokenizers, round trips, BPE internals against a naive merge loop, and load errors.
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "test-util.h"
#include "tokenizer/bpe.h"
#include "tokenizer/byte-level.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/tokenizer.h"

namespace gsa {
namespace {

using json = nlohmann::json;

std::string read_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

json golden(const std::string& name) {
  auto p = test::source_dir() / "tests" / "data" / "tokenizer" / (name + ".json");
  return json::parse(read_file(p));
}

// A golden case's text: stored inline for hard cases, or a byte range of a shared data file.
std::string case_text(const json& c) {
  if (c.contains("text")) return c["text"].get<std::string>();
  std::string all = read_file(test::data_dir() / "text" / c["file"].get<std::string>());
  return all.substr(c["offset"].get<size_t>(), c["length"].get<size_t>());
}

// Tokenizers are large (9-11 MB of JSON): load each once for the whole program.
const tokenizer& real(const std::string& name) {
  static std::map<std::string, tokenizer> cache;
  auto it = cache.find(name);
  if (it == cache.end()) it = cache.emplace(name, tokenizer::load(test::data_dir() / "tokenizers" / name)).first;
  return it->second;
}

void check_goldens(const std::string& name, bool nfc) {
  const tokenizer& t = real(name);
  json g = golden(name);
  for (const auto& c : g["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    std::string text = case_text(c);
    auto want = c["ids"].get<std::vector<int32_t>>();
    auto got = t.encode(text);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); i++) ASSERT_EQ(got[i], want[i]) << "first difference at token " << i;
    std::string back = t.decode(got);
    EXPECT_EQ(back, nfc ? tok::nfc(text) : text);  // round trip
    if (c.contains("decoded")) {
      EXPECT_EQ(back, c["decoded"].get<std::string>());  // the reference's decode
    }
  }
}

TEST(tokenizer, llama3_matches_reference) {
  GSA_REQUIRE_DATA("tokenizers/llama3/tokenizer.json");
  check_goldens("llama3", false);
}

TEST(tokenizer, qwen3_matches_reference) {
  GSA_REQUIRE_DATA("tokenizers/qwen3/tokenizer.json");
  check_goldens("qwen3", true);
}

TEST(tokenizer, special_tokens_and_lookup) {
  GSA_REQUIRE_DATA("tokenizers/llama3/tokenizer.json");
  const tokenizer& t = real("llama3");
  EXPECT_EQ(t.token_id("<|begin_of_text|>"), 128000);
  EXPECT_EQ(t.token_id("Ġthe"), t.encode(" the").at(0));
  EXPECT_EQ(t.token_id("no such token at all"), -1);
  EXPECT_EQ(t.vocab_size(), 128256u);
  auto ids = t.encode("a<|eot_id|>b");
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids[1], 128009);
  EXPECT_EQ(t.decode(ids, /*skip_special=*/true), "ab");
  EXPECT_THROW(t.decode(std::vector<int32_t>{-1}), error);
  EXPECT_THROW(t.decode(std::vector<int32_t>{int32_t(t.vocab_size())}), error);
  EXPECT_THROW(t.encode("bad \xC3\x28 utf8"), error);
}

// The heap merge (long words) and the scan merge (short words) must agree, and both must agree with the
// textbook loop: merge the lowest-rank adjacent pair (leftmost on ties) on strings until none applies.
TEST(tokenizer, bpe_merge_orders_agree) {
  GSA_REQUIRE_DATA("tokenizers/qwen3/tokenizer.json");
  json j = json::parse(read_file(test::data_dir() / "tokenizers" / "qwen3" / "tokenizer.json"));
  std::map<std::pair<std::string, std::string>, int> rank;
  int r = 0;
  for (auto& m : j["model"]["merges"]) rank.emplace(std::pair(m[0].get<std::string>(), m[1].get<std::string>()), r++);
  const auto& vocab = j["model"]["vocab"];
  const tokenizer& t = real("qwen3");

  tok::bpe_model bpe;  // a small model over the same merges, to drive encode_word directly
  for (auto it = vocab.begin(); it != vocab.end(); ++it) bpe.bytes_to_id[*tok::byte_level_to_bytes(it.key())] = it.value();
  for (int b = 0; b < 256; b++) bpe.byte_id[b] = bpe.bytes_to_id.at(std::string(1, char(b)));
  r = 0;
  for (auto& m : j["model"]["merges"]) {
    auto a = *tok::byte_level_to_bytes(m[0].get<std::string>()), b = *tok::byte_level_to_bytes(m[1].get<std::string>());
    bpe.merges.insert(bpe.bytes_to_id.at(a), bpe.bytes_to_id.at(b), r++, bpe.bytes_to_id.at(a + b));
  }

  std::mt19937 rng(7);
  const std::string alphabet = "aabbeeilnorst   !!==..01";
  for (int trial = 0; trial < 200; trial++) {
    std::string w;
    size_t n = 1 + rng() % 120;
    for (size_t i = 0; i < n; i++) w += alphabet[rng() % alphabet.size()];
    std::vector<int32_t> heap, scan;
    bpe.encode_word(w, heap, /*heap_from=*/0);
    bpe.encode_word(w, scan, /*heap_from=*/1000);
    ASSERT_EQ(heap, scan) << w;

    std::vector<std::string> sym;  // naive, on byte-level strings
    for (unsigned char ch : w) sym.push_back(tok::bytes_to_byte_level(std::string(1, char(ch))));
    for (;;) {
      int best = INT32_MAX;
      size_t at = 0;
      for (size_t i = 0; i + 1 < sym.size(); i++) {
        auto it = rank.find({sym[i], sym[i + 1]});
        if (it != rank.end() && it->second < best) best = it->second, at = i;
      }
      if (best == INT32_MAX) break;
      sym[at] += sym[at + 1];
      sym.erase(sym.begin() + at + 1);
    }
    ASSERT_EQ(sym.size(), heap.size()) << w;
    for (size_t i = 0; i < sym.size(); i++) ASSERT_EQ(vocab.at(sym[i]).get<int32_t>(), heap[i]) << w;
    (void)t;
  }
}

TEST(tokenizer, byte_level_alphabet) {
  std::string all;
  for (int b = 0; b < 256; b++) all += char(b);
  std::string bl = tok::bytes_to_byte_level(all);
  EXPECT_EQ(*tok::byte_level_to_bytes(bl), all);
  EXPECT_EQ(tok::bytes_to_byte_level(" "), "\xC4\xA0");  // space is 'Ġ' (U+0120)
  EXPECT_EQ(tok::bytes_to_byte_level("\n"), "\xC4\x8A");  // newline is 'Ċ' (U+010A)
  EXPECT_EQ(tok::bytes_to_byte_level("a"), "a");
  EXPECT_FALSE(tok::byte_level_to_bytes("\xE4\xBD\xA0").has_value());  // U+4F60 is outside the alphabet
  EXPECT_EQ(tok::find_invalid_utf8("ok\xED\xA0\x80"), 2u);  // a surrogate
  EXPECT_EQ(tok::find_invalid_utf8("\xC0\xAF"), 0u);        // overlong
  EXPECT_EQ(tok::find_invalid_utf8("h\xC3\xA9"), std::string_view::npos);
}

json tiny_tokenizer() {
  json vocab = json::object();
  for (int b = 0; b < 256; b++) vocab[tok::bytes_to_byte_level(std::string(1, char(b)))] = b;
  vocab["ab"] = 256;
  return json{{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array({"a b"})}}},
              {"normalizer", nullptr},
              {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
              {"post_processor", nullptr},
              {"decoder", {{"type", "ByteLevel"}}},
              {"added_tokens", json::array()}};
}

TEST(tokenizer, tiny_model_and_clear_errors) {
  auto t = tokenizer::from_json(tiny_tokenizer(), "tiny.json");
  EXPECT_EQ(t.encode("abab"), (std::vector<int32_t>{256, 256}));
  EXPECT_EQ(t.encode("ab ab"), (std::vector<int32_t>{256, 32, 256}));  // " ab" is one pre-token; no " a" merge
  auto expect_error = [](json j, const std::string& needle) {
    try {
      tokenizer::from_json(j, "bad.json");
      ADD_FAILURE() << "no error for " << needle;
    } catch (const error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos) << e.what();
    }
  };
  json j = tiny_tokenizer();
  j["model"]["type"] = "WordPiece";
  expect_error(j, "WordPiece");
  j = tiny_tokenizer();
  j["model"]["type"] = "Unigram";
  expect_error(j, "Unigram");
  j = tiny_tokenizer();
  j["normalizer"] = {{"type", "Precompiled"}};
  expect_error(j, "Precompiled");
  j = tiny_tokenizer();
  j["pre_tokenizer"] = {{"type", "Metaspace"}};
  expect_error(j, "Metaspace");
  j = tiny_tokenizer();
  j["decoder"] = {{"type", "WordPiece"}};
  expect_error(j, "WordPiece");
  // Ids are bounded by the tokens the file defines: 2^31 - 1 used to overflow (id + 1), 1e8 to allocate GBs.
  for (int64_t big : {int64_t(2147483647), int64_t(100000000)}) {
    j = tiny_tokenizer();
    j["added_tokens"] = json::array({{{"id", big}, {"content", "<|x|>"}, {"special", true}}});
    expect_error(j, std::to_string(big));
    j = tiny_tokenizer();
    j["model"]["vocab"]["ab"] = big;
    expect_error(j, "not below");
  }
  // A Split regex that the Oniguruma translation rejects (before PCRE2 sees it) names the file too.
  for (const char* bad : {"[a-z", "\\", "\\p{L", "[[:alpha:", "[a[b]]", "(?<"}) {
    j = tiny_tokenizer();
    j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", bad}}}, {"behavior", "Isolated"}};
    expect_error(j, "regex");
  }
  // A pattern that backtracks without bound loads, and fails on a text that makes it do so with the file named.
  j = tiny_tokenizer();
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       json::array({{{"type", "Split"}, {"pattern", {{"Regex", "(a|aa)+[bc]"}}}, {"behavior", "Isolated"}},
                    {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}};
  const tokenizer slow = tokenizer::from_json(j, "bad.json");
  try {
    slow.encode(std::string(200, 'a'));
    ADD_FAILURE() << "no error";
  } catch (const error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("backtracks"), std::string::npos) << e.what();
  }
  EXPECT_THROW(tokenizer::load("/nonexistent/tokenizer"), error);
}

}  // namespace
}  // namespace gsa
