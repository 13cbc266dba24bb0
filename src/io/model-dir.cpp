#include "io/model-dir.h"

#include <filesystem>

#include "core/error.h"

namespace gsa {

void check_weights(const safetensors_set& w, const model_config& cfg) {
  for (auto& [name, shape] : expected_tensors(cfg)) {
    if (!w.has(name))
      fail("{}: missing tensor '{}', which a {} model with this config.json needs", w.path(), name, cfg.architecture);
    const st_tensor_info& ti = w.info(name);
    const std::string& file = w.file_of(name).path();
    if (ti.shape != shape)
      fail("{}: tensor '{}' has shape {} but the model expects {}", file, name, shape_str(ti.shape), shape_str(shape));
    if (ti.type != dtype::f32 && ti.type != dtype::bf16 && ti.type != dtype::f16)
      fail("{}: tensor '{}' has dtype {}, but weights must be F32, BF16 or F16", file, name,
           dtype_safetensors_name(ti.type));
  }
}

void check_finite_weights(const safetensors_set& w, const model_config& cfg) {
  for (auto& [name, shape] : expected_tensors(cfg)) {
    const safetensors_file& f = w.file_of(name);
    const int64_t i = f.first_non_finite(name);
    if (i < 0) continue;
    const std::string where =
        shape.size() == 2 ? fmt::format("[{}, {}]", i / shape[1], i % shape[1]) : fmt::format("[{}]", i);
    fail("{}: tensor '{}' holds a non-finite value (NaN or Inf) at element {}: the checkpoint is corrupt or its "
         "training diverged; use an earlier checkpoint", f.path(), name, where);
  }
}

model_dir open_model_dir(const std::string& dir) {
  if (!std::filesystem::is_directory(dir)) fail("{}: not a model directory (expected config.json and weights)", dir);
  model_dir m;
  m.path = dir;
  m.config = load_model_config((std::filesystem::path(dir) / "config.json").string());
  m.weights = safetensors_set::open(dir);
  check_weights(m.weights, m.config);
  return m;
}

void save_model_dir(const std::string& dir, const model_config& cfg,
                    const std::vector<std::pair<std::string, Tensor>>& tensors, const char* torch_dtype,
                    const std::map<std::string, std::string>& metadata) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("{}: cannot create the directory: {}", dir, ec.message());
  auto md = metadata;
  md.emplace("format", "pt");
  // Weights first: a config.json naming a shape the weights do not have is worse than a stale config.
  write_safetensors((fs::path(dir) / "model.safetensors").string(), tensors, md);
  save_model_config((fs::path(dir) / "config.json").string(), cfg, torch_dtype);
}

}  // namespace gsa
