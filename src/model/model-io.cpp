// Model directories in Hugging Face format: config.json + model.safetensors (or shards + index).
#include <filesystem>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/llama.h"

namespace gsa {

llama_model load_model(const std::string& dir) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir))
    fail("model directory '{}' does not exist (expected a Hugging Face model folder with config.json and "
         "model.safetensors)", dir);
  model_config cfg = load_model_config((fs::path(dir) / "config.json").string());
  llama_model m(cfg);
  safetensors_set st = safetensors_set::open(dir);
  for (auto& [name, t] : m.parameters()) {
    if (!st.has(name))
      fail("{}: tensor '{}' is missing (a {} checkpoint with this config.json must hold it)", st.path(), name,
           cfg.architecture);
    *t = st.load_f32(name, t->shape());
  }
  return m;
}

void save_model(const llama_model& m, const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("cannot create the model directory '{}': {}", dir, ec.message());
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (auto& [name, t] : m.parameters()) tensors.emplace_back(name, *t);
  write_safetensors((fs::path(dir) / "model.safetensors").string(), tensors, {{"format", "pt"}});
  save_model_config((fs::path(dir) / "config.json").string(), m.config);
}

}  // namespace gsa
