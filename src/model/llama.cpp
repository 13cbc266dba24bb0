// Forward and backward of the Llama-family model over one sequence. Contract: see llama.h. Backward follows
// the ops' convention (gradients accumulate), so the caller zeroes g once per optimizer step and may call
// forward/backward for several sequences (gradient accumulation).
#include "model/llama.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/rng.h"

namespace gsa {

namespace {

struct dims {
  int C, I, Hq, Hkv, D, V, L;
  explicit dims(const model_config& c)
      : C(int(c.hidden_size)), I(int(c.intermediate_size)), Hq(int(c.num_attention_heads)),
        Hkv(int(c.num_key_value_heads)), D(int(c.head_dim)), V(int(c.vocab_size)), L(int(c.num_hidden_layers)) {}
};

const float* opt(const Tensor& t) { return t.empty() ? nullptr : t.f32(); }
float* opt(Tensor& t) { return t.empty() ? nullptr : t.f32(); }

void add_inplace(float* y, const float* x, int64_t n) {
#pragma omp parallel for simd if (n > 65536)
  for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

}  // namespace

llama_model::llama_model(const model_config& cfg) : config(cfg) {
  dims d(cfg);
  w.embed = Tensor({d.V, d.C});
  w.norm = Tensor({d.C});
  if (!cfg.tie_word_embeddings) w.lm_head = Tensor({d.V, d.C});
  bool bias = cfg.qkv_bias;
  for (int l = 0; l < d.L; l++) {
    layer_weights lw;
    lw.attn_norm = Tensor({d.C});
    lw.wq = Tensor({d.Hq * d.D, d.C});
    lw.wk = Tensor({d.Hkv * d.D, d.C});
    lw.wv = Tensor({d.Hkv * d.D, d.C});
    if (bias) {
      lw.bq = Tensor({d.Hq * d.D});
      lw.bk = Tensor({d.Hkv * d.D});
      lw.bv = Tensor({d.Hkv * d.D});
    }
    lw.wo = Tensor({d.C, d.Hq * d.D});
    if (cfg.o_bias) lw.bo = Tensor({d.C});
    lw.mlp_norm = Tensor({d.C});
    lw.w_gate = Tensor({d.I, d.C});
    lw.w_up = Tensor({d.I, d.C});
    lw.w_down = Tensor({d.C, d.I});
    w.layers.push_back(std::move(lw));
  }
  inv_freq = cpu::rope_inv_freq(d.D, float(cfg.rope_theta), rope());
}

cpu::rope_scaling llama_model::rope() const {
  cpu::rope_scaling s;
  const auto& r = config.rope_scaling;
  s.llama3 = r.type == rope_scaling_config::kind::llama3;
  s.factor = float(r.factor);
  s.low_freq_factor = float(r.low_freq_factor);
  s.high_freq_factor = float(r.high_freq_factor);
  s.original_max_position = int(r.original_max_position_embeddings);
  return s;
}

template <typename W, typename P>
static std::vector<std::pair<std::string, P>> list_weights(W& w, bool tied) {
  std::vector<std::pair<std::string, P>> out;
  out.emplace_back("model.embed_tokens.weight", &w.embed);
  for (size_t l = 0; l < w.layers.size(); l++) {
    auto& lw = w.layers[l];
    std::string p = "model.layers." + std::to_string(l) + ".";
    out.emplace_back(p + "input_layernorm.weight", &lw.attn_norm);
    out.emplace_back(p + "self_attn.q_proj.weight", &lw.wq);
    if (!lw.bq.empty()) out.emplace_back(p + "self_attn.q_proj.bias", &lw.bq);
    out.emplace_back(p + "self_attn.k_proj.weight", &lw.wk);
    if (!lw.bk.empty()) out.emplace_back(p + "self_attn.k_proj.bias", &lw.bk);
    out.emplace_back(p + "self_attn.v_proj.weight", &lw.wv);
    if (!lw.bv.empty()) out.emplace_back(p + "self_attn.v_proj.bias", &lw.bv);
    out.emplace_back(p + "self_attn.o_proj.weight", &lw.wo);
    if (!lw.bo.empty()) out.emplace_back(p + "self_attn.o_proj.bias", &lw.bo);
    out.emplace_back(p + "post_attention_layernorm.weight", &lw.mlp_norm);
    out.emplace_back(p + "mlp.gate_proj.weight", &lw.w_gate);
    out.emplace_back(p + "mlp.up_proj.weight", &lw.w_up);
    out.emplace_back(p + "mlp.down_proj.weight", &lw.w_down);
  }
  out.emplace_back("model.norm.weight", &w.norm);
  if (!tied) out.emplace_back("lm_head.weight", &w.lm_head);
  return out;
}

std::vector<std::pair<std::string, Tensor*>> llama_model::parameters() {
  return list_weights<llama_weights, Tensor*>(w, config.tie_word_embeddings);
}
std::vector<std::pair<std::string, const Tensor*>> llama_model::parameters() const {
  return list_weights<const llama_weights, const Tensor*>(w, config.tie_word_embeddings);
}

int64_t llama_model::parameter_count() const {
  int64_t n = 0;
  for (auto& [name, t] : parameters()) n += t->numel();
  return n;
}

void llama_model::init_random(uint64_t seed, float std) {
  rng r(seed);
  for (auto& [name, t] : parameters()) {
    float* p = t->f32();
    bool is_norm = name.find("norm") != std::string::npos;
    bool is_bias = name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    for (int64_t i = 0; i < t->numel(); i++) p[i] = is_norm ? 1.0f : is_bias ? 0.0f : r.normal() * std;
  }
}

llama_weights make_grads(const llama_model& m) {
  llama_weights g;
  g.embed = Tensor(m.w.embed.shape());
  g.norm = Tensor(m.w.norm.shape());
  if (!m.w.lm_head.empty()) g.lm_head = Tensor(m.w.lm_head.shape());
  for (auto& lw : m.w.layers) {
    layer_weights gl;
    auto mk = [](const Tensor& t) { return t.empty() ? Tensor() : Tensor(t.shape()); };
    gl.attn_norm = mk(lw.attn_norm);
    gl.wq = mk(lw.wq), gl.bq = mk(lw.bq), gl.wk = mk(lw.wk), gl.bk = mk(lw.bk), gl.wv = mk(lw.wv), gl.bv = mk(lw.bv);
    gl.wo = mk(lw.wo), gl.bo = mk(lw.bo), gl.mlp_norm = mk(lw.mlp_norm);
    gl.w_gate = mk(lw.w_gate), gl.w_up = mk(lw.w_up), gl.w_down = mk(lw.w_down);
    g.layers.push_back(std::move(gl));
  }
  return g;
}

std::vector<std::pair<std::string, Tensor*>> grad_list(const llama_model& m, llama_weights& g) {
  return list_weights<llama_weights, Tensor*>(g, m.config.tie_word_embeddings);
}

void zero_grads(llama_weights& g) {
  for (auto& [name, t] : list_weights<llama_weights, Tensor*>(g, g.lm_head.empty())) t->zero();
}

std::vector<std::pair<std::string, Tensor>> forward_state::named() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t l = 0; l < layers.size(); l++) {
    auto& a = layers[l];
    std::string p = "layers." + std::to_string(l) + ".";
    std::pair<const char*, const Tensor*> items[] = {
        {"x_in", &a.x_in}, {"h_attn", &a.h_attn}, {"q", &a.q},         {"k", &a.k},         {"v", &a.v},
        {"attn", &a.attn}, {"lse", &a.lse},       {"x_mid", &a.x_mid}, {"h_mlp", &a.h_mlp}, {"gate", &a.gate},
        {"up", &a.up},     {"act", &a.act}};
    for (auto& [n, t] : items) out.emplace_back(p + n, *t);
  }
  out.emplace_back("final.x", x_final);
  out.emplace_back("final.h", h_final);
  return out;
}

void forward(const llama_model& m, forward_state& st, const std::vector<int32_t>& ids,
             const std::vector<int32_t>& pos, const std::vector<int32_t>& targets, const plan_provider* plans) {
  dims d(m.config);
  const int T = int(ids.size());
  if (T == 0) fail("forward: the input is empty; give at least one token");
  if (pos.size() != ids.size()) fail("forward: {} positions for {} tokens", pos.size(), ids.size());
  if (!targets.empty() && targets.size() != ids.size())
    fail("forward: {} targets for {} tokens", targets.size(), ids.size());
  for (int t = 0; t < T; t++) {
    if (ids[t] < 0 || ids[t] >= d.V)
      fail("token id {} at position {} is outside the vocabulary [0, {})", ids[t], t, d.V);
    if (!targets.empty() && targets[t] != -100 && (targets[t] < 0 || targets[t] >= d.V))
      fail("target id {} at position {} is outside the vocabulary [0, {})", targets[t], t, d.V);
    if (pos[t] < 0 || pos[t] >= m.config.max_position_embeddings)
      fail("position {} at stream index {} is beyond the model's {} positions; shorten the input",
           pos[t], t, m.config.max_position_embeddings);
  }
  st.T = T;
  st.ids = ids;
  st.pos = pos;
  st.targets = targets;
  st.layers.resize(d.L);

  Tensor x({T, d.C});
  cpu::embedding_forward(x.f32(), ids.data(), m.w.embed.f32(), T, d.C);
  for (int l = 0; l < d.L; l++) {
    const layer_weights& lw = m.w.layers[l];
    layer_acts& a = st.layers[l];
    a.x_in = x;
    a.h_attn = Tensor({T, d.C});
    a.rstd_attn = Tensor({T});
    cpu::rmsnorm_forward(a.h_attn.f32(), a.rstd_attn.f32(), x.f32(), lw.attn_norm.f32(), T, d.C,
                         m.config.rms_norm_eps);
    a.q = Tensor({T, d.Hq, d.D});
    a.k = Tensor({T, d.Hkv, d.D});
    a.v = Tensor({T, d.Hkv, d.D});
    cpu::matmul_forward(a.q.f32(), a.h_attn.f32(), lw.wq.f32(), opt(lw.bq), T, d.C, d.Hq * d.D);
    cpu::matmul_forward(a.k.f32(), a.h_attn.f32(), lw.wk.f32(), opt(lw.bk), T, d.C, d.Hkv * d.D);
    cpu::matmul_forward(a.v.f32(), a.h_attn.f32(), lw.wv.f32(), opt(lw.bv), T, d.C, d.Hkv * d.D);
    cpu::rope_forward(a.q.f32(), pos.data(), m.inv_freq.data(), T, d.Hq, d.D);
    cpu::rope_forward(a.k.f32(), pos.data(), m.inv_freq.data(), T, d.Hkv, d.D);
    a.plan = plans ? (*plans)(l, a.q.f32(), a.k.f32()) : cpu::plan_causal(T, 0, 64);
    a.attn = Tensor({T, d.Hq * d.D});
    a.lse = Tensor({T, d.Hq});
    cpu::attention_forward(a.attn.f32(), a.lse.f32(), a.q.f32(), a.k.f32(), a.v.f32(), a.plan, T, T, 0, d.Hq,
                           d.Hkv, d.D);
    a.x_mid = Tensor({T, d.C});
    cpu::matmul_forward(a.x_mid.f32(), a.attn.f32(), lw.wo.f32(), opt(lw.bo), T, d.Hq * d.D, d.C);
    add_inplace(a.x_mid.f32(), x.f32(), int64_t(T) * d.C);
    a.h_mlp = Tensor({T, d.C});
    a.rstd_mlp = Tensor({T});
    cpu::rmsnorm_forward(a.h_mlp.f32(), a.rstd_mlp.f32(), a.x_mid.f32(), lw.mlp_norm.f32(), T, d.C,
                         m.config.rms_norm_eps);
    a.gate = Tensor({T, d.I});
    a.up = Tensor({T, d.I});
    a.act = Tensor({T, d.I});
    cpu::matmul_forward(a.gate.f32(), a.h_mlp.f32(), lw.w_gate.f32(), nullptr, T, d.C, d.I);
    cpu::matmul_forward(a.up.f32(), a.h_mlp.f32(), lw.w_up.f32(), nullptr, T, d.C, d.I);
    cpu::swiglu_forward(a.act.f32(), a.gate.f32(), a.up.f32(), int64_t(T) * d.I);
    Tensor out({T, d.C});
    cpu::matmul_forward(out.f32(), a.act.f32(), lw.w_down.f32(), nullptr, T, d.I, d.C);
    add_inplace(out.f32(), a.x_mid.f32(), int64_t(T) * d.C);
    x = out;
  }
  st.x_final = x;
  st.h_final = Tensor({T, d.C});
  st.rstd_final = Tensor({T});
  cpu::rmsnorm_forward(st.h_final.f32(), st.rstd_final.f32(), x.f32(), m.w.norm.f32(), T, d.C,
                       m.config.rms_norm_eps);
  st.loss_sum = 0;
  st.n_valid = 0;
  if (!targets.empty()) {
    st.lse = Tensor({T});
    st.loss_sum = cpu::lm_head_xent_forward(st.lse.f32(), st.h_final.f32(), m.lm_head().f32(), targets.data(), T,
                                            d.C, d.V, &st.n_valid);
  }
}

Tensor logits(const llama_model& m, const forward_state& st) {
  dims d(m.config);
  Tensor out({st.T, d.V});
  cpu::matmul_forward(out.f32(), st.h_final.f32(), m.lm_head().f32(), nullptr, st.T, d.C, d.V);
  return out;
}

void backward(const llama_model& m, const forward_state& st, llama_weights& g, float loss_scale) {
  dims d(m.config);
  const int T = st.T;
  GSA_ASSERT(!st.targets.empty() && !st.lse.empty(), "backward needs a forward pass with targets");
  if (st.n_valid == 0) return;  // nothing to learn from this sequence
  const float scale = loss_scale / float(st.n_valid);

  Tensor dh({T, d.C});
  Tensor& dhead = m.config.tie_word_embeddings ? g.embed : g.lm_head;
  cpu::lm_head_xent_backward(dh.f32(), dhead.f32(), st.h_final.f32(), m.lm_head().f32(), st.targets.data(),
                             st.lse.f32(), T, d.C, d.V, scale);
  Tensor dx({T, d.C});
  cpu::rmsnorm_backward(dx.f32(), g.norm.f32(), dh.f32(), st.x_final.f32(), m.w.norm.f32(), st.rstd_final.f32(), T,
                        d.C);

  Tensor d_act({T, d.I}), d_gate({T, d.I}), d_up({T, d.I});
  Tensor d_attn({T, d.Hq * d.D}), dq({T, d.Hq, d.D}), dk({T, d.Hkv, d.D}), dv({T, d.Hkv, d.D});
  for (int l = d.L - 1; l >= 0; l--) {
    const layer_weights& lw = m.w.layers[l];
    layer_weights& gl = g.layers[l];
    const layer_acts& a = st.layers[l];
    // MLP branch: x_out = x_mid + down(act(h_mlp)).
    d_act.zero();
    cpu::matmul_backward(d_act.f32(), gl.w_down.f32(), nullptr, dx.f32(), a.act.f32(), lw.w_down.f32(), T, d.I, d.C);
    d_gate.zero();
    d_up.zero();
    cpu::swiglu_backward(d_gate.f32(), d_up.f32(), d_act.f32(), a.gate.f32(), a.up.f32(), int64_t(T) * d.I);
    dh.zero();
    cpu::matmul_backward(dh.f32(), gl.w_gate.f32(), nullptr, d_gate.f32(), a.h_mlp.f32(), lw.w_gate.f32(), T, d.C,
                         d.I);
    cpu::matmul_backward(dh.f32(), gl.w_up.f32(), nullptr, d_up.f32(), a.h_mlp.f32(), lw.w_up.f32(), T, d.C, d.I);
    // dx now holds d x_mid from the residual; add the norm's contribution.
    cpu::rmsnorm_backward(dx.f32(), gl.mlp_norm.f32(), dh.f32(), a.x_mid.f32(), lw.mlp_norm.f32(),
                          a.rstd_mlp.f32(), T, d.C);
    // Attention branch: x_mid = x_in + o(attn(q, k, v)).
    d_attn.zero();
    cpu::matmul_backward(d_attn.f32(), gl.wo.f32(), opt(gl.bo), dx.f32(), a.attn.f32(), lw.wo.f32(), T, d.Hq * d.D,
                         d.C);
    dq.zero();
    dk.zero();
    dv.zero();
    cpu::attention_backward(dq.f32(), dk.f32(), dv.f32(), d_attn.f32(), a.q.f32(), a.k.f32(), a.v.f32(),
                            a.attn.f32(), a.lse.f32(), a.plan, T, T, 0, d.Hq, d.Hkv, d.D);
    cpu::rope_backward(dq.f32(), st.pos.data(), m.inv_freq.data(), T, d.Hq, d.D);
    cpu::rope_backward(dk.f32(), st.pos.data(), m.inv_freq.data(), T, d.Hkv, d.D);
    dh.zero();
    cpu::matmul_backward(dh.f32(), gl.wq.f32(), opt(gl.bq), dq.f32(), a.h_attn.f32(), lw.wq.f32(), T, d.C,
                         d.Hq * d.D);
    cpu::matmul_backward(dh.f32(), gl.wk.f32(), opt(gl.bk), dk.f32(), a.h_attn.f32(), lw.wk.f32(), T, d.C,
                         d.Hkv * d.D);
    cpu::matmul_backward(dh.f32(), gl.wv.f32(), opt(gl.bv), dv.f32(), a.h_attn.f32(), lw.wv.f32(), T, d.C,
                         d.Hkv * d.D);
    cpu::rmsnorm_backward(dx.f32(), gl.attn_norm.f32(), dh.f32(), a.x_in.f32(), lw.attn_norm.f32(),
                          a.rstd_attn.f32(), T, d.C);
  }
  cpu::embedding_backward(g.embed.f32(), dx.f32(), st.ids.data(), T, d.C);
}

}  // namespace gsa
