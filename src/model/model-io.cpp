// Model directories in Hugging Face format: config.json + model.safetensors (or shards + index).
#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "io/model-dir.h"
#include "io/safetensors.h"
#include "model/llama.h"

namespace gsa {

llama_model load_model(const std::string& dir) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir))
    fail("model directory '{}' does not exist (expected a Hugging Face model folder with config.json and "
         "model.safetensors)", dir);
  model_config cfg = load_model_config((fs::path(dir) / "config.json").string());
  // The config is checked against the weights' shapes before the model allocates anything from it: a config.json
  // claiming 4096 layers of a 4k-row model fails here, naming the tensor, instead of allocating terabytes.
  safetensors_set st = safetensors_set::open(dir);
  check_weights(st, cfg);
  llama_model m(cfg);
  for (auto& [name, t] : m.parameters()) {
    if (!st.has(name))
      fail("{}: tensor '{}' is missing (a {} checkpoint with this config.json must hold it)", st.path(), name,
           cfg.architecture);
    *t = st.load_f32(name, t->shape());
    const float* p = t->f32();
    for (int64_t i = 0; i < t->numel(); i++)
      if (!std::isfinite(p[i]))
        fail("{}: tensor '{}' holds {} at element {}: the checkpoint is corrupt or its training diverged; use an "
             "earlier checkpoint (gsa info --check names every such tensor's first bad element)",
             st.file_of(name).path(), name, p[i], i);
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
