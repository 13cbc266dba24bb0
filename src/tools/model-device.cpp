// --device / --precision for the inference commands; contract in model-device.h.
#include "tools/model-device.h"

#include <CLI/CLI.hpp>

#include "backend/backend.h"

namespace gsa::tools {

void add_device_options(CLI::App* sub, device_options& o) {
  sub->add_option("--device", o.device, "cpu, or cuda: the model and its KV pages on the GPU (docs/decode.md)")
      ->capture_default_str();
  sub->add_option("--precision", o.precision, "with --device cuda: bf16 or f32")->capture_default_str();
}

void add_gpu_kv_budget_option(CLI::App* sub, int64_t& bytes) {
  sub->add_option("--gpu-kv-budget", bytes,
                  "With --device cuda: GPU memory for each session's KV cache, e.g. 8GiB: gists, window and sink "
                  "stay on the GPU, the other raw pages live in pinned host memory read in place (default: all on "
                  "the GPU)")
      ->transform(CLI::AsSizeValue(false));
}

llama_model model_on_device(llama_model host, const device_options& o) {
  const device d = parse_device(o.device);
  if (d == device::cpu) return host;
  return to_backend(host, get_backend(d, parse_precision(o.precision)));
}

}  // namespace gsa::tools
