// Forward and backward of the Llama-family model over one sequence. Contract: see llama.h. Backward follows
// the ops' convention (gradients accumulate), so the caller zeroes g once per optimizer step and may call
// forward/backward for several sequences (gradient accumulation).
#include "model/llama.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "core/profile.h"
#include "core/rng.h"

namespace gsa {

namespace {

struct dims {
  int C, I, Hq, Hkv, D, V, L;
  explicit dims(const model_config& c)
      : C(int(c.hidden_size)), I(int(c.intermediate_size)), Hq(int(c.num_attention_heads)),
        Hkv(int(c.num_key_value_heads)), D(int(c.head_dim)), V(int(c.vocab_size)), L(int(c.num_hidden_layers)) {}
};


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
  // One stream of normals over the random tensors in list order (two draws each), cut into pieces that threads
  // fill from a jumped copy of the generator: the values of a sequential fill, at any thread count (a 7B model
  // takes minutes on one core).
  struct piece {
    float* p;
    int64_t n;
    uint64_t first;  // index of the piece's first normal in the stream
  };
  std::vector<piece> pieces;
  constexpr int64_t k_piece = 1 << 20;
  uint64_t drawn = 0;
  for (auto& [name, t] : parameters()) {
    float* p = t->f32();
    const bool is_norm = name.find("norm") != std::string::npos;
    const bool is_bias = name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    if (is_norm || is_bias) {
      std::fill(p, p + t->numel(), is_norm ? 1.0f : 0.0f);
      continue;
    }
    for (int64_t a = 0; a < t->numel(); a += k_piece) {
      pieces.push_back({p + a, std::min(k_piece, t->numel() - a), drawn});
      drawn += uint64_t(pieces.back().n);
    }
  }
  const rng start(seed);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < int64_t(pieces.size()); i++) {
    rng r = start;
    r.jump(2 * pieces[size_t(i)].first);
    for (int64_t j = 0; j < pieces[size_t(i)].n; j++) pieces[size_t(i)].p[j] = r.normal() * std;
  }
}

namespace {

// Packs tensors shaped like `shapes` (list order) into one buffer of type t on backend b: matrices first.
// Returns the views in list order; flat/n_matrix describe the buffer.
std::vector<Tensor> pack(backend& b, const std::vector<shape_t>& shapes, dtype t, Tensor& flat, int64_t& n_matrix) {
  int64_t total = 0;
  n_matrix = 0;
  for (auto& s : shapes) {
    total += shape_numel(s);
    if (s.size() >= 2) n_matrix += shape_numel(s);
  }
  flat = b.alloc({total}, t);
  std::vector<Tensor> out;
  int64_t off_m = 0, off_v = n_matrix;
  char* base = static_cast<char*>(flat.raw());
  for (auto& s : shapes) {
    int64_t& off = s.size() >= 2 ? off_m : off_v;
    out.push_back(Tensor::wrap(nullptr, base + off * int64_t(dtype_size(t)), s, t, b.where()));
    off += shape_numel(s);
  }
  // Views share the buffer's lifetime through the flat tensor their owner keeps.
  return out;
}

}  // namespace

llama_model to_backend(const llama_model& host, backend& b) {
  GSA_ASSERT(host.on_host(), "to_backend needs a host model");
  llama_model dev;
  dev.config = host.config;
  dev.be = &b;
  dev.w = weights_like(host.w, b, b.act(), /*packed=*/true);
  auto src = host.parameters();
  auto dst = dev.parameters();
  GSA_ASSERT(src.size() == dst.size());
  for (size_t i = 0; i < src.size(); i++) b.copy(*dst[i].second, b.upload(*src[i].second, b.act()));
  dev.inv_freq = host.inv_freq;
  dev.inv_freq_dev = b.upload(Tensor::borrow(dev.inv_freq.data(), {int64_t(dev.inv_freq.size())}), dtype::f32);
  return dev;
}

void copy_weights_to_host(const llama_model& dev, llama_model& host) {
  auto src = dev.parameters();
  auto dst = host.parameters();
  GSA_ASSERT(src.size() == dst.size());
  for (size_t i = 0; i < src.size(); i++) *dst[i].second = src[i].second->host(dtype::f32).clone();
}

llama_weights make_grads(const llama_model& m) { return make_like(m, dtype::f32); }

llama_weights make_like(const llama_model& m, dtype t) {
  return weights_like(m.w, m.ops(), t, !m.w.flat.empty());
}

llama_weights weights_like(const llama_weights& w, backend& be, dtype t, bool packed) {
  llama_weights g;
  g.layers.resize(w.layers.size());
  // Field by field, so that absent tensors (no bias, tied head) stay absent.
  std::vector<std::pair<const Tensor*, Tensor*>> fields = {{&w.embed, &g.embed}, {&w.norm, &g.norm},
                                                           {&w.lm_head, &g.lm_head}};
  for (size_t l = 0; l < w.layers.size(); l++) {
    const layer_weights& a = w.layers[l];
    layer_weights& b = g.layers[l];
    for (auto [x, y] : {std::pair{&a.attn_norm, &b.attn_norm}, {&a.wq, &b.wq}, {&a.bq, &b.bq}, {&a.wk, &b.wk},
                        {&a.bk, &b.bk}, {&a.wv, &b.wv}, {&a.bv, &b.bv}, {&a.wo, &b.wo}, {&a.bo, &b.bo},
                        {&a.mlp_norm, &b.mlp_norm}, {&a.w_gate, &b.w_gate}, {&a.w_up, &b.w_up},
                        {&a.w_down, &b.w_down}})
      fields.emplace_back(x, y);
  }
  if (!packed) {
    for (auto [x, y] : fields)
      if (!x->empty()) *y = be.alloc(x->shape(), t);
    return g;
  }
  // Packed like the model (the same order, so flat offsets agree): one buffer seen whole by the optimizer.
  std::vector<shape_t> shapes;
  std::vector<Tensor*> dst;
  for (auto [x, y] : fields)
    if (!x->empty()) shapes.push_back(x->shape()), dst.push_back(y);
  auto views = pack(be, shapes, t, g.flat, g.n_matrix);
  for (size_t i = 0; i < dst.size(); i++) *dst[i] = views[i];
  return g;
}

std::vector<std::pair<std::string, Tensor*>> grad_list(const llama_model& m, llama_weights& g) {
  return list_weights<llama_weights, Tensor*>(g, m.config.tie_word_embeddings);
}

void zero_grads(llama_weights& g, backend& b) {
  if (!g.flat.empty()) return b.zero(g.flat);  // one memset
  for (auto& [name, t] : list_weights<llama_weights, Tensor*>(g, g.lm_head.empty())) b.zero(*t);
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

const float* layer_qk::host_q() const {
  if (q.on_host() && q.type() == dtype::f32) return q.f32();
  if (qh_.empty()) qh_ = q.host(dtype::f32);
  return qh_.f32();
}
const float* layer_qk::host_k() const {
  if (k.on_host() && k.type() == dtype::f32) return k.f32();
  if (kh_.empty()) kh_ = k.host(dtype::f32);
  return kh_.f32();
}

namespace {
bool same_plan(const cpu::attn_plan& a, const cpu::attn_plan& b) {
  auto eq = [](const auto& x, const auto& y) {
    return x.size() == y.size() && (x.empty() || std::memcmp(x.data(), y.data(), x.size() * sizeof(x[0])) == 0);
  };
  return a.unfold == b.unfold && a.heads == b.heads && a.gists_per_unit == b.gists_per_unit && eq(a.block_q, b.block_q) &&
         eq(a.seg_ptr, b.seg_ptr) && eq(a.segs, b.segs) && eq(a.gist_ptr, b.gist_ptr) && eq(a.gist_pos, b.gist_pos);
}
}  // namespace

bool attention_profile_on() { return profile_on(); }
attention_profile& train_attention_profile() {
  static attention_profile p;
  return p;
}

namespace {
// Wall clock after the device finished its queue (profiling only).
double profile_now(backend& be) {
  be.synchronize();
  return profile_clock_ms();
}
}  // namespace

void forward(const llama_model& m, forward_state& st, const std::vector<int32_t>& ids,
             const std::vector<int32_t>& pos, const std::vector<int32_t>& targets, const plan_provider* plans,
             kv_prefix* prefix) {
  dims d(m.config);
  backend& be = m.ops();
  const dtype at = be.act();
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
  const int P0 = prefix ? prefix->rows : 0, Tk = P0 + T;  // keys: the prefix's rows, then these
  if (prefix) {
    if (int(prefix->k.size()) != d.L || int(prefix->v.size()) != d.L)
      fail("forward: a KV prefix of {} / {} layers for a model of {}", prefix->k.size(), prefix->v.size(), d.L);
    for (int l = 0; l < d.L; l++)
      if (prefix->k[size_t(l)].dim(0) < Tk || prefix->v[size_t(l)].dim(0) < Tk)
        fail("forward: a KV prefix of {} rows cannot take {} more after its {}", prefix->k[size_t(l)].dim(0), T, P0);
  }
  st.T = T;
  st.ids = ids;
  st.pos = pos;
  st.targets = targets;
  st.layers.resize(d.L);
  auto upload_i32 = [&](const std::vector<int32_t>& v) {
    return be.upload(Tensor::borrow(const_cast<int32_t*>(v.data()), {int64_t(v.size())}, dtype::i32), dtype::i32);
  };
  st.ids_dev = upload_i32(ids);
  st.pos_dev = upload_i32(pos);
  st.targets_dev = targets.empty() ? Tensor() : upload_i32(targets);
  const Tensor& inv_freq =
      m.inv_freq_dev.empty() ? Tensor::borrow(const_cast<float*>(m.inv_freq.data()), {int64_t(m.inv_freq.size())})
                             : m.inv_freq_dev;

  Tensor x = be.alloc({T, d.C}, at);
  be.embedding_forward(x, st.ids_dev, m.w.embed);
  for (int l = 0; l < d.L; l++) {
    const layer_weights& lw = m.w.layers[l];
    layer_acts& a = st.layers[l];
    a.x_in = x;
    a.h_attn = be.alloc({T, d.C}, at);
    a.rstd_attn = be.alloc({T}, dtype::f32);
    be.rmsnorm_forward(a.h_attn, a.rstd_attn, x, lw.attn_norm, m.config.rms_norm_eps);
    a.q = be.alloc({T, d.Hq, d.D}, at);
    a.k = be.alloc({T, d.Hkv, d.D}, at);
    a.v = be.alloc({T, d.Hkv, d.D}, at);
    be.matmul_forward(a.q, a.h_attn, lw.wq, &lw.bq);
    be.matmul_forward(a.k, a.h_attn, lw.wk, &lw.bk);
    be.matmul_forward(a.v, a.h_attn, lw.wv, &lw.bv);
    be.rope_forward(a.q, st.pos_dev, inv_freq);
    be.rope_forward(a.k, st.pos_dev, inv_freq);
    // With a prefix, this chunk's keys / values go after the earlier ones first: the plan (selection) sees every
    // key [0, Tk) and attention runs over all of them.
    Tensor keys = a.k;
    if (prefix) {
      Tensor pk = prefix->k[size_t(l)].slice_rows(P0, Tk), pv = prefix->v[size_t(l)].slice_rows(P0, Tk);
      be.copy(pk, a.k);
      be.copy(pv, a.v);
      keys = prefix->k[size_t(l)].slice_rows(0, Tk);
    }
    const bool prof = attention_profile_on();
    const double t0 = prof ? profile_now(be) : 0;
    a.plan = plans ? (*plans)(l, layer_qk(a.q, keys)) : cpu::plan_causal(T, P0, 64);
    // Layers usually share a plan (the gist mask, dense layers): prepare it once.
    if (l > 0 && same_plan(a.plan, st.layers[l - 1].plan)) a.prepared = st.layers[l - 1].prepared;
    else a.prepared = be.prepare_plan(a.plan, T, Tk, P0, d.Hkv);
    a.attn = be.alloc({T, d.Hq * d.D}, at);
    a.lse = be.alloc({T, d.Hq}, dtype::f32);
    const double t1 = prof ? profile_now(be) : 0;
    if (prefix) {
      be.attention_forward(a.attn, a.lse, a.q, keys, prefix->v[size_t(l)].slice_rows(0, Tk), a.plan,
                           a.prepared.get(), P0);
    } else {
      be.attention_forward(a.attn, a.lse, a.q, a.k, a.v, a.plan, a.prepared.get(), 0);
    }
    if (prof) {
      attention_profile& ap = train_attention_profile();
      ap.plan_ms += t1 - t0;
      ap.fwd_ms += profile_now(be) - t1;
    }
    a.x_mid = be.alloc({T, d.C}, at);
    be.matmul_forward(a.x_mid, a.attn, lw.wo, &lw.bo);
    be.add_inplace(a.x_mid, x);
    a.h_mlp = be.alloc({T, d.C}, at);
    a.rstd_mlp = be.alloc({T}, dtype::f32);
    be.rmsnorm_forward(a.h_mlp, a.rstd_mlp, a.x_mid, lw.mlp_norm, m.config.rms_norm_eps);
    a.gate = be.alloc({T, d.I}, at);
    a.up = be.alloc({T, d.I}, at);
    a.act = be.alloc({T, d.I}, at);
    be.matmul_forward(a.gate, a.h_mlp, lw.w_gate, nullptr);
    be.matmul_forward(a.up, a.h_mlp, lw.w_up, nullptr);
    be.swiglu_forward(a.act, a.gate, a.up);
    Tensor out = be.alloc({T, d.C}, at);
    be.matmul_forward(out, a.act, lw.w_down, nullptr);
    be.add_inplace(out, a.x_mid);
    x = out;
  }
  st.x_final = x;
  st.h_final = be.alloc({T, d.C}, at);
  st.rstd_final = be.alloc({T}, dtype::f32);
  be.rmsnorm_forward(st.h_final, st.rstd_final, x, m.w.norm, m.config.rms_norm_eps);
  st.loss_sum = 0;
  st.n_valid = 0;
  if (!targets.empty()) {
    st.lse = be.alloc({T}, dtype::f32);
    st.loss_sum = be.lm_head_xent_forward(st.lse, st.h_final, m.lm_head(), st.targets_dev, &st.n_valid);
  }
  if (prefix) prefix->rows = Tk;
}

Tensor logits(const llama_model& m, const forward_state& st) {
  dims d(m.config);
  backend& be = m.ops();
  Tensor out = be.alloc({st.T, d.V}, be.act());
  be.matmul_forward(out, st.h_final, m.lm_head(), nullptr);
  return out.host(dtype::f32);
}

void backward(const llama_model& m, const forward_state& st, llama_weights& g, float loss_scale,
              const std::function<void(int layer)>* after_layer) {
  dims d(m.config);
  backend& be = m.ops();
  const dtype at = be.act();
  const int T = st.T;
  GSA_ASSERT(!st.targets.empty() && !st.lse.empty(), "backward needs a forward pass with targets");
  if (st.n_valid == 0) return;  // nothing to learn from this sequence
  const float scale = loss_scale / float(st.n_valid);
  const Tensor& inv_freq =
      m.inv_freq_dev.empty() ? Tensor::borrow(const_cast<float*>(m.inv_freq.data()), {int64_t(m.inv_freq.size())})
                             : m.inv_freq_dev;

  Tensor dh = be.alloc({T, d.C}, at);
  Tensor& dhead = m.config.tie_word_embeddings ? g.embed : g.lm_head;
  be.lm_head_xent_backward(dh, &dhead, st.h_final, m.lm_head(), st.targets_dev, st.lse, scale);
  Tensor dx = be.alloc({T, d.C}, at);
  be.rmsnorm_backward(dx, g.norm, dh, st.x_final, m.w.norm, st.rstd_final);

  Tensor d_act = be.alloc({T, d.I}, at), d_gate = be.alloc({T, d.I}, at), d_up = be.alloc({T, d.I}, at);
  Tensor d_attn = be.alloc({T, d.Hq * d.D}, at), dq = be.alloc({T, d.Hq, d.D}, at);
  Tensor dk = be.alloc({T, d.Hkv, d.D}, at), dv = be.alloc({T, d.Hkv, d.D}, at);
  // The routing loss: per spec (level) its weight times its mean over layers, rows and query heads.
  std::vector<float> route_scale;
  for (const route_spec& r : st.route)
    route_scale.push_back(r.R() > 0 && r.layers_on() > 0 && r.weight > 0
                              ? loss_scale * r.weight / (float(r.layers_on()) * float(r.R()) * float(d.Hq))
                              : 0.0f);
  for (int l = d.L - 1; l >= 0; l--) {
    const layer_weights& lw = m.w.layers[l];
    layer_weights& gl = g.layers[l];
    const layer_acts& a = st.layers[l];
    // MLP branch: x_out = x_mid + down(act(h_mlp)).
    be.zero(d_act);
    be.matmul_backward(&d_act, &gl.w_down, nullptr, dx, a.act, lw.w_down);
    be.zero(d_gate);
    be.zero(d_up);
    be.swiglu_backward(d_gate, d_up, d_act, a.gate, a.up);
    be.zero(dh);
    be.matmul_backward(&dh, &gl.w_gate, nullptr, d_gate, a.h_mlp, lw.w_gate);
    be.matmul_backward(&dh, &gl.w_up, nullptr, d_up, a.h_mlp, lw.w_up);
    // dx now holds d x_mid from the residual; add the norm's contribution.
    be.rmsnorm_backward(dx, gl.mlp_norm, dh, a.x_mid, lw.mlp_norm, a.rstd_mlp);
    // Attention branch: x_mid = x_in + o(attn(q, k, v)).
    be.zero(d_attn);
    be.matmul_backward(&d_attn, &gl.wo, &gl.bo, dx, a.attn, lw.wo);
    be.zero(dq);
    be.zero(dk);
    be.zero(dv);
    const bool prof = attention_profile_on();
    const double t0 = prof ? profile_now(be) : 0;
    be.attention_backward(dq, dk, dv, d_attn, a.q, a.k, a.v, a.attn, a.lse, a.plan, a.prepared.get(), 0);
    if (prof) train_attention_profile().bwd_ms += profile_now(be) - t0;
    for (size_t i = 0; i < st.route.size(); i++)
      if (route_scale[i] > 0 && st.route[i].layers[size_t(l)])
        be.route_loss(dq, dk, a.q, a.k, st.route[i], l, route_scale[i]);
    be.rope_backward(dq, st.pos_dev, inv_freq);
    be.rope_backward(dk, st.pos_dev, inv_freq);
    be.zero(dh);
    be.matmul_backward(&dh, &gl.wq, &gl.bq, dq, a.h_attn, lw.wq);
    be.matmul_backward(&dh, &gl.wk, &gl.bk, dk, a.h_attn, lw.wk);
    be.matmul_backward(&dh, &gl.wv, &gl.bv, dv, a.h_attn, lw.wv);
    be.rmsnorm_backward(dx, gl.attn_norm, dh, a.x_in, lw.attn_norm, a.rstd_attn);
    if (after_layer) (*after_layer)(l);
  }
  be.embedding_backward(g.embed, dx, st.ids_dev);
  if (after_layer) (*after_layer)(-1);
}

}  // namespace gsa
