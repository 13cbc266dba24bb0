// Hostile checkpoints (issue 12, fuzz/fuzz-trainer-state.cpp): trainer.json is checked before a resume reads it
// (std::stoull took "-1" as 2^64 - 1 and "12abc" as 12; a missing field escaped as nlohmann's raw message), the
// config is checked against the weights' shapes before the model allocates anything, and weights holding NaN or
// Inf are refused at load by name.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "model/presets.h"
#include "train-test-util.h"
#include "train/checkpoint.h"
#include "train/model-init.h"

namespace gsa {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const gsa::error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a gsa::error: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected a gsa::error";
  return "";
}
#define EXPECT_CONTAINS(msg, sub) EXPECT_NE(std::string(msg).find(sub), std::string::npos) << "message: " << (msg)

json good_state() {
  return json{{"step", 4},
              {"tokens", 128},
              {"added_gist_ids", {20}},
              {"mixer", {{"s0", "18446744073709551615"}, {"s1", "7"}, {"text", {{"s0", "1"}, {"s1", "2"}, {"drawn", 3}}}}},
              {"options", json::object()}};
}

TEST(TrainerState, CheckedFieldByField) {
  EXPECT_NO_THROW(check_trainer_state(good_state(), "t.json"));
  auto bad = [](const std::function<void(json&)>& edit) {
    json j = good_state();
    edit(j);
    return error_of([&] { check_trainer_state(j, "run/checkpoint-4/trainer.json"); });
  };
  std::string m = bad([](json& j) { j["mixer"]["s0"] = "-1"; });  // stoull made it 2^64 - 1
  EXPECT_CONTAINS(m, "run/checkpoint-4/trainer.json");
  EXPECT_CONTAINS(m, "mixer.s0");
  EXPECT_CONTAINS(bad([](json& j) { j["mixer"]["s1"] = "12abc"; }), "mixer.s1");
  EXPECT_CONTAINS(bad([](json& j) { j["mixer"]["s1"] = "18446744073709551616"; }), "mixer.s1");  // 2^64
  EXPECT_CONTAINS(bad([](json& j) { j["mixer"]["s1"] = 7; }), "mixer.s1");
  EXPECT_CONTAINS(bad([](json& j) { j["mixer"]["text"]["drawn"] = -1; }), "mixer.text.drawn");
  EXPECT_CONTAINS(bad([](json& j) { j["mixer"]["text"].erase("s0"); }), "mixer.text.s0");
  EXPECT_CONTAINS(bad([](json& j) { j.erase("mixer"); }), "missing field 'mixer'");
  EXPECT_CONTAINS(bad([](json& j) { j.erase("step"); }), "missing field 'step'");
  EXPECT_CONTAINS(bad([](json& j) { j["step"] = 2.5; }), "field 'step'");
  EXPECT_CONTAINS(bad([](json& j) { j["step"] = uint64_t(1) << 63; }), "field 'step'");
  EXPECT_CONTAINS(bad([](json& j) { j["tokens"] = "many"; }), "field 'tokens'");
  EXPECT_CONTAINS(bad([](json& j) { j["added_gist_ids"] = {uint64_t(1) << 32}; }), "added_gist_ids");
  EXPECT_CONTAINS(bad([](json& j) { j = json::array(); }), "not a JSON object");
  EXPECT_EQ(parse_u64_decimal("0", "x"), 0u);
  EXPECT_EQ(parse_u64_decimal("18446744073709551615", "x"), UINT64_MAX);
  for (const char* s : {"", " 1", "+1", "1 ", "0x10"}) EXPECT_CONTAINS(error_of([&] { parse_u64_decimal(s, "w"); }), "w:");
}

struct saved_model {
  fs::path dir = test::train_temp_dir("hostile-model");
  llama_model m{run_model_config("tiny", 20, nullptr)};
  saved_model() {
    m.init_random(3);
    save_model(m, dir.string());
  }
  ~saved_model() { fs::remove_all(dir); }
  void edit_config(const std::function<void(json&)>& f) const {
    const std::string p = (dir / "config.json").string();
    json c = json::parse(std::ifstream(p));
    f(c);
    std::ofstream(p) << c.dump(2);
  }
};

// The audit's case: num_hidden_layers 1e6 allocated and zeroed every layer before the weights were looked at. Now
// the weights are checked first; the bound (4096 layers) keeps what is left far from exhausting memory, and even
// a config at every bound fails on the first missing or mis-shaped tensor, before anything is allocated.
TEST(HostileModel, ConfigCheckedAgainstTheWeightsBeforeAllocating) {
  saved_model s;
  s.edit_config([](json& c) { c["num_hidden_layers"] = 4096; });
  std::string m = error_of([&] { load_model(s.dir.string()); });
  EXPECT_CONTAINS(m, "model.safetensors");
  EXPECT_CONTAINS(m, "missing tensor 'model.layers.");
  s.edit_config([](json& c) {
    c["intermediate_size"] = 1 << 20;  // 4096 layers x 3 x 2^20 x 2^17 floats: petabytes if allocated first
    c["hidden_size"] = 1 << 17;
    c["head_dim"] = 256;
    c["num_attention_heads"] = 512;
    c["num_key_value_heads"] = 512;
  });
  m = error_of([&] { load_model(s.dir.string()); });
  EXPECT_CONTAINS(m, "has shape");
  EXPECT_CONTAINS(m, "but the model expects");
}

TEST(HostileModel, NonFiniteWeightsAreRefusedAtLoadByName) {
  saved_model s;
  ASSERT_NO_THROW(load_model(s.dir.string()));
  const std::string p = (s.dir / "model.safetensors").string();
  const std::string name = "model.layers.1.mlp.up_proj.weight";
  uint64_t header = 0, offset = safetensors_file::open(p).info(name).offset;
  {
    std::ifstream in(p, std::ios::binary);
    in.read(reinterpret_cast<char*>(&header), 8);
  }
  std::fstream f(p, std::ios::binary | std::ios::in | std::ios::out);
  f.seekp(std::streamoff(8 + header + offset + 4 * 37));
  const float nan = NAN;
  f.write(reinterpret_cast<const char*>(&nan), 4);
  f.close();
  const std::string m = error_of([&] { load_model(s.dir.string()); });
  EXPECT_CONTAINS(m, name);
  EXPECT_CONTAINS(m, "element 37");
  EXPECT_CONTAINS(m, "nan");
}

TEST(HostileModel, DamagedTrainerStateFailsAtLoadCheckpoint) {
  auto dir = test::train_temp_dir("hostile-state");
  llama_model m(run_model_config("tiny", 20, nullptr));
  m.init_random(1);
  adamw_optimizer opt(m);
  json st = good_state();
  const std::string ck = save_checkpoint(dir.string(), 4, m, opt, st, 2);
  llama_model back;
  std::unique_ptr<adamw_optimizer> back_opt;
  EXPECT_EQ(load_checkpoint(ck, back, back_opt)["step"], 4);
  st["mixer"]["s0"] = "-1";
  std::ofstream(fs::path(ck) / "trainer.json") << st.dump();
  const std::string e = error_of([&] { load_checkpoint(ck, back, back_opt); });
  EXPECT_CONTAINS(e, "trainer.json");
  EXPECT_CONTAINS(e, "mixer.s0");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace gsa
