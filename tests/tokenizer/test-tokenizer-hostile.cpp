// Hostile tokenizer.json files (issue 12, fuzz/fuzz-tokenizer.cpp): a field of the wrong type used to escape as
// nlohmann's raw message ("[json.exception.type_error.306] cannot use value() with number") naming neither the
// file nor the field; ids past 2^31 were truncated (2^32 + 5 became id 5). And the tokenizer is checked against the
// model it drives: a tokenizer larger than the model's embedding table, or a model special id it lacks, is refused.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/byte-level.h"
#include "tokenizer/tokenizer.h"

namespace gsa {
namespace {

using json = nlohmann::json;

json tiny() {  // 256 byte tokens, "ab" = 256
  json vocab = json::object();
  for (int b = 0; b < 256; b++) vocab[tok::bytes_to_byte_level(std::string(1, char(b)))] = b;
  vocab["ab"] = 256;
  return json{{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array({"a b"})}}},
              {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
              {"decoder", {{"type", "ByteLevel"}}},
              {"added_tokens", json::array({{{"id", 257}, {"content", "<|eot|>"}, {"special", true}}})}};
}

// The gsa::error from_json throws (a test failure when there is none, or when another exception escapes).
std::string load_error(const json& j) {
  try {
    tokenizer::from_json(j, "hostile/tokenizer.json");
  } catch (const error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a gsa::error: " << e.what();
    return "";
  }
  ADD_FAILURE() << "no error for " << j.dump().substr(0, 200);
  return "";
}

#define EXPECT_MESSAGE(j, field)                                                     \
  do {                                                                               \
    const std::string m = load_error(j);                                             \
    EXPECT_NE(m.find("hostile/tokenizer.json"), std::string::npos) << m;             \
    EXPECT_NE(m.find(field), std::string::npos) << "should name " << (field) << ": " << m; \
    EXPECT_EQ(m.find("internal error"), std::string::npos) << m;                     \
  } while (0)

TEST(TokenizerHostile, WrongTypesNameTheFileAndTheField) {
  ASSERT_NO_THROW(tokenizer::from_json(tiny(), "ok.json"));
  json j = tiny();
  j["normalizer"] = 7;  // value("type") on a number: type_error.306
  EXPECT_MESSAGE(j, "normalizer");
  j = tiny();
  j["pre_tokenizer"] = json::array({1});
  EXPECT_MESSAGE(j, "pre_tokenizer");
  j = tiny();
  j["model"]["merges"] = json::array({json::array({1, 2})});  // parts must be strings
  EXPECT_MESSAGE(j, "model");
  j = tiny();
  j["model"]["dropout"] = "x";
  EXPECT_MESSAGE(j, "model");
  j = tiny();
  j["added_tokens"][0]["content"] = 5;
  EXPECT_MESSAGE(j, "added_tokens");
  j = tiny();
  j["decoder"] = "ByteLevel";
  EXPECT_MESSAGE(j, "decoder");
  j = tiny();
  j["post_processor"] = {{"type", "TemplateProcessing"}, {"single", json::array({{{"SpecialToken", {{"id", 3}}}}})}};
  EXPECT_MESSAGE(j, "post_processor");
}

TEST(TokenizerHostile, IdsMustBeIntegersInRange) {
  json j = tiny();
  j["model"]["vocab"]["ab"] = "256";
  EXPECT_MESSAGE(j, "model.vocab[\"ab\"]");
  j = tiny();
  j["model"]["vocab"]["ab"] = 256.5;  // get<int32_t> used to truncate it
  EXPECT_MESSAGE(j, "model.vocab[\"ab\"]");
  j = tiny();
  j["model"]["vocab"]["ab"] = 1e300;  // converting it to int32 is undefined behaviour
  EXPECT_MESSAGE(j, "model.vocab[\"ab\"]");
  j = tiny();
  j["added_tokens"][0]["id"] = (uint64_t(1) << 32) + 5;  // used to wrap to id 5
  EXPECT_MESSAGE(j, "added_tokens[0].id");
  j = tiny();
  j["added_tokens"][0]["id"] = -3;
  EXPECT_MESSAGE(j, "added_tokens[0].id");
}

TEST(TokenizerHostile, CheckedAgainstTheModel) {
  const tokenizer t = tokenizer::from_json(tiny(), "tiny/tokenizer.json");
  ASSERT_EQ(t.vocab_size(), 258u);
  const std::vector<int64_t> none, eot = {257}, far = {4000};
  EXPECT_NO_THROW(t.check_fits_model(258, none, eot, "m")) << "exactly the tokenizer's ids";
  EXPECT_NO_THROW(t.check_fits_model(512, none, eot, "m")) << "padded embedding tables are fine";
  auto msg = [&](int64_t vocab, const std::vector<int64_t>& bos, const std::vector<int64_t>& eos) {
    try {
      t.check_fits_model(vocab, bos, eos, "models/x");
    } catch (const error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  // The audit's case: a 128k tokenizer on a 4096-row model generated garbage and exited 0.
  std::string m = msg(200, none, eot);
  EXPECT_NE(m.find("tiny/tokenizer.json"), std::string::npos) << m;
  EXPECT_NE(m.find("models/x"), std::string::npos) << m;
  EXPECT_NE(m.find("257"), std::string::npos) << m;
  EXPECT_NE(m.find("200 rows"), std::string::npos) << m;
  // And the other way: the model's eos is not a token of the tokenizer ("cannot decode token id 588" after
  // generating).
  m = msg(5000, none, far);
  EXPECT_NE(m.find("eos_token_id 4000"), std::string::npos) << m;
  m = msg(5000, std::vector<int64_t>{-1}, eot);
  EXPECT_NE(m.find("bos_token_id -1"), std::string::npos) << m;
}

}  // namespace
}  // namespace gsa
