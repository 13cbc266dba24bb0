#include "train/optimizer.h"

#include <algorithm>
#include <functional>
#include <cmath>
#include <map>

#include "core/error.h"
#include "train/data-parallel.h"

namespace gsa {

namespace {

float* fptr(const Tensor& t) { return static_cast<float*>(const_cast<void*>(t.raw())); }

// Values [r.begin, r.end) of the flat buffer of a model laid out as `layout`, from host f32 tensors by name.
std::vector<float> host_range(const std::vector<flat_param>& layout, dist::range r,
                              const std::function<const Tensor*(const std::string&)>& by_name) {
  std::vector<float> out(size_t(r.size()));
  for (auto& p : layout) {
    const dist::range x = dist::intersect(r, p.offset, p.offset + p.numel);
    if (x.size() == 0) continue;
    const Tensor* t = by_name(p.name);
    GSA_ASSERT(t && t->numel() == p.numel && t->type() == dtype::f32);
    std::copy(t->f32() + (x.begin - p.offset), t->f32() + (x.end - p.offset), out.begin() + (x.begin - r.begin));
  }
  return out;
}

}  // namespace

adamw_optimizer::adamw_optimizer(llama_model& m, const llama_model* master, const optimizer_shard* shard) {
  if (shard && shard->comm) {
    GSA_ASSERT(!m.w.flat.empty() && master, "a sharded optimizer needs a packed model and its host master");
    sh_ = *shard;
    GSA_ASSERT(int(sh_.ranges.size()) == sh_.comm->size() && sh_.ranges.back().end == m.w.flat.numel());
    const int64_t k = mine().size();
    GSA_ASSERT(k > 0, "every rank needs a part of the buffer");
    shard_m_ = m.ops().alloc({k}, dtype::f32);
    shard_v_ = m.ops().alloc({k}, dtype::f32);
    if (m.w.flat.type() != dtype::f32) shard_master_ = m.ops().alloc({k}, dtype::f32);
    load_master_range(m, *master);  // the compute copy was made from the same host model (to_backend)
    return;
  }
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

double adamw_optimizer::step_sharded(llama_model& m, llama_weights& grads, float lr) {
  backend& be = m.ops();
  dist::communicator& comm = *sh_.comm;
  const dist::range r = mine();
  comm.reduce_scatter_sum(fptr(grads.flat), sh_.ranges);
  comm.wait();
  Tensor g = grads.flat.slice_rows(r.begin, r.end);
  const double norm = std::sqrt(comm.sum_host(be.sum_squares(g)));
  if (!std::isfinite(norm))
    throw nonfinite_gradient(fmt::format("the gradient norm is {} at step {}: training diverged; lower the learning "
                                         "rate (or --on-nan skip to drop such batches)", norm, step_count + 1));
  if (max_grad_norm > 0) {
    const float s = cpu::clip_factor(norm, max_grad_norm);
    if (s < 1.0f) be.scale_inplace(g, s);
  }
  step_count++;
  const bool own_master = !shard_master_.empty();
  for (int half = 0; half < 2; half++) {
    const int64_t lo = half ? m.w.n_matrix : 0, hi = half ? m.w.flat.numel() : m.w.n_matrix;
    const dist::range x = dist::intersect(r, lo, hi);
    if (x.size() == 0) continue;
    const int64_t a = x.begin - r.begin, b = x.end - r.begin;
    Tensor p = own_master ? shard_master_.slice_rows(a, b) : m.w.flat.slice_rows(x.begin, x.end);
    Tensor gg = g.slice_rows(a, b), mm = shard_m_.slice_rows(a, b), vv = shard_v_.slice_rows(a, b);
    Tensor lowp = own_master ? m.w.flat.slice_rows(x.begin, x.end) : Tensor();
    cpu::adamw_params h = hp;
    h.lr = lr;
    if (half) h.weight_decay = 0;
    be.adamw_step(p, gg, mm, vv, nullptr, own_master ? &lowp : nullptr, step_count, h);
  }
  comm.all_gather(m.w.flat.raw(), dtype_size(m.w.flat.type()), sh_.ranges);
  comm.wait();
  return norm;
}

double adamw_optimizer::step(llama_model& m, llama_weights& grads, float lr) {
  if (sharded()) return step_sharded(m, grads, lr);
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
  if (sharded()) {
    GSA_ASSERT(!m.w.flat.empty(), "state() of a sharded optimizer takes the device model");
    const auto layout = flat_layout(m);
    const int64_t n = m.w.flat.numel();
    auto params = m.parameters();  // shapes as the parameters have them: the checkpoint format of one process
    const std::vector<float> all_m = gather_to_root(m.ops(), *sh_.comm, shard_m_, sh_.ranges, n);
    const std::vector<float> all_v = gather_to_root(m.ops(), *sh_.comm, shard_v_, sh_.ranges, n);
    if (all_m.empty()) return out;  // not rank 0
    for (size_t i = 0; i < layout.size(); i++) {
      const flat_param& p = layout[i];
      for (int which = 0; which < 2; which++) {
        const std::vector<float>& all = which ? all_v : all_m;
        Tensor t(params[i].second->shape(), dtype::f32);
        std::copy(all.begin() + p.offset, all.begin() + p.offset + p.numel, t.f32());
        out.emplace_back(p.name + (which ? ".exp_avg_sq" : ".exp_avg"), std::move(t));
      }
    }
    return out;
  }
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
  if (sharded()) {
    const auto layout = flat_layout(m);
    for (int which = 0; which < 2; which++) {
      const char* suffix = which ? ".exp_avg_sq" : ".exp_avg";
      const auto vals = host_range(layout, mine(), [&](const std::string& p) {
        auto it = by_name.find(p + suffix);
        if (it == by_name.end()) fail("optimizer state lacks '{}{}'; the checkpoint does not match this model", p, suffix);
        for (auto& q : layout)
          if (q.name == p && q.numel != it->second->numel())
            fail("optimizer state '{}{}' has {} values but the model needs {}; the checkpoint does not match this "
                 "model", p, suffix, it->second->numel(), q.numel);
        return it->second;
      });
      Tensor dst = which ? shard_v_ : shard_m_;
      m.ops().copy(dst, m.ops().upload(Tensor::borrow(const_cast<float*>(vals.data()), {int64_t(vals.size())}),
                                       dtype::f32));
    }
    return;
  }
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
  if (sharded() && !shard_master_.empty()) {
    const auto layout = flat_layout(m);
    const std::vector<float> all = gather_to_root(m.ops(), *sh_.comm, shard_master_, sh_.ranges, m.w.flat.numel());
    if (all.empty()) return;  // not rank 0
    auto dst = host.parameters();
    GSA_ASSERT(dst.size() == layout.size());
    for (size_t i = 0; i < dst.size(); i++) {
      Tensor t(dst[i].second->shape(), dtype::f32);
      std::copy(all.begin() + layout[i].offset, all.begin() + layout[i].offset + layout[i].numel, t.f32());
      *dst[i].second = std::move(t);
    }
    return;
  }
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
  if (sharded()) {
    // Every rank holds the host model: the compute copy whole, the master weights of this rank's range.
    for (size_t i = 0; i < src.size(); i++) be.copy(*dev[i].second, be.upload(*src[i].second, be.act()));
    load_master_range(m, host);
    return;
  }
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

void adamw_optimizer::load_master_range(llama_model& m, const llama_model& host) {
  if (shard_master_.empty()) return;  // an f32 model is its own master
  std::map<std::string, const Tensor*> by_name;
  for (auto& [n, t] : host.parameters()) by_name[n] = t;
  const auto vals = host_range(flat_layout(m), mine(), [&](const std::string& p) { return by_name.at(p); });
  m.ops().copy(shard_master_, m.ops().upload(Tensor::borrow(const_cast<float*>(vals.data()), {int64_t(vals.size())}),
                                             dtype::f32));
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
