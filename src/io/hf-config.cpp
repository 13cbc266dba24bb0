#include "io/hf-config.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/json-util.h"
#include "io/atomic-file.h"

namespace gsa {

namespace {

using json = nlohmann::json;

// A present, non-null field, or nullptr.
const json* field(const json& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

bool integral(const json& v, int64_t* out) {
  if (v.is_number_integer()) {
    *out = v.get<int64_t>();
    return true;
  }
  // Some exporters write 4096.0; accept numbers that are whole.
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (std::trunc(d) == d && std::fabs(d) < 9.0e15) {
      *out = int64_t(d);
      return true;
    }
  }
  return false;
}

int64_t get_int(const json& j, const char* key, const std::string& src, const std::string& prefix = "") {
  const json* v = field(j, key);
  if (!v) fail("{}: missing field '{}{}'", src, prefix, key);
  int64_t x;
  if (!integral(*v, &x)) fail("{}: field '{}{}' must be an integer, got {}", src, prefix, key, v->dump());
  return x;
}

int64_t get_int_or(const json& j, const char* key, int64_t dflt, const std::string& src) {
  return field(j, key) ? get_int(j, key, src) : dflt;
}

double get_num(const json& j, const char* key, const std::string& src, const std::string& prefix = "") {
  const json* v = field(j, key);
  if (!v) fail("{}: missing field '{}{}'", src, prefix, key);
  if (!v->is_number()) fail("{}: field '{}{}' must be a number, got {}", src, prefix, key, v->dump());
  return v->get<double>();
}

double get_num_or(const json& j, const char* key, double dflt, const std::string& src) {
  return field(j, key) ? get_num(j, key, src) : dflt;
}

bool get_bool_or(const json& j, const char* key, bool dflt, const std::string& src) {
  const json* v = field(j, key);
  if (!v) return dflt;
  if (!v->is_boolean()) fail("{}: field '{}' must be true or false, got {}", src, key, v->dump());
  return v->get<bool>();
}

std::vector<int64_t> get_token_ids(const json& j, const char* key, const std::string& src) {
  const json* v = field(j, key);
  std::vector<int64_t> out;
  if (!v) return out;
  int64_t x;
  if (integral(*v, &x)) return {x};
  if (v->is_array()) {
    for (auto& e : *v) {
      if (!integral(e, &x)) fail("{}: field '{}' must be a token id or a list of token ids, got {}", src, key, v->dump());
      out.push_back(x);
    }
    return out;
  }
  fail("{}: field '{}' must be a token id or a list of token ids, got {}", src, key, v->dump());
}

std::string architecture_of(const json& j, const std::string& src) {
  std::string name;
  if (const json* mt = field(j, "model_type")) {
    if (!mt->is_string()) fail("{}: field 'model_type' must be a string, got {}", src, mt->dump());
    name = mt->get<std::string>();
  } else if (const json* a = field(j, "architectures"); a && a->is_array() && !a->empty() && (*a)[0].is_string()) {
    name = (*a)[0].get<std::string>();
  } else {
    fail("{}: missing field 'model_type' (or 'architectures'): cannot tell which model this is", src);
  }
  if (name == "llama" || name == "LlamaForCausalLM") return "llama";
  if (name == "qwen2" || name == "Qwen2ForCausalLM") return "qwen2";
  fail("{}: unknown architecture '{}': gsa supports llama and qwen2", src, name);
}

// Reads a rope scaling object (4.x rope_scaling or 5.x rope_parameters) named `key` in messages.
rope_scaling_config parse_rope_scaling(const json& r, const std::string& key, int64_t max_pos, const std::string& src) {
  if (!r.is_object()) fail("{}: field '{}' must be an object, got {}", src, key, r.dump());
  std::string type = "default";
  const json* t = field(r, "rope_type");
  if (!t) t = field(r, "type");
  if (t) {
    if (!t->is_string()) fail("{}: field '{}.rope_type' must be a string, got {}", src, key, t->dump());
    type = t->get<std::string>();
  }
  rope_scaling_config rs;
  if (type == "default") return rs;
  if (type != "llama3")
    fail("{}: rope type '{}' in field '{}' is not supported: gsa supports 'default' (plain RoPE) and 'llama3'", src,
         type, key);
  std::string prefix = key + ".";
  rs.type = rope_scaling_config::kind::llama3;
  rs.factor = get_num(r, "factor", src, prefix);
  rs.low_freq_factor = get_num(r, "low_freq_factor", src, prefix);
  rs.high_freq_factor = get_num(r, "high_freq_factor", src, prefix);
  // transformers 5 fills a missing pretraining length from max_position_embeddings; do the same.
  rs.original_max_position_embeddings =
      field(r, "original_max_position_embeddings") ? get_int(r, "original_max_position_embeddings", src, prefix) : max_pos;
  if (!(rs.factor >= 1.0)) fail("{}: field '{}factor' must be >= 1, got {}", src, prefix, rs.factor);
  if (!(rs.low_freq_factor > 0 && rs.high_freq_factor > rs.low_freq_factor))
    fail("{}: fields '{}low_freq_factor' ({}) and '{}high_freq_factor' ({}) must satisfy 0 < low < high", src, prefix,
         rs.low_freq_factor, prefix, rs.high_freq_factor);
  if (rs.original_max_position_embeddings <= 0)
    fail("{}: field '{}original_max_position_embeddings' must be positive", src, prefix);
  return rs;
}

}  // namespace

model_config model_config_from_json(const json& j, const std::string& src) {
  if (!j.is_object()) fail("{}: not a JSON object", src);
  model_config c;
  c.raw = j;
  c.architecture = architecture_of(j, src);
  bool qwen = c.architecture == "qwen2";

  c.vocab_size = get_int(j, "vocab_size", src);
  c.hidden_size = get_int(j, "hidden_size", src);
  c.intermediate_size = get_int(j, "intermediate_size", src);
  c.num_hidden_layers = get_int(j, "num_hidden_layers", src);
  c.num_attention_heads = get_int(j, "num_attention_heads", src);
  c.num_key_value_heads = get_int_or(j, "num_key_value_heads", c.num_attention_heads, src);
  if (field(j, "head_dim")) {
    c.head_dim = get_int(j, "head_dim", src);
  } else {
    if (c.num_attention_heads <= 0 || c.hidden_size % c.num_attention_heads != 0)
      fail("{}: field 'hidden_size' ({}) is not divisible by 'num_attention_heads' ({}) and 'head_dim' is not given",
           src, c.hidden_size, c.num_attention_heads);
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  // The transformers defaults for each class.
  c.max_position_embeddings = get_int_or(j, "max_position_embeddings", qwen ? 32768 : 2048, src);
  c.rms_norm_eps = get_num_or(j, "rms_norm_eps", 1e-6, src);
  c.tie_word_embeddings = get_bool_or(j, "tie_word_embeddings", false, src);

  if (const json* act = field(j, "hidden_act"); act && !(act->is_string() && act->get<std::string>() == "silu"))
    fail("{}: field 'hidden_act' is {}, but gsa's MLP is SwiGLU and supports only \"silu\"", src, act->dump());
  if (qwen) {
    c.qkv_bias = true;  // Qwen2 always has q/k/v biases and no o_proj bias
    c.o_bias = false;
    if (get_bool_or(j, "use_sliding_window", false, src))
      fail("{}: field 'use_sliding_window' is true: gsa does not implement Qwen2 sliding-window attention; set it "
           "to false", src);
  } else {
    c.qkv_bias = c.o_bias = get_bool_or(j, "attention_bias", false, src);
  }
  if (get_bool_or(j, "mlp_bias", false, src))
    fail("{}: field 'mlp_bias' is true: gsa's MLP has no biases; only mlp_bias = false is supported", src);

  // RoPE. 4.x: top-level rope_theta + rope_scaling; 5.x: rope_parameters {rope_type, rope_theta, ...}.
  const json* rope_params = field(j, "rope_parameters");
  if (rope_params && !rope_params->is_object())
    fail("{}: field 'rope_parameters' must be an object, got {}", src, rope_params->dump());
  const json* top_theta = field(j, "rope_theta");
  const json* inner_theta = rope_params ? field(*rope_params, "rope_theta") : nullptr;
  if (top_theta && inner_theta) {
    double a = get_num(j, "rope_theta", src), b = get_num(*rope_params, "rope_theta", src, "rope_parameters.");
    if (std::fabs(a - b) > 1e-9 * std::fabs(b))
      fail("{}: fields 'rope_theta' ({}) and 'rope_parameters.rope_theta' ({}) disagree; make them equal", src, a, b);
  }
  if (inner_theta) c.rope_theta = get_num(*rope_params, "rope_theta", src, "rope_parameters.");
  else if (top_theta) c.rope_theta = get_num(j, "rope_theta", src);
  // Both transformers versions let a non-null rope_scaling win over rope_parameters.
  if (const json* rs = field(j, "rope_scaling"))
    c.rope_scaling = parse_rope_scaling(*rs, "rope_scaling", c.max_position_embeddings, src);
  else if (rope_params)
    c.rope_scaling = parse_rope_scaling(*rope_params, "rope_parameters", c.max_position_embeddings, src);

  c.bos_token_id = get_token_ids(j, "bos_token_id", src);
  c.eos_token_id = get_token_ids(j, "eos_token_id", src);
  const json* dt = field(j, "dtype");
  if (!dt || !dt->is_string()) dt = field(j, "torch_dtype");
  if (dt && dt->is_string()) c.torch_dtype = dt->get<std::string>();
  if (const json* g = field(j, "gsa")) c.gsa = *g;

  validate_model_config(c, src);
  return c;
}

void validate_model_config(const model_config& c, const std::string& src) {
  auto positive = [&](int64_t v, const char* name) {
    if (v <= 0) fail("{}: field '{}' must be positive, got {}", src, name, v);
  };
  positive(c.vocab_size, "vocab_size");
  positive(c.hidden_size, "hidden_size");
  positive(c.intermediate_size, "intermediate_size");
  positive(c.num_hidden_layers, "num_hidden_layers");
  positive(c.num_attention_heads, "num_attention_heads");
  positive(c.num_key_value_heads, "num_key_value_heads");
  positive(c.head_dim, "head_dim");
  positive(c.max_position_embeddings, "max_position_embeddings");
  // Upper bounds, checked before anything is allocated from these numbers: far above any real model (Llama 3.1
  // 405B: 126 layers, 16384 wide, 128k vocabulary), low enough that every size below is exact in 64-bit
  // arithmetic and every per-tensor dimension fits an int.
  auto at_most = [&](int64_t v, int64_t limit, const char* name) {
    if (v > limit) fail("{}: field '{}' is {}, above the limit of {}: the file is corrupt or not a model gsa runs", src,
                        name, v, limit);
  };
  at_most(c.vocab_size, int64_t(1) << 24, "vocab_size");
  at_most(c.hidden_size, int64_t(1) << 17, "hidden_size");
  at_most(c.intermediate_size, int64_t(1) << 20, "intermediate_size");
  at_most(c.num_hidden_layers, 4096, "num_hidden_layers");
  at_most(c.num_attention_heads, 4096, "num_attention_heads");
  at_most(c.num_key_value_heads, 4096, "num_key_value_heads");
  at_most(c.head_dim, 4096, "head_dim");
  at_most(c.max_position_embeddings, int64_t(1) << 30, "max_position_embeddings");
  at_most(c.num_attention_heads * c.head_dim, int64_t(1) << 20, "num_attention_heads x head_dim");
  if (c.architecture != "llama" && c.architecture != "qwen2")
    fail("{}: unknown architecture '{}': gsa supports llama and qwen2", src, c.architecture);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    fail("{}: field 'num_attention_heads' ({}) must be a multiple of 'num_key_value_heads' ({})", src,
         c.num_attention_heads, c.num_key_value_heads);
  if (c.head_dim % 2 != 0) fail("{}: field 'head_dim' ({}) must be even for rotary embeddings", src, c.head_dim);
  if (!(c.rms_norm_eps > 0)) fail("{}: field 'rms_norm_eps' must be positive, got {}", src, c.rms_norm_eps);
  if (!(c.rope_theta > 0)) fail("{}: field 'rope_theta' must be positive, got {}", src, c.rope_theta);
  if (c.architecture == "qwen2" && !(c.qkv_bias && !c.o_bias))
    fail("{}: qwen2 has q/k/v biases and no o_proj bias; the configuration says otherwise", src);
  if (c.architecture == "llama" && c.qkv_bias != c.o_bias)
    fail("{}: llama's 'attention_bias' sets the q/k/v and o_proj biases together; they differ here", src);
}

model_config load_model_config(const std::string& path_in) {
  std::filesystem::path p = path_in;
  if (std::filesystem::is_directory(p)) p /= "config.json";
  std::string src = p.string();
  return model_config_from_json(read_json_file_bounded(src, "model configuration"), src);
}

json model_config_to_json(const model_config& c, const char* torch_dtype) {
  json j = c.raw.is_object() ? c.raw : json::object();
  bool qwen = c.architecture == "qwen2";
  j["model_type"] = c.architecture;
  j["architectures"] = {qwen ? "Qwen2ForCausalLM" : "LlamaForCausalLM"};
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["hidden_act"] = "silu";
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["mlp_bias"] = false;
  if (qwen) {
    j["use_sliding_window"] = false;
    j["sliding_window"] = nullptr;
    if (auto lt = j.find("layer_types"); lt != j.end() && (!lt->is_array() || int64_t(lt->size()) != c.num_hidden_layers))
      j.erase(lt);  // stale after a change of depth; transformers rebuilds it
  } else {
    j["attention_bias"] = c.qkv_bias;
  }

  // 4.x reads rope_theta + rope_scaling; 5.x prefers a non-null rope_scaling, then rope_parameters. Write all
  // three, consistently.
  j["rope_theta"] = c.rope_theta;
  json params = {{"rope_type", "default"}, {"rope_theta", c.rope_theta}};
  if (c.rope_scaling.type == rope_scaling_config::kind::llama3) {
    json s = {{"rope_type", "llama3"},
              {"factor", c.rope_scaling.factor},
              {"low_freq_factor", c.rope_scaling.low_freq_factor},
              {"high_freq_factor", c.rope_scaling.high_freq_factor},
              {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings}};
    j["rope_scaling"] = s;
    params.update(s);
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["rope_parameters"] = params;

  auto ids = [](const std::vector<int64_t>& v) -> json {
    if (v.empty()) return nullptr;
    if (v.size() == 1) return v[0];
    return v;
  };
  if (!c.bos_token_id.empty() || j.contains("bos_token_id")) j["bos_token_id"] = ids(c.bos_token_id);
  if (!c.eos_token_id.empty() || j.contains("eos_token_id")) j["eos_token_id"] = ids(c.eos_token_id);
  j["torch_dtype"] = torch_dtype;  // transformers 4.x
  j["dtype"] = torch_dtype;        // transformers >= 4.56 and 5.x
  if (!c.gsa.is_null()) j["gsa"] = c.gsa;
  else j.erase("gsa");
  return j;
}

void save_model_config(const std::string& path, const model_config& cfg, const char* torch_dtype) {
  write_file_atomic(path, model_config_to_json(cfg, torch_dtype).dump(2) + "\n");
}

std::string hf_layer_tensor(int64_t layer, const char* suffix) {
  return "model.layers." + std::to_string(layer) + "." + suffix;
}

std::vector<std::pair<std::string, shape_t>> expected_tensors(const model_config& c) {
  const int64_t V = c.vocab_size, C = c.hidden_size, I = c.intermediate_size, Q = c.q_dim(), KV = c.kv_dim();
  std::vector<std::pair<std::string, shape_t>> out;
  out.push_back({"model.embed_tokens.weight", {V, C}});
  for (int64_t l = 0; l < c.num_hidden_layers; l++) {
    auto t = [&](const char* s, shape_t shape) { out.push_back({hf_layer_tensor(l, s), std::move(shape)}); };
    t("input_layernorm.weight", {C});
    t("self_attn.q_proj.weight", {Q, C});
    if (c.qkv_bias) t("self_attn.q_proj.bias", {Q});
    t("self_attn.k_proj.weight", {KV, C});
    if (c.qkv_bias) t("self_attn.k_proj.bias", {KV});
    t("self_attn.v_proj.weight", {KV, C});
    if (c.qkv_bias) t("self_attn.v_proj.bias", {KV});
    t("self_attn.o_proj.weight", {C, Q});
    if (c.o_bias) t("self_attn.o_proj.bias", {C});
    t("post_attention_layernorm.weight", {C});
    t("mlp.gate_proj.weight", {I, C});
    t("mlp.up_proj.weight", {I, C});
    t("mlp.down_proj.weight", {C, I});
  }
  out.push_back({"model.norm.weight", {C}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {V, C}});
  return out;
}

int64_t parameter_count(const model_config& c) {
  int64_t n = 0;
  for (auto& [name, shape] : expected_tensors(c)) n += shape_numel(shape);
  return n;
}

}  // namespace gsa
