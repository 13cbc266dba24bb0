// config.json: real Llama 3.2 / Qwen2.5 configurations in the transformers 4.x and 5.x forms, defaults,
// parameter counts against the published figures, the writer (both forms, unknown keys kept), and each bad
// configuration (one gsa::error naming the file and the field).
#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>

#include "io-test-util.h"
#include "io/hf-config.h"

namespace gsa {
namespace {

using json = nlohmann::json;
using test::error_of;
using test::scratch_dir;

// Llama 3.2 1B as published (transformers 4.x form).
json llama32_4x() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": 64, "hidden_act": "silu",
    "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192, "max_position_embeddings": 131072,
    "mlp_bias": false, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16,
    "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
    "transformers_version": "4.45.0.dev0", "use_cache": true, "vocab_size": 128256})");
}

// The same model as transformers 5 writes it.
json llama32_5x() {
  json j = llama32_4x();
  j.erase("rope_scaling");
  j.erase("rope_theta");
  j.erase("torch_dtype");
  j["dtype"] = "bfloat16";
  j["rope_parameters"] = json::parse(R"({"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
      "original_max_position_embeddings": 8192, "rope_type": "llama3", "rope_theta": 500000.0})");
  return j;
}

// Qwen2.5 0.5B as published.
json qwen25() {
  return json::parse(R"({
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
    "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 24, "model_type": "qwen2",
    "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
    "transformers_version": "4.40.1", "use_cache": true, "use_sliding_window": false, "vocab_size": 151936})");
}

void expect_same(const model_config& a, const model_config& b) {
  EXPECT_EQ(a.architecture, b.architecture);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.num_hidden_layers, b.num_hidden_layers);
  EXPECT_EQ(a.num_attention_heads, b.num_attention_heads);
  EXPECT_EQ(a.num_key_value_heads, b.num_key_value_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.rope_scaling.type, b.rope_scaling.type);
  EXPECT_EQ(a.rope_scaling.factor, b.rope_scaling.factor);
  EXPECT_EQ(a.rope_scaling.low_freq_factor, b.rope_scaling.low_freq_factor);
  EXPECT_EQ(a.rope_scaling.high_freq_factor, b.rope_scaling.high_freq_factor);
  EXPECT_EQ(a.rope_scaling.original_max_position_embeddings, b.rope_scaling.original_max_position_embeddings);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.qkv_bias, b.qkv_bias);
  EXPECT_EQ(a.o_bias, b.o_bias);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_id, b.eos_token_id);
  EXPECT_EQ(a.gsa, b.gsa);
}

TEST(HfConfig, Llama32Fields) {
  auto c = model_config_from_json(llama32_4x(), "config.json");
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.q_dim(), 2048);
  EXPECT_EQ(c.kv_dim(), 512);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, rope_scaling_config::kind::llama3);
  EXPECT_EQ(c.rope_scaling.factor, 32.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.bos_token_id, std::vector<int64_t>{128000});
  EXPECT_EQ(c.eos_token_id, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_TRUE(c.gsa.is_null());
  EXPECT_EQ(parameter_count(c), 1235814400);  // the published Llama 3.2 1B count
}

TEST(HfConfig, FourXAndFiveXRopeFormsParseTheSame) {
  auto a = model_config_from_json(llama32_4x(), "a/config.json");
  auto b = model_config_from_json(llama32_5x(), "b/config.json");
  expect_same(a, b);
  EXPECT_EQ(b.torch_dtype, "bfloat16");
  // 4.x "type" instead of "rope_type".
  json old = llama32_4x();
  old["rope_scaling"].erase("rope_type");
  old["rope_scaling"]["type"] = "llama3";
  expect_same(a, model_config_from_json(old, "config.json"));
  // Plain RoPE both ways.
  json q4 = qwen25(), q5 = qwen25();
  q5.erase("rope_theta");
  q5["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1000000.0}};
  expect_same(model_config_from_json(q4, "config.json"), model_config_from_json(q5, "config.json"));
  // 5.x leaves original_max_position_embeddings to max_position_embeddings.
  json no_orig = llama32_5x();
  no_orig["rope_parameters"].erase("original_max_position_embeddings");
  EXPECT_EQ(model_config_from_json(no_orig, "config.json").rope_scaling.original_max_position_embeddings, 131072);
}

TEST(HfConfig, Qwen25FieldsAndTensors) {
  auto c = model_config_from_json(qwen25(), "config.json");
  EXPECT_EQ(c.architecture, "qwen2");
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.rope_scaling.type, rope_scaling_config::kind::none);
  EXPECT_EQ(c.eos_token_id, std::vector<int64_t>{151643});
  EXPECT_EQ(parameter_count(c), 494032768);  // the published Qwen2.5 0.5B count
  auto t = expected_tensors(c);
  auto find = [&](const std::string& n) -> const shape_t* {
    for (auto& [name, s] : t)
      if (name == n) return &s;
    return nullptr;
  };
  ASSERT_TRUE(find("model.layers.23.self_attn.k_proj.bias"));
  EXPECT_EQ(*find("model.layers.23.self_attn.k_proj.bias"), shape_t{128});
  EXPECT_EQ(*find("model.layers.0.self_attn.q_proj.bias"), shape_t{896});
  EXPECT_FALSE(find("model.layers.0.self_attn.o_proj.bias"));
  EXPECT_FALSE(find("lm_head.weight"));  // tied
  // Architecture from architectures[0] alone.
  json j = qwen25();
  j.erase("model_type");
  EXPECT_EQ(model_config_from_json(j, "config.json").architecture, "qwen2");
}

TEST(HfConfig, ExpectedTensorsOfAnUntiedBiasedLlama) {
  json j = {{"model_type", "llama"}, {"vocab_size", 10}, {"hidden_size", 8}, {"intermediate_size", 12},
            {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 4},
            {"attention_bias", true}};
  auto c = model_config_from_json(j, "config.json");
  EXPECT_EQ(c.max_position_embeddings, 2048);  // LlamaConfig default
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_FALSE(c.tie_word_embeddings);
  auto t = expected_tensors(c);
  std::vector<std::pair<std::string, shape_t>> layer0 = {
      {"model.layers.0.input_layernorm.weight", {8}},
      {"model.layers.0.self_attn.q_proj.weight", {16, 8}},
      {"model.layers.0.self_attn.q_proj.bias", {16}},
      {"model.layers.0.self_attn.k_proj.weight", {8, 8}},
      {"model.layers.0.self_attn.k_proj.bias", {8}},
      {"model.layers.0.self_attn.v_proj.weight", {8, 8}},
      {"model.layers.0.self_attn.v_proj.bias", {8}},
      {"model.layers.0.self_attn.o_proj.weight", {8, 16}},
      {"model.layers.0.self_attn.o_proj.bias", {8}},
      {"model.layers.0.post_attention_layernorm.weight", {8}},
      {"model.layers.0.mlp.gate_proj.weight", {12, 8}},
      {"model.layers.0.mlp.up_proj.weight", {12, 8}},
      {"model.layers.0.mlp.down_proj.weight", {8, 12}}};
  ASSERT_EQ(t.size(), 1 + 2 * layer0.size() + 2);
  EXPECT_EQ(t[0], (std::pair<std::string, shape_t>{"model.embed_tokens.weight", {10, 8}}));
  for (size_t k = 0; k < layer0.size(); k++) EXPECT_EQ(t[1 + k], layer0[k]);
  EXPECT_EQ(t[1 + layer0.size()].first, "model.layers.1.input_layernorm.weight");
  EXPECT_EQ(t[t.size() - 2], (std::pair<std::string, shape_t>{"model.norm.weight", {8}}));
  EXPECT_EQ(t.back(), (std::pair<std::string, shape_t>{"lm_head.weight", {10, 8}}));
  EXPECT_EQ(hf_layer_tensor(7, "mlp.up_proj.weight"), "model.layers.7.mlp.up_proj.weight");
}

TEST(HfConfig, WriterEmitsBothFormsAndKeepsUnknownKeys) {
  for (json src : {llama32_4x(), llama32_5x(), qwen25()}) {
    src["gsa"] = {{"chunk", {16}}, {"sink", 3}};
    src["quantization_note"] = "kept";
    auto c = model_config_from_json(src, "config.json");
    json out = model_config_to_json(c);
    EXPECT_EQ(out["quantization_note"], "kept");
    EXPECT_EQ(out["gsa"], src["gsa"]);
    EXPECT_EQ(out["torch_dtype"], "float32");
    EXPECT_EQ(out["dtype"], "float32");
    EXPECT_EQ(out["model_type"], c.architecture);
    EXPECT_EQ(out["rope_theta"], c.rope_theta);
    EXPECT_EQ(out["rope_parameters"]["rope_theta"], c.rope_theta);
    EXPECT_EQ(out["architectures"][0], c.architecture == "llama" ? "LlamaForCausalLM" : "Qwen2ForCausalLM");
    expect_same(c, model_config_from_json(out, "out/config.json"));
    // What each transformers version reads: 4.x ignores rope_parameters, 5.x lets a null rope_scaling defer.
    json as4 = out, as5 = out;
    as4.erase("rope_parameters");
    as5.erase("rope_theta");
    as5.erase("rope_scaling");
    expect_same(c, model_config_from_json(as4, "4x/config.json"));
    expect_same(c, model_config_from_json(as5, "5x/config.json"));
    if (c.rope_scaling.type == rope_scaling_config::kind::llama3) {
      EXPECT_EQ(out["rope_scaling"]["rope_type"], "llama3");
      EXPECT_EQ(out["rope_parameters"]["rope_type"], "llama3");
    } else {
      EXPECT_TRUE(out["rope_scaling"].is_null());
      EXPECT_EQ(out["rope_parameters"]["rope_type"], "default");
    }
  }
}

TEST(HfConfig, SaveAndLoadFileOrDirectory) {
  scratch_dir d;
  auto c = model_config_from_json(qwen25(), "config.json");
  c.num_hidden_layers = 2;
  c.gsa = {{"chunk", {8}}};
  save_model_config(d / "config.json", c);
  EXPECT_FALSE(std::filesystem::exists(d / "config.json.tmp"));
  auto a = load_model_config(d / "config.json");
  auto b = load_model_config(d.str());
  expect_same(c, a);
  expect_same(c, b);
  EXPECT_EQ(a.torch_dtype, "float32");
  EXPECT_EQ(a.raw["max_window_layers"], 24);  // unknown-to-us key preserved
  std::string msg = error_of([&] { load_model_config(d / "missing.json"); });
  EXPECT_CONTAINS(msg, d / "missing.json");
  test::write_bytes(d / "config.json", "{\"model_type\": \"llama\",");
  msg = error_of([&] { load_model_config(d.str()); });
  EXPECT_CONTAINS(msg, d / "config.json");
  EXPECT_CONTAINS(msg, "JSON");
}

struct bad_config {
  const char* what;
  std::function<void(json&)> edit;
  std::vector<std::string> expect;
};

TEST(HfConfigBad, EachErrorNamesTheFileAndTheField) {
  std::vector<bad_config> cases = {
      {"missing hidden_size", [](json& j) { j.erase("hidden_size"); }, {"missing field 'hidden_size'"}},
      {"missing vocab_size", [](json& j) { j.erase("vocab_size"); }, {"missing field 'vocab_size'"}},
      {"null num_hidden_layers", [](json& j) { j["num_hidden_layers"] = nullptr; }, {"'num_hidden_layers'"}},
      {"unknown architecture", [](json& j) { j["model_type"] = "mistral"; },
       {"unknown architecture 'mistral': gsa supports llama and qwen2"}},
      {"unknown architectures[0]",
       [](json& j) {
         j.erase("model_type");
         j["architectures"] = {"GemmaForCausalLM"};
       },
       {"'GemmaForCausalLM'", "llama and qwen2"}},
      {"no model type at all",
       [](json& j) {
         j.erase("model_type");
         j.erase("architectures");
       },
       {"'model_type'"}},
      {"yarn", [](json& j) { j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}}; },
       {"'yarn'", "'rope_scaling'", "llama3"}},
      {"linear (4.x type key)", [](json& j) { j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}}; },
       {"'linear'", "llama3"}},
      {"dynamic in rope_parameters",
       [](json& j) { j["rope_parameters"] = {{"rope_type", "dynamic"}, {"factor", 2.0}, {"rope_theta", 1e6}}; },
       {"'dynamic'", "'rope_parameters'"}},
      {"llama3 without factor",
       [](json& j) { j["rope_scaling"] = {{"rope_type", "llama3"}, {"low_freq_factor", 1}, {"high_freq_factor", 4}}; },
       {"missing field 'rope_scaling.factor'"}},
      {"theta disagreement", [](json& j) { j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e4}}; },
       {"'rope_theta'", "'rope_parameters.rope_theta'"}},
      {"string size", [](json& j) { j["hidden_size"] = "896"; }, {"'hidden_size'", "integer"}},
      {"fractional size", [](json& j) { j["intermediate_size"] = 4864.5; }, {"'intermediate_size'"}},
      {"negative size", [](json& j) { j["vocab_size"] = -1; }, {"'vocab_size'", "positive"}},
      {"heads not divisible", [](json& j) { j["num_key_value_heads"] = 3; },
       {"'num_attention_heads'", "'num_key_value_heads'"}},
      {"hidden not divisible, no head_dim", [](json& j) { j["num_attention_heads"] = 13; j["num_key_value_heads"] = 13; },
       {"'hidden_size'", "'head_dim'"}},
      {"gelu", [](json& j) { j["hidden_act"] = "gelu"; }, {"'hidden_act'", "silu"}},
      {"mlp_bias", [](json& j) { j["mlp_bias"] = true; }, {"'mlp_bias'"}},
      {"sliding window", [](json& j) { j["use_sliding_window"] = true; }, {"'use_sliding_window'"}},
      {"eos not ids", [](json& j) { j["eos_token_id"] = "</s>"; }, {"'eos_token_id'"}},
      {"tie not bool", [](json& j) { j["tie_word_embeddings"] = "yes"; }, {"'tie_word_embeddings'"}},
  };
  for (auto& c : cases) {
    SCOPED_TRACE(c.what);
    json j = qwen25();
    c.edit(j);
    std::string msg = error_of([&] { model_config_from_json(j, "dir/config.json"); });
    EXPECT_CONTAINS(msg, "dir/config.json: ");
    for (auto& s : c.expect) EXPECT_CONTAINS(msg, s);
  }
  // And through the file loader, the real path is named.
  scratch_dir d;
  json j = qwen25();
  j.erase("hidden_size");
  test::write_bytes(d / "config.json", j.dump());
  std::string msg = error_of([&] { load_model_config(d.str()); });
  EXPECT_EQ(msg, d / "config.json" + ": missing field 'hidden_size'");
}

}  // namespace
}  // namespace gsa
