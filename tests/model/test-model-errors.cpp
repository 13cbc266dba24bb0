// Bad input reaching the model: each gets one gsa::error that names the file and the tensor or field.
#include <nlohmann/json.hpp>

#include <fstream>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "test-util.h"

namespace gsa {
namespace {

namespace fs = std::filesystem;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const error& e) {
    return e.what();
  }
  return "(no error)";
}

struct scratch {
  fs::path dir;
  scratch() {
    dir = fs::temp_directory_path() / ("gsa-model-errors-" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    fs::copy(test::source_dir() / "tests/data/golden/llama", dir, fs::copy_options::recursive);
  }
  ~scratch() { fs::remove_all(dir); }
};

TEST(ModelErrors, TruncatedCheckpointNamesTheFile) {
  scratch s;
  auto st = s.dir / "model.safetensors";
  fs::resize_file(st, fs::file_size(st) - 1000);
  std::string m = error_of([&] { load_model(s.dir.string()); });
  EXPECT_NE(m.find("model.safetensors"), std::string::npos) << m;
}

TEST(ModelErrors, MissingTensorIsNamed) {
  scratch s;
  auto st = s.dir / "model.safetensors";
  auto f = safetensors_file::open(st.string());
  std::vector<std::pair<std::string, Tensor>> keep;
  for (auto& n : f.names())
    if (n != "model.layers.1.mlp.up_proj.weight") keep.emplace_back(n, f.view(n).clone());
  write_safetensors(st.string(), keep, {{"format", "pt"}});
  std::string m = error_of([&] { load_model(s.dir.string()); });
  EXPECT_NE(m.find("model.layers.1.mlp.up_proj.weight"), std::string::npos) << m;
}

TEST(ModelErrors, MisShapedTensorIsNamed) {
  scratch s;
  auto cfg = nlohmann::json::parse(std::ifstream(s.dir / "config.json"));
  cfg["intermediate_size"] = 128;  // the checkpoint holds 96
  std::ofstream(s.dir / "config.json") << cfg.dump(2);
  std::string m = error_of([&] { load_model(s.dir.string()); });
  EXPECT_NE(m.find("mlp"), std::string::npos) << m;
  EXPECT_NE(m.find("[128, 64]"), std::string::npos) << m;
}

TEST(ModelErrors, UnknownArchitectureAndMissingFieldAreNamed) {
  scratch s;
  auto cfg = nlohmann::json::parse(std::ifstream(s.dir / "config.json"));
  cfg["model_type"] = "mistral";
  cfg["architectures"] = {"MistralForCausalLM"};
  std::ofstream(s.dir / "config.json") << cfg.dump(2);
  std::string m = error_of([&] { load_model(s.dir.string()); });
  EXPECT_NE(m.find("mistral"), std::string::npos) << m;
  EXPECT_NE(m.find("config.json"), std::string::npos) << m;
  cfg = nlohmann::json::parse(std::ifstream(test::source_dir() / "tests/data/golden/llama/config.json"));
  cfg.erase("hidden_size");
  std::ofstream(s.dir / "config.json") << cfg.dump(2);
  m = error_of([&] { load_model(s.dir.string()); });
  EXPECT_NE(m.find("hidden_size"), std::string::npos) << m;
  EXPECT_NE(error_of([&] { load_model((s.dir / "nope").string()); }).find("does not exist"), std::string::npos);
}

TEST(ModelErrors, BadIdsAndOverlongInputsAreRejected) {
  llama_model m = load_model((test::source_dir() / "tests/data/golden/llama").string());
  forward_state st;
  std::string msg = error_of([&] { forward(m, st, {1, 600}, {0, 1}, {}, nullptr); });
  EXPECT_NE(msg.find("600"), std::string::npos) << msg;
  msg = error_of([&] { forward(m, st, {1, 2}, {0, 256}, {}, nullptr); });
  EXPECT_NE(msg.find("256 positions"), std::string::npos) << msg;
  msg = error_of([&] { forward(m, st, {}, {}, {}, nullptr); });
  EXPECT_NE(msg.find("empty"), std::string::npos) << msg;
}

}  // namespace
}  // namespace gsa
