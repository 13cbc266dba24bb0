// Llama-family model configuration read from / written to a Hugging Face config.json (LlamaConfig,
// Qwen2Config), and the Hugging Face tensor names and shapes that configuration implies.
//
// Both transformers forms are read: 4.x (top-level "rope_theta", "rope_scaling" with "rope_type" or "type")
// and 5.x ("rope_parameters" holding rope_theta and the scaling). model_config_to_json writes both forms so
// either version loads the file, and keeps every key of the original file it does not own (so a round trip
// preserves tokenizer ids, quantisation notes, ...). The "gsa" object is carried raw; gist/config parses it.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace gsa {

struct rope_scaling_config {
  enum class kind : uint8_t { none, llama3 };
  kind type = kind::none;
  // llama3 (Llama 3.1+): wavelengths longer than original_max / low_freq_factor are divided by factor, shorter
  // than original_max / high_freq_factor kept, smooth in between.
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct model_config {
  std::string architecture;  // "llama" | "qwen2"
  int64_t vocab_size = 0;             // V
  int64_t hidden_size = 0;            // C
  int64_t intermediate_size = 0;      // I
  int64_t num_hidden_layers = 0;      // L
  int64_t num_attention_heads = 0;    // Hq
  int64_t num_key_value_heads = 0;    // Hkv (GQA; default Hq)
  int64_t head_dim = 0;               // D (default C / Hq)
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  rope_scaling_config rope_scaling;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // q/k/v projections have biases (Qwen2 always; Llama when attention_bias)
  bool o_bias = false;    // o_proj has a bias (Llama attention_bias only)
  std::vector<int64_t> bos_token_id;  // empty when absent; HF allows an int or a list
  std::vector<int64_t> eos_token_id;
  std::string torch_dtype;            // as written in the file ("dtype" in 5.x, "torch_dtype" in 4.x); may be empty
  nlohmann::json gsa;                 // the raw "gsa" object, or null
  nlohmann::json raw;                 // the whole original file (an object), for round trips

  int64_t q_dim() const { return num_attention_heads * head_dim; }   // Hq * D
  int64_t kv_dim() const { return num_key_value_heads * head_dim; }  // Hkv * D
};

// Parses a config.json object; `source` names it in error messages ("<source>: missing field 'hidden_size'").
model_config model_config_from_json(const nlohmann::json& j, const std::string& source);
// Reads and parses a config.json file (or a model directory holding one).
model_config load_model_config(const std::string& path);
// A config transformers 4.x and 5.x both load: model_type, architectures, every field, rope_theta plus
// rope_scaling (4.x) and rope_parameters (5.x), torch_dtype/dtype = `torch_dtype`, and cfg.gsa when not null.
nlohmann::json model_config_to_json(const model_config& cfg, const char* torch_dtype = "float32");
// Writes model_config_to_json to `path` atomically, indented like transformers does.
void save_model_config(const std::string& path, const model_config& cfg, const char* torch_dtype = "float32");
// Throws gsa::error naming `source` and the field for values the engine cannot run (non-positive sizes,
// heads not dividing, ...). model_config_from_json calls it; call it again after editing a config by hand.
void validate_model_config(const model_config& cfg, const std::string& source);

// "model.layers.{layer}.{suffix}"
std::string hf_layer_tensor(int64_t layer, const char* suffix);
// Every tensor a checkpoint of this config holds, in the order transformers lists them, with shapes:
// model.embed_tokens.weight (V, C); per layer: input_layernorm.weight (C), self_attn.q_proj.weight (Hq*D, C),
// k_proj/v_proj.weight (Hkv*D, C), o_proj.weight (C, Hq*D), biases when present, post_attention_layernorm.weight
// (C), mlp.gate_proj/up_proj.weight (I, C), mlp.down_proj.weight (C, I); model.norm.weight (C);
// lm_head.weight (V, C) unless tied.
std::vector<std::pair<std::string, shape_t>> expected_tensors(const model_config& cfg);
int64_t parameter_count(const model_config& cfg);

}  // namespace gsa
