// The Llama-family model (Llama, Qwen2): weights, forward to loss/logits and full backward, llm.c style.
// Layouts (T = stream positions of one sequence, C = hidden, Hq/Hkv query/KV heads, D = head dim, I = MLP
// width, V = vocabulary), HF tensor names in comments:
//   embed   (V, C)        model.embed_tokens.weight
//   per layer:
//     attn_norm (C)       model.layers.i.input_layernorm.weight
//     wq (Hq*D, C), bq (Hq*D) [qwen2]   self_attn.q_proj.{weight,bias}
//     wk (Hkv*D, C), bk (Hkv*D)         self_attn.k_proj
//     wv (Hkv*D, C), bv (Hkv*D)         self_attn.v_proj
//     wo (C, Hq*D), bo (C) [llama attention_bias]  self_attn.o_proj
//     mlp_norm (C)        post_attention_layernorm.weight
//     w_gate, w_up (I, C), w_down (C, I)  mlp.{gate,up,down}_proj.weight
//   norm    (C)           model.norm.weight
//   lm_head (V, C)        lm_head.weight (absent when tied: the embedding is used, and its gradient is summed)
// A model lives on one backend (backend/backend.h): loaded and initialised models are CPU f32 (whatever the
// checkpoint's dtype); to_backend() makes its twin on a device, in the device's activation type, with every
// parameter a view into one buffer (matrices first, then vectors: the optimizer updates each half in one
// launch). The forward and backward below are written once against the op interface and run on either.
// Attention runs through a plan per layer (backend/attn-plan.h), so the same forward serves full causal
// attention and every GSA mode.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/attention.h"
#include "backend/cpu/ops.h"
#include "core/tensor.h"
#include "io/hf-config.h"

namespace gsa {

struct layer_weights {
  Tensor attn_norm, wq, bq, wk, bk, wv, bv, wo, bo, mlp_norm, w_gate, w_up, w_down;
};

struct llama_weights {
  Tensor embed, norm, lm_head;
  std::vector<layer_weights> layers;
  // Set when the tensors above are views into one buffer: flat (n) holds them in list order with the matrices
  // (ndim >= 2, weight decay) first, the first n_matrix values.
  Tensor flat;
  int64_t n_matrix = 0;
};

namespace infer {
struct step_scratch;  // infer/decode-step.cpp
}

class llama_model {
 public:
  model_config config;
  llama_weights w;
  std::vector<float> inv_freq;  // (D/2) RoPE frequencies after scaling
  Tensor inv_freq_dev;          // the same on the model's device (f32)
  backend* be = &cpu_backend();
  // The decode step's buffers and recorded layer segments, kept between steps where the backend records
  // (backend::replay; infer/decode-step.cpp). Shared by copies of the model; rebuilt when the weights move.
  mutable std::shared_ptr<infer::step_scratch> decode_scratch;

  backend& ops() const { return *be; }
  bool on_host() const { return be->where() == device::cpu; }
  // Zero-initialised weights of the right shapes for cfg.
  explicit llama_model(const model_config& cfg);
  llama_model() = default;

  // Every parameter with its HF name (the tied lm_head is not listed separately).
  std::vector<std::pair<std::string, Tensor*>> parameters();
  std::vector<std::pair<std::string, const Tensor*>> parameters() const;
  int64_t parameter_count() const;

  // Random init as HF does (normal(0, std) for matrices, ones for norms, zeros for biases).
  void init_random(uint64_t seed, float std = 0.02f);

  cpu::rope_scaling rope() const;
  const Tensor& lm_head() const { return config.tie_word_embeddings ? w.embed : w.lm_head; }
};

// Loads config.json + model.safetensors (or the sharded index) from dir. Every expected tensor must be present
// with the right shape (clear errors otherwise); bf16/f16 weights are converted to f32.
llama_model load_model(const std::string& dir);
// Writes config.json (preserving unknown keys of the loaded config) and model.safetensors (f32) into dir
// (created if needed), atomically per file.
void save_model(const llama_model& m, const std::string& dir);

// The model's twin on backend b: weights in b's activation type, packed into one buffer (see llama_weights).
// The source must be a host model.
llama_model to_backend(const llama_model& host, backend& b);
// Every parameter of a device model as host f32 tensors, into host (same config): e.g. to save it.
void copy_weights_to_host(const llama_model& dev, llama_model& host);

// A gradient buffer with the same tensors as the model (zeroed, f32, on the model's device; packed into one
// buffer like the model's weights when the model is packed).
llama_weights make_grads(const llama_model& m);
// The same tensors as the model's, zeroed, of type t, on the model's device (packed when the model is).
llama_weights make_like(const llama_model& m, dtype t);
// Tensors shaped like w's, zeroed, of type t on backend be; packed: views into one buffer, matrices first, in the
// one order every packed buffer of a model shares.
llama_weights weights_like(const llama_weights& w, backend& be, dtype t, bool packed);
void zero_grads(llama_weights& g, backend& b = cpu_backend());
std::vector<std::pair<std::string, Tensor*>> grad_list(const llama_model& m, llama_weights& g);

// The attention plan a layer uses. q (T, Hq, D) and k (T, Hkv, D) are that layer's rotated projections, for
// plan providers that select chunks from scores (the unfold modes); plain ones ignore them.
// What a provider sees of a layer: its rotated q (T, Hq, D) and k (T, Hkv, D) on the model's device, and host
// f32 copies made on first use only, so a provider that never reads them (the gist mask) moves nothing, and one
// that selects on the device (backend::select_chunks) reads them where they are.
class layer_qk {
 public:
  layer_qk(const Tensor& q_, const Tensor& k_) : q(q_), k(k_) {}
  const Tensor& q;
  const Tensor& k;
  const float* host_q() const;
  const float* host_k() const;

 private:
  mutable Tensor qh_, kh_;
};
using plan_provider = std::function<cpu::attn_plan(int layer, const layer_qk& qk)>;

// GSA_TRAIN_PROFILE=1 in the environment: forward() and backward() synchronise the device around each layer's plan
// (the provider, selection included, and prepare_plan), attention forward and attention backward, and add their
// wall times (ms) here; callers zero it. For benchmarks (`gsa bench train` prints it); off, nothing is timed.
struct attention_profile {
  double plan_ms = 0, fwd_ms = 0, bwd_ms = 0;
};
bool attention_profile_on();
attention_profile& train_attention_profile();

// Activations saved by the forward pass for the backward pass, named per layer so any can be dumped.
struct layer_acts {
  Tensor x_in;       // (T, C) residual stream entering the layer
  Tensor h_attn;     // (T, C) input_layernorm output
  Tensor rstd_attn;  // (T)
  Tensor q, k, v;    // (T, Hq, D), (T, Hkv, D), (T, Hkv, D); q and k after RoPE
  Tensor attn;       // (T, Hq*D) attention output before o_proj
  Tensor lse;        // (T, Hq)
  Tensor x_mid;      // (T, C) residual after attention
  Tensor h_mlp;      // (T, C) post_attention_layernorm output
  Tensor rstd_mlp;   // (T)
  Tensor gate, up;   // (T, I) projections
  Tensor act;        // (T, I) silu(gate) * up
  cpu::attn_plan plan;
  std::shared_ptr<const void> prepared;  // the plan as the backend's kernels read it
};

// Tensors live on the model's device. ids, pos and targets are kept on the host too.
struct forward_state {
  int T = 0;
  std::vector<int32_t> ids, pos, targets;  // targets[i]: token position i predicts, or -100
  Tensor ids_dev, pos_dev, targets_dev;    // (T) i32 on the model's device
  std::vector<layer_acts> layers;
  Tensor x_final;  // (T, C) residual stream after the last layer
  Tensor h_final;  // (T, C) after the final norm
  Tensor rstd_final, lse;  // (T), (T)
  double loss_sum = 0;
  int64_t n_valid = 0;
  // Routing distillation (backend/route-loss.h), one spec per distilled level, set by the caller
  // (train/sequence.h) and prepared on the model's backend: backward() adds each one's gradients in the layers it
  // names, weighted by its weight, and its per-layer mean KL into its kl (so mutable: backward() reads the state
  // const, and the KL is its one output here). Empty: off.
  mutable std::vector<route_spec> route;
  double loss() const { return n_valid ? loss_sum / double(n_valid) : 0.0; }
  std::vector<std::pair<std::string, Tensor>> named() const;  // "layers.3.q", "final.h", ... for dumps
};

// The keys and values of the rows before a chunk of one sequence (chunked prefill): per layer a (capacity, Hkv,
// D) tensor on the model's device, in its activation type, whose first `rows` rows are the earlier chunks'
// rotated keys / values in stream order.
struct kv_prefix {
  std::vector<Tensor> k, v;
  int rows = 0;
};

// Runs the model over one sequence: ids, RoPE positions and targets (already shifted: position i predicts
// targets[i]; -100 = ignore). With an empty targets vector the loss is skipped. plans == nullptr means full
// causal attention.
// With a prefix the rows are stream positions [prefix->rows, prefix->rows + T) of a longer sequence: each layer
// writes their keys / values after the prefix's rows and attends over [0, prefix->rows + T) (plans are for these
// T rows at q_offset prefix->rows, their keys at stream positions; the plan provider's layer_qk holds the T rows'
// q and the keys [0, prefix->rows + T)); prefix->rows then advances by T. Only for inference (backward needs the
// whole sequence's activations).
void forward(const llama_model& m, forward_state& st, const std::vector<int32_t>& ids,
             const std::vector<int32_t>& pos, const std::vector<int32_t>& targets, const plan_provider* plans,
             kv_prefix* prefix = nullptr);
// Gradients of the mean loss (times loss_scale) into g (accumulated, +=). Requires a forward with targets.
// after_layer (optional) is called with l once layer l's parameter gradients are final (l = L-1 .. 0; the final
// norm and an untied head are final by the first call), then with -1 after the embedding's: a data-parallel
// trainer starts reducing finished gradients there while the earlier layers' backward runs.
void backward(const llama_model& m, const forward_state& st, llama_weights& g, float loss_scale = 1.0f,
              const std::function<void(int layer)>* after_layer = nullptr);
// Logits (T, V) of the final hidden states of a finished forward (host f32).
Tensor logits(const llama_model& m, const forward_state& st);

}  // namespace gsa
