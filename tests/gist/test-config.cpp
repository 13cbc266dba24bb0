// gsa_config: JSON round trip, defaults, and the errors a user can cause (each must name the offending key).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "gist/config.h"

using namespace gsa::gist;

namespace {

std::string error_of(const nlohmann::json& j) {
  try {
    gsa_config_from_json(j);
  } catch (const gsa::error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(GistConfig, ParseAllKeys) {
  auto j = nlohmann::json::parse(R"({"chunk": [8, 4], "gists_per_chunk": 2, "gist_token_ids": [100, 101],
    "local_chunks": 2, "sink": 4, "dense_layers": [0, 1], "select": "top_p", "topk": 7, "top_p": 0.5,
    "group_scoring": true, "gists": "all", "train_mode": "suffix_unfold", "train_select": "token",
    "unfold_select": "flat"})");
  gsa_config c = gsa_config_from_json(j);
  EXPECT_EQ(c.chunk, (std::vector<int>{8, 4}));
  EXPECT_EQ(c.levels(), 2);
  EXPECT_EQ(c.gists_per_chunk, 2);
  EXPECT_EQ(c.gist_token_ids, (std::vector<int32_t>{100, 101}));
  EXPECT_EQ(c.local_chunks, 2);
  EXPECT_EQ(c.sink, 4);
  EXPECT_EQ(c.dense_layers, (std::vector<int>{0, 1}));
  EXPECT_EQ(c.select, select_rule::top_p);
  EXPECT_EQ(c.topk, 7);
  EXPECT_FLOAT_EQ(c.top_p, 0.5f);
  EXPECT_TRUE(c.group_scoring);
  EXPECT_TRUE(c.gists_all);
  EXPECT_EQ(c.mode, train_mode::suffix_unfold);
  EXPECT_TRUE(c.select_per_token);
  EXPECT_FALSE(c.unfold_walk);
  EXPECT_FLOAT_EQ(c.ratio(), 16.0f);  // 8 x 4 raw tokens per top-level unit, 2 gists each

  // Round trip through emit.
  gsa_config d = gsa_config_from_json(gsa_config_to_json(c));
  EXPECT_EQ(gsa_config_to_json(d), gsa_config_to_json(c));
  EXPECT_EQ(d.chunk, c.chunk);
  EXPECT_EQ(d.mode, c.mode);
  EXPECT_EQ(d.gists_all, c.gists_all);
  EXPECT_TRUE(d.select_per_token);
  EXPECT_FALSE(d.unfold_walk);
}

TEST(GistConfig, ScalarChunkAndDefaults) {
  gsa_config c = gsa_config_from_json(nlohmann::json::parse(R"({"chunk": 16, "gist_token_ids": [5]})"));
  EXPECT_EQ(c.chunk, (std::vector<int>{16}));
  EXPECT_EQ(c.gists_per_chunk, 1);
  EXPECT_EQ(c.local_chunks, 1);
  EXPECT_EQ(c.sink, 3);
  EXPECT_EQ(c.dense_layers, (std::vector<int>{0}));
  EXPECT_EQ(c.select, select_rule::adaptive);
  EXPECT_FALSE(c.gists_all);
  EXPECT_EQ(c.mode, train_mode::compress);
  EXPECT_FALSE(c.select_per_token);
  EXPECT_TRUE(c.unfold_walk);  // a hierarchy trains and prefills with the walk hgsa decodes with
  auto j = gsa_config_to_json(c);
  EXPECT_EQ(j["unfold_select"], "walk");
  EXPECT_EQ(j["train_select"], "chunk");
  EXPECT_TRUE(j["chunk"].is_number_integer());
  EXPECT_EQ(j["gists"], "selected");
  EXPECT_EQ(j["select"], "adaptive");
}

TEST(GistConfig, Errors) {
  EXPECT_NE(error_of({{"chunk", 16}, {"gist_token_ids", {5}}, {"chunks", 3}}).find("chunks"), std::string::npos);
  EXPECT_NE(error_of({{"chunk", 0}, {"gist_token_ids", {5}}}).find("chunk"), std::string::npos);
  EXPECT_NE(error_of({{"chunk", {4, 0}}, {"gist_token_ids", {5, 6}}}).find("chunk[1]"), std::string::npos);
  EXPECT_NE(error_of({{"chunk", {4, 4}}, {"gist_token_ids", {5}}}).find("gist_token_ids"), std::string::npos);
  EXPECT_NE(error_of({{"chunk", {4, 4}}, {"gist_token_ids", {5, 5}}}).find("gist_token_ids"), std::string::npos);
  EXPECT_NE(error_of({{"gist_token_ids", {5}}, {"gists_per_chunk", 0}}).find("gists_per_chunk"), std::string::npos);
  EXPECT_NE(error_of({{"gist_token_ids", {5}}, {"local_chunks", -1}}).find("local_chunks"), std::string::npos);
  EXPECT_NE(error_of({{"gist_token_ids", {5}}, {"sink", -2}}).find("sink"), std::string::npos);
  EXPECT_NE(error_of({{"gist_token_ids", {5}}, {"select", "best"}}).find("select"), std::string::npos);
  EXPECT_NE(error_of({{"gist_token_ids", {5}}, {"gists", "some"}}).find("gists"), std::string::npos);
  EXPECT_NE(error_of({{"gist_token_ids", {5}}, {"train_select", "row"}}).find("train_select"), std::string::npos);
  EXPECT_NE(error_of({{"gist_token_ids", {5}}, {"unfold_select", "tree"}}).find("unfold_select"), std::string::npos);
  EXPECT_NE(error_of({{"gist_token_ids", {5}}, {"top_p", 1.5}}).find("top_p"), std::string::npos);
  EXPECT_NE(error_of({{"gist_token_ids", {5}}, {"topk", "4"}}).find("topk"), std::string::npos);
  EXPECT_NE(error_of({{"gist_token_ids", {5}}, {"train_mode", "dense"}}).find("dense"), std::string::npos);
  // Names the field too (fuzz-hf-config found the bare "train mode 'unfol+' is unknown").
  EXPECT_NE(error_of({{"gist_token_ids", {5}}, {"train_mode", "unfol+"}}).find("gsa.train_mode"), std::string::npos);
  EXPECT_NE(error_of(nlohmann::json::array()).find("object"), std::string::npos);
  EXPECT_THROW(train_mode_from_name("x"), gsa::error);
  EXPECT_EQ(train_mode_from_name("unfold"), train_mode::unfold);
  EXPECT_STREQ(select_rule_name(select_rule::top_p), "top_p");
  EXPECT_STREQ(train_mode_name(train_mode::compress), "compress");
}
