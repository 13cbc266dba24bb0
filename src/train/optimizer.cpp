#include "train/optimizer.h"

#include <cmath>
#include <map>

#include "core/error.h"

namespace gsa {

adamw_optimizer::adamw_optimizer(const llama_model& m) {
  for (auto& [name, t] : m.parameters()) {
    m_.emplace_back(t->shape());
    v_.emplace_back(t->shape());
  }
}

static bool decays(const std::string& name, const Tensor& t) { return t.ndim() >= 2; }

double adamw_optimizer::step(llama_model& m, llama_weights& grads, float lr) {
  auto params = m.parameters();
  auto gl = grad_list(m, grads);
  GSA_ASSERT(params.size() == gl.size() && params.size() == m_.size());
  double ss = 0;
  for (auto& [name, g] : gl) ss += cpu::sum_squares(g->f32(), g->numel());
  double norm = std::sqrt(ss);
  if (!std::isfinite(norm)) fail("the gradient norm is {} at step {}: training diverged; lower the learning rate",
                                 norm, step_count + 1);
  if (max_grad_norm > 0) {
    float s = cpu::clip_factor(norm, max_grad_norm);
    if (s < 1.0f)
      for (auto& [name, g] : gl) cpu::scale_inplace(g->f32(), g->numel(), s);
  }
  step_count++;
  for (size_t i = 0; i < params.size(); i++) {
    cpu::adamw_params p = hp;
    p.lr = lr;
    if (!decays(params[i].first, *params[i].second)) p.weight_decay = 0;
    cpu::adamw_step(params[i].second->f32(), gl[i].second->f32(), m_[i].f32(), v_[i].f32(),
                    params[i].second->numel(), step_count, p);
  }
  return norm;
}

std::vector<std::pair<std::string, Tensor>> adamw_optimizer::state(const llama_model& m) const {
  std::vector<std::pair<std::string, Tensor>> out;
  auto params = m.parameters();
  for (size_t i = 0; i < params.size(); i++) {
    out.emplace_back(params[i].first + ".exp_avg", m_[i]);
    out.emplace_back(params[i].first + ".exp_avg_sq", v_[i]);
  }
  return out;
}

void adamw_optimizer::load_state(const llama_model& m, const std::vector<std::pair<std::string, Tensor>>& named) {
  std::map<std::string, const Tensor*> by_name;
  for (auto& [n, t] : named) by_name[n] = &t;
  auto params = m.parameters();
  for (size_t i = 0; i < params.size(); i++) {
    for (int which = 0; which < 2; which++) {
      std::string n = params[i].first + (which ? ".exp_avg_sq" : ".exp_avg");
      auto it = by_name.find(n);
      if (it == by_name.end()) fail("optimizer state lacks '{}'; the checkpoint does not match this model", n);
      Tensor& dst = which ? v_[i] : m_[i];
      if (it->second->shape() != dst.shape())
        fail("optimizer state '{}' has shape {} but the model needs {}", n, shape_str(it->second->shape()),
             shape_str(dst.shape()));
      dst = it->second->to(dtype::f32);
    }
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
