// The BPE trainer: a hand-worked corpus, determinism against the committed trained tokenizer, and ids of that
// tokenizer against the reference library's (tests/data/tokenizer/trained.json, written by
// scripts/tokenizer-goldens with --trained). Set GSA_WRITE_TRAINED=DIR to write the freshly trained tokenizer
// to DIR when the goldens need regenerating.
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "test-util.h"
#include "tokenizer/bpe-trainer.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/tokenizer.h"

namespace gsa {
namespace {

using json = nlohmann::json;

std::string slurp(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST(bpe_trainer, hand_worked_corpus) {
  // Pre-tokens: "ab" x1, " ab" x2, " cd" x1. Pair counts: (a,b) 3, (' ',a) 2, (' ',c) 1, (c,d) 1.
  // Merge 1: a+b (3). Then (' ',ab) has 2: merge 2. Every other pair occurs once (< min_frequency 2).
  std::vector<std::string> texts = {"ab ab ab cd"};
  tok::bpe_train_options opt;
  opt.vocab_size = 300;
  json j = tok::train_bpe(texts, opt);
  EXPECT_EQ(j["model"]["merges"], json::parse(R"([["a","b"],["Ġ","ab"]])"));
  EXPECT_EQ(j["model"]["vocab"].size(), 258u);
  EXPECT_EQ(j["added_tokens"].size(), 5u);
  EXPECT_EQ(j["added_tokens"][1]["content"], "<|gist|>");
  EXPECT_EQ(j["added_tokens"][1]["id"], 259);

  auto t = tokenizer::from_json(j, "trained");
  EXPECT_EQ(t.encode("ab ab cd"), (std::vector<int32_t>{256, 257, ' ', 'c', 'd'}));
  EXPECT_EQ(t.encode("x<|gist|>y<|gist_3|>"), (std::vector<int32_t>{'x', 259, 'y', 262}));
  EXPECT_EQ(t.vocab_size(), 263u);

  opt.vocab_size = 257 + 5;  // room for exactly one merge
  EXPECT_EQ(tok::train_bpe(texts, opt)["model"]["merges"].size(), 1u);
  opt.vocab_size = 100;
  EXPECT_THROW(tok::train_bpe(texts, opt), error);
}

// The committed golden was trained on this slice with vocab 1000.
std::string training_corpus() {
  return slurp(test::data_dir() / "text" / "books" / "sense_and_sensibility.txt").substr(0, 200000);
}

TEST(bpe_trainer, trained_tokenizer_matches_reference) {
  GSA_REQUIRE_DATA("text/books/sense_and_sensibility.txt");
  std::vector<std::string> texts = {training_corpus()};
  tok::bpe_train_options opt;
  opt.vocab_size = 1000;
  json fresh = tok::train_bpe(texts, opt);
  if (const char* dir = std::getenv("GSA_WRITE_TRAINED")) tok::write_tokenizer(fresh, dir);
  EXPECT_EQ(fresh["model"]["merges"].size(), 1000u - 256 - 5);

  auto dir = test::source_dir() / "tests" / "data" / "tokenizer" / "trained";
  json committed = json::parse(slurp(dir / "tokenizer.json"));
  EXPECT_EQ(fresh["model"]["merges"], committed["model"]["merges"]) << "training is no longer deterministic "
                                                                      "or changed: regenerate the goldens";
  EXPECT_EQ(fresh["model"]["vocab"], committed["model"]["vocab"]);

  auto t = tokenizer::load(dir);
  json g = json::parse(slurp(test::source_dir() / "tests" / "data" / "tokenizer" / "trained.json"));
  for (const auto& c : g["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    std::string text = c.contains("text") ? c["text"].get<std::string>()
                                          : slurp(test::data_dir() / "text" / c["file"].get<std::string>())
                                                .substr(c["offset"].get<size_t>(), c["length"].get<size_t>());
    auto ids = t.encode(text);
    ASSERT_EQ(ids, c["ids"].get<std::vector<int32_t>>());
    EXPECT_EQ(t.decode(ids), tok::nfc(text));
  }
}

}  // namespace
}  // namespace gsa
