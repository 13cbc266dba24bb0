#include "model/presets.h"

#include "core/error.h"

namespace gsa {

namespace {

struct preset {
  const char* name;
  int64_t V, C, I, L, Hq, Hkv, D, max_pos;
  const char* what;
  bool qwen2 = false;  // Qwen2 layout: q/k/v biases, untied head, rope theta 1e6
};

// "small" is the decode/throughput benchmark model (~40M parameters with its 32k vocabulary).
const preset presets[] = {
    {"tiny", 512, 64, 192, 2, 4, 2, 16, 8192, "tests and smoke runs (~0.1M parameters)"},
    {"mini", 4096, 128, 384, 4, 4, 2, 32, 16384, "CPU training experiments (~1.8M parameters)"},
    {"demo", 4096, 192, 512, 4, 6, 2, 32, 16384, "the shipped demo model (~3.3M parameters)"},
    {"small", 32000, 512, 1536, 8, 8, 2, 64, 131072, "speed measurement (~60M parameters)"},
    {"gpu20m", 8192, 384, 1024, 8, 6, 2, 64, 131072, "first GPU training runs (~20M parameters, head dim 64)"},
    {"llama125m", 32000, 768, 2048, 12, 12, 4, 64, 131072,
     "GPU training benchmark: the ~125M Llama shape of docs/cuda.md (12 x 768, 12/4 heads, MLP 2048)"},
    {"llama1b", 32000, 2048, 8192, 16, 32, 8, 64, 131072,
     "the ~1B Llama shape of the multi-GPU scaling figures (16 x 2048, 32/8 heads, MLP 8192; Llama 3.2 1B's body)"},
    {"qwen2-7b", 152064, 3584, 18944, 28, 28, 4, 128, 131072,
     "the Qwen2-7B shape (28 x 3584, 28/4 heads, MLP 18944, q/k/v biases, untied head), random init: the "
     "two-GPU ZeRO-1 figure of docs/cuda.md", true},
};

}  // namespace

model_config model_preset(const std::string& name, int64_t vocab_size) {
  for (const auto& p : presets) {
    if (name != p.name) continue;
    model_config c;
    c.architecture = "llama";
    c.vocab_size = vocab_size > 0 ? vocab_size : p.V;
    c.hidden_size = p.C;
    c.intermediate_size = p.I;
    c.num_hidden_layers = p.L;
    c.num_attention_heads = p.Hq;
    c.num_key_value_heads = p.Hkv;
    c.head_dim = p.D;
    c.max_position_embeddings = p.max_pos;
    c.rms_norm_eps = 1e-5;
    c.rope_theta = 10000.0;
    c.tie_word_embeddings = !p.qwen2;
    if (p.qwen2) {
      c.architecture = "qwen2";
      c.qkv_bias = true;
      c.rope_theta = 1e6;
      c.rms_norm_eps = 1e-6;
    }
    c.bos_token_id = {};
    c.eos_token_id = {};
    validate_model_config(c, std::string("preset ") + name);
    return c;
  }
  std::string names;
  for (const auto& p : presets) names += std::string(names.empty() ? "" : ", ") + p.name;
  fail("unknown model preset '{}'; known presets: {}", name, names);
}

std::vector<std::string> model_preset_names() {
  std::vector<std::string> out;
  for (const auto& p : presets) out.push_back(p.name);
  return out;
}

}  // namespace gsa
