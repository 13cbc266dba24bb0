// --device / --precision of the inference commands (generate, perplexity, bench decode): the loaded host model,
// or its twin on the GPU (weights in the precision's type; sessions then keep their K/V pages in GPU memory).
#pragma once
#include <cstdint>
#include <string>

#include "model/llama.h"

namespace CLI {
class App;
}

namespace gsa::tools {

struct device_options {
  std::string device = "cpu";
  std::string precision = "bf16";  // cuda only; the CPU computes in f32
};

void add_device_options(CLI::App* sub, device_options& o);
// --gpu-kv-budget SIZE (8GiB, 512MiB, ...; CLI11's size parser, powers of 1024) into bytes: the KV cache's GPU
// memory per session (session_options::gpu_kv_budget; 0 = no cap).
void add_gpu_kv_budget_option(CLI::App* sub, int64_t& bytes);
// host itself on the CPU, else to_backend(host, the device's backend). Throws gsa::error (what to change) for an
// unknown device or precision, a build without CUDA or a machine without a GPU.
llama_model model_on_device(llama_model host, const device_options& o);

}  // namespace gsa::tools
