// Model directories: save then open a small random model (single file and sharded), and the checkpoint
// mismatches a user meets (missing tensor, wrong shape, integer weights, no weights at all).
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "io-test-util.h"
#include "io/model-dir.h"
#include "test-util.h"

namespace gsa {
namespace {

using test::error_of;
using test::scratch_dir;

model_config tiny_config(bool tied) {
  nlohmann::json j = {{"model_type", "qwen2"}, {"vocab_size", 11}, {"hidden_size", 8}, {"intermediate_size", 6},
                      {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                      {"tie_word_embeddings", tied}, {"gsa", {{"chunk", {4}}}}};
  return model_config_from_json(j, "tiny");
}

std::vector<std::pair<std::string, Tensor>> random_weights(const model_config& c, dtype t, uint64_t seed) {
  rng r(seed);
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& [name, shape] : expected_tensors(c)) {
    Tensor w(shape);
    auto v = test::randn(size_t(w.numel()), r);
    std::memcpy(w.f32(), v.data(), v.size() * 4);
    out.push_back({name, w.to(t)});
  }
  return out;
}

TEST(ModelDir, SaveThenOpen) {
  scratch_dir d;
  for (bool tied : {false, true}) {
    auto c = tiny_config(tied);
    auto w = random_weights(c, dtype::bf16, 3);
    save_model_dir(d.str(), c, w, "bfloat16");
    auto m = open_model_dir(d.str());
    EXPECT_EQ(m.config.architecture, "qwen2");
    EXPECT_EQ(m.config.tie_word_embeddings, tied);
    EXPECT_EQ(m.config.torch_dtype, "bfloat16");
    EXPECT_EQ(m.config.gsa, c.gsa);
    EXPECT_EQ(m.weights.files()[0].metadata().at("format"), "pt");
    EXPECT_EQ(m.weights.has("lm_head.weight"), !tied);
    for (auto& [name, t] : w) {
      Tensor got = m.weights.load_f32(name, t.shape());
      Tensor want = t.to(dtype::f32);
      ASSERT_EQ(std::memcmp(got.raw(), want.raw(), want.nbytes()), 0) << name;
    }
  }
}

TEST(ModelDir, OpensShardedCheckpoints) {
  scratch_dir d;
  auto c = tiny_config(false);
  auto w = random_weights(c, dtype::f32, 5);
  save_model_config(d / "config.json", c);
  std::vector<std::pair<std::string, Tensor>> s1(w.begin(), w.begin() + 5), s2(w.begin() + 5, w.end());
  write_safetensors(d / "model-00001-of-00002.safetensors", s1);
  write_safetensors(d / "model-00002-of-00002.safetensors", s2);
  nlohmann::json map = nlohmann::json::object();
  for (auto& [n, t] : s1) map[n] = "model-00001-of-00002.safetensors";
  for (auto& [n, t] : s2) map[n] = "model-00002-of-00002.safetensors";
  test::write_bytes(d / "model.safetensors.index.json", nlohmann::json({{"weight_map", map}}).dump());
  auto m = open_model_dir(d.str());
  EXPECT_EQ(m.weights.files().size(), 2u);
  Tensor got = m.weights.load_f32("lm_head.weight", {11, 8});
  EXPECT_EQ(std::memcmp(got.raw(), w.back().second.raw(), got.nbytes()), 0);
}

TEST(ModelDirBad, MissingOrMisShapedTensors) {
  scratch_dir d;
  auto c = tiny_config(false);
  auto w = random_weights(c, dtype::f32, 7);
  std::string st = d / "model.safetensors";

  auto missing = w;
  missing.erase(missing.begin() + 3);  // model.layers.0.self_attn.q_proj.bias
  save_model_dir(d.str(), c, missing);
  std::string msg = error_of([&] { open_model_dir(d.str()); });
  EXPECT_CONTAINS(msg, st);
  EXPECT_CONTAINS(msg, "missing tensor 'model.layers.0.self_attn.q_proj.bias'");

  auto shaped = w;
  shaped[4].second = Tensor({9, 8});  // k_proj.weight should be (4, 8)
  save_model_dir(d.str(), c, shaped);
  msg = error_of([&] { open_model_dir(d.str()); });
  EXPECT_EQ(msg, st + ": tensor 'model.layers.0.self_attn.k_proj.weight' has shape [9, 8] but the model expects [4, 8]");

  auto ints = w;
  ints[0].second = Tensor({11, 8}, dtype::i32);
  save_model_dir(d.str(), c, ints);
  msg = error_of([&] { open_model_dir(d.str()); });
  EXPECT_CONTAINS(msg, st);
  EXPECT_CONTAINS(msg, "'model.embed_tokens.weight'");
  EXPECT_CONTAINS(msg, "I32");

  std::filesystem::remove(st);
  msg = error_of([&] { open_model_dir(d.str()); });
  EXPECT_CONTAINS(msg, d.str());
  EXPECT_CONTAINS(msg, "model.safetensors");

  msg = error_of([&] { open_model_dir(d / "nope"); });
  EXPECT_CONTAINS(msg, d / "nope");
}

}  // namespace
}  // namespace gsa
