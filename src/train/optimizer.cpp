#include "train/optimizer.h"

#include <cmath>
#include <map>

#include "core/error.h"

namespace gsa {

adamw_optimizer::adamw_optimizer(llama_model& m, const llama_model* master) {
  m_ = make_like(m, dtype::f32);
  v_ = make_like(m, dtype::f32);
  if (!m.w.flat.empty() && m.w.flat.type() != dtype::f32) {
    master_ = make_like(m, dtype::f32);
    if (master) {
      load_master(m, *master);
    } else {
      auto src = m.parameters();
      auto dst = grad_list(m, master_);
      for (size_t i = 0; i < src.size(); i++) m.ops().copy(*dst[i].second, *src[i].second);
    }
  }
}

static bool decays(const Tensor& t) { return t.ndim() >= 2; }

double adamw_optimizer::step(llama_model& m, llama_weights& grads, float lr) {
  backend& be = m.ops();
  llama_weights& p = master_.flat.empty() ? m.w : master_;
  // Parallel lists of (parameter, gradient, m, v, compute copy, decays): whole halves of the flat buffers for a
  // packed model, tensor by tensor otherwise.
  struct group {
    Tensor *p, *g, *m, *v, *lowp;
    bool decay;
  };
  std::vector<group> groups;
  std::vector<Tensor> halves;  // keeps slices alive
  if (!grads.flat.empty()) {
    GSA_ASSERT(!p.flat.empty() && p.flat.numel() == grads.flat.numel() && p.n_matrix == grads.n_matrix);
    halves.reserve(10);
    Tensor* lowp_flat = master_.flat.empty() ? nullptr : &m.w.flat;
    for (int half = 0; half < 2; half++) {
      const int64_t a = half ? p.n_matrix : 0, b = half ? p.flat.numel() : p.n_matrix;
      if (a == b) continue;
      const size_t k = halves.size();
      for (Tensor* t : {&p.flat, &grads.flat, &m_.flat, &v_.flat}) halves.push_back(t->slice_rows(a, b));
      if (lowp_flat) halves.push_back(lowp_flat->slice_rows(a, b));
      groups.push_back({&halves[k], &halves[k + 1], &halves[k + 2], &halves[k + 3],
                        lowp_flat ? &halves[k + 4] : nullptr, half == 0});
    }
  } else {
    auto pl = grad_list(m, p), gl = grad_list(m, grads), ml = grad_list(m, m_), vl = grad_list(m, v_);
    GSA_ASSERT(pl.size() == gl.size() && pl.size() == ml.size());
    for (size_t i = 0; i < pl.size(); i++)
      groups.push_back({pl[i].second, gl[i].second, ml[i].second, vl[i].second, nullptr, decays(*pl[i].second)});
  }
  double ss = 0;
  for (auto& gr : groups) ss += be.sum_squares(*gr.g);
  double norm = std::sqrt(ss);
  if (!std::isfinite(norm))
    throw nonfinite_gradient(fmt::format("the gradient norm is {} at step {}: training diverged; lower the learning "
                                         "rate (or --on-nan skip to drop such batches)", norm, step_count + 1));
  if (max_grad_norm > 0) {
    float s = cpu::clip_factor(norm, max_grad_norm);
    if (s < 1.0f)
      for (auto& gr : groups) be.scale_inplace(*gr.g, s);
  }
  step_count++;
  for (auto& gr : groups) {
    cpu::adamw_params h = hp;
    h.lr = lr;
    if (!gr.decay) h.weight_decay = 0;
    be.adamw_step(*gr.p, *gr.g, *gr.m, *gr.v, nullptr, gr.lowp, step_count, h);
  }
  return norm;
}

std::vector<std::pair<std::string, Tensor>> adamw_optimizer::state(const llama_model& m) const {
  std::vector<std::pair<std::string, Tensor>> out;
  auto params = m.parameters();
  auto ml = grad_list(m, const_cast<llama_weights&>(m_)), vl = grad_list(m, const_cast<llama_weights&>(v_));
  for (size_t i = 0; i < params.size(); i++) {
    out.emplace_back(params[i].first + ".exp_avg", ml[i].second->host());
    out.emplace_back(params[i].first + ".exp_avg_sq", vl[i].second->host());
  }
  return out;
}

void adamw_optimizer::load_state(const llama_model& m, const std::vector<std::pair<std::string, Tensor>>& named) {
  std::map<std::string, const Tensor*> by_name;
  for (auto& [n, t] : named) by_name[n] = &t;
  auto params = m.parameters();
  auto ml = grad_list(m, m_), vl = grad_list(m, v_);
  for (size_t i = 0; i < params.size(); i++) {
    for (int which = 0; which < 2; which++) {
      std::string n = params[i].first + (which ? ".exp_avg_sq" : ".exp_avg");
      auto it = by_name.find(n);
      if (it == by_name.end()) fail("optimizer state lacks '{}'; the checkpoint does not match this model", n);
      Tensor& dst = *(which ? vl : ml)[i].second;
      if (it->second->shape() != dst.shape())
        fail("optimizer state '{}' has shape {} but the model needs {}", n, shape_str(it->second->shape()),
             shape_str(dst.shape()));
      m.ops().copy(dst, m.ops().upload(*it->second, dtype::f32));
    }
  }
}

void adamw_optimizer::master_to_host(const llama_model& m, llama_model& host) const {
  auto src = grad_list(m, const_cast<llama_weights&>(master(m)));
  auto dst = host.parameters();
  GSA_ASSERT(src.size() == dst.size());
  for (size_t i = 0; i < src.size(); i++) *dst[i].second = src[i].second->host(dtype::f32).clone();
}

void adamw_optimizer::load_master(llama_model& m, const llama_model& host) {
  auto src = host.parameters();
  auto dev = m.parameters();
  GSA_ASSERT(src.size() == dev.size());
  backend& be = m.ops();
  if (master_.flat.empty()) {  // the model is the master
    for (size_t i = 0; i < src.size(); i++) be.copy(*dev[i].second, be.upload(*src[i].second, dtype::f32));
    return;
  }
  auto dst = grad_list(m, master_);
  for (size_t i = 0; i < src.size(); i++) {
    be.copy(*dst[i].second, be.upload(*src[i].second, dtype::f32));
    be.copy(*dev[i].second, *dst[i].second);  // the compute copy, rounded once
  }
}

float cosine_lr(int64_t step, int64_t warmup, int64_t total, float lr_max, float min_ratio) {
  if (warmup > 0 && step < warmup) return lr_max * float(step + 1) / float(warmup);
  if (total <= warmup) return lr_max;
  double t = double(step - warmup) / double(std::max<int64_t>(1, total - warmup));
  t = std::min(1.0, std::max(0.0, t));
  double cosv = 0.5 * (1.0 + std::cos(3.14159265358979323846 * t));
  return float(lr_max * (min_ratio + (1.0 - min_ratio) * cosv));
}

}  // namespace gsa
