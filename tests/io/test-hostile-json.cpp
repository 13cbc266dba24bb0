// Hostile and corrupt files, found by an audit (issue 12): JSON nested far deeper than any real file (it used to
// overflow the stack while parsing), and safetensors headers whose length field is off by a byte or whose tensors
// leave a gap (they used to load shifted garbage). Each gives one gsa::error that names the file.
#include <gtest/gtest.h>

#include <fstream>

#include "core/json-util.h"
#include "io-test-util.h"
#include "io/hf-config.h"
#include "io/safetensors.h"

namespace gsa {
namespace {

using test::error_of;
using test::scratch_dir;
using test::st_bytes;
using test::write_bytes;

std::string nested(int levels) { return std::string(size_t(levels), '[') + std::string(size_t(levels), ']'); }

TEST(HostileJson, DepthIsMeasuredWithoutRecursionAndIgnoresStrings) {
  EXPECT_EQ(json_depth("{}"), 1);
  EXPECT_EQ(json_depth(R"({"a": [1, {"b": [[]]}]})"), 5);
  EXPECT_EQ(json_depth(R"({"a": "[[[[{{{{", "b": "\"[[["})"), 1) << "brackets inside strings do not count";
  EXPECT_GT(json_depth(nested(200000)), max_json_depth) << "stops counting past the limit";
  EXPECT_EQ(parse_json(R"({"a": [1, 2]})", "x.json")["a"][1], 2);
  EXPECT_NE(error_of([] { parse_json(nested(200000), "deep.json"); }).find("deep.json: JSON nested more than"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_json("{\"a\": ", "bad.json"); }).find("bad.json: not valid JSON"), std::string::npos);
  EXPECT_EQ(parse_json("// note\n{\"a\": 1}", "c.json", /*comments=*/true)["a"], 1);
}

TEST(HostileJson, DeepUnusedFieldOfConfigJson) {
  scratch_dir d;
  std::ofstream(d / "config.json") << R"({"model_type": "llama", "unused": )" << nested(150000) << "}";
  const std::string msg = error_of([&] { load_model_config(d / "config.json"); });
  EXPECT_CONTAINS(msg, "config.json");
  EXPECT_CONTAINS(msg, "nested more than");
}

TEST(HostileJson, DeepSafetensorsHeader) {
  scratch_dir d;
  const std::string p = d / "deep.safetensors";
  write_bytes(p, st_bytes(R"({"__metadata__": {"x": "y"}, "junk": )" + nested(120000) + "}", ""));
  const std::string msg = error_of([&] { safetensors_file::open(p); });
  EXPECT_CONTAINS(msg, p);
  EXPECT_CONTAINS(msg, "nested more than");
}

// The audit's case: the header is padded with spaces, so a length one byte short still parses, and every tensor
// then starts a byte early. The data section no longer ends where the last tensor does.
TEST(HostileSafetensors, HeaderLengthOffByOne) {
  scratch_dir d;
  const std::string data(8, '\x11');
  const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::string good = st_bytes(header, data);
  ASSERT_EQ(good[8 + (good.size() - 8 - data.size()) - 1], ' ') << "st_bytes pads the header with spaces";
  const std::string p = d / "off.safetensors";
  write_bytes(p, good);
  EXPECT_NO_THROW(safetensors_file::open(p));
  uint64_t n = 0;
  std::memcpy(&n, good.data(), 8);
  std::string shorter = test::le_u64(n - 1) + good.substr(8);
  write_bytes(p, shorter);
  const std::string msg = error_of([&] { safetensors_file::open(p); });
  EXPECT_CONTAINS(msg, p);
  EXPECT_CONTAINS(msg, "end at byte 8");
  EXPECT_CONTAINS(msg, "9 bytes");
  // Trailing bytes after the last tensor are refused the same way.
  write_bytes(p, good + "x");
  EXPECT_CONTAINS(error_of([&] { safetensors_file::open(p); }), "end at byte 8");
}

TEST(HostileSafetensors, GapBetweenTensors) {
  scratch_dir d;
  const std::string p = d / "gap.safetensors";
  write_bytes(p, st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                          R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})",
                          std::string(20, '\x22')));
  const std::string msg = error_of([&] { safetensors_file::open(p); });
  EXPECT_CONTAINS(msg, p);
  EXPECT_CONTAINS(msg, "4 bytes");
  EXPECT_CONTAINS(msg, "'b'");
}

}  // namespace
}  // namespace gsa

namespace gsa {
namespace {

// Sizes from a corrupt or hostile config.json are bounded before anything is allocated from them (1e6 layers used
// to allocate and zero every layer; heads x head_dim overflowed int; vocab_size 2^62 wrapped the parameter count).
TEST(HostileConfig, HugeSizesAreRefusedNamingTheField) {
  scratch_dir d;
  struct bad {
    const char* field;
    nlohmann::json value;
    const char* expect;
  };
  for (const bad& b : {bad{"num_hidden_layers", 1000000, "num_hidden_layers"},
                       bad{"vocab_size", int64_t(1) << 62, "vocab_size"},
                       bad{"head_dim", 65536, "head_dim"}, bad{"hidden_size", int64_t(1) << 40, "hidden_size"}}) {
    SCOPED_TRACE(b.field);
    nlohmann::json j = {{"model_type", "llama"},     {"vocab_size", 512},       {"hidden_size", 64},
                        {"intermediate_size", 96},   {"num_hidden_layers", 2},  {"num_attention_heads", 4},
                        {"num_key_value_heads", 2},  {"head_dim", 16},          {"max_position_embeddings", 256},
                        {"rms_norm_eps", 1e-5},      {"rope_theta", 10000.0}};
    EXPECT_NO_THROW(model_config_from_json(j, "ok.json"));
    j[b.field] = b.value;
    const std::string msg = error_of([&] { model_config_from_json(j, "cfg.json"); });
    EXPECT_CONTAINS(msg, "cfg.json");
    EXPECT_CONTAINS(msg, b.expect);
    EXPECT_CONTAINS(msg, "limit");
  }
  nlohmann::json j = {{"model_type", "llama"},    {"vocab_size", 512},      {"hidden_size", 64},
                      {"intermediate_size", 96},  {"num_hidden_layers", 2}, {"num_attention_heads", 4096},
                      {"num_key_value_heads", 1}, {"head_dim", 4096},       {"max_position_embeddings", 256}};
  EXPECT_CONTAINS(error_of([&] { model_config_from_json(j, "cfg.json"); }), "num_attention_heads x head_dim");
}

}  // namespace
}  // namespace gsa
