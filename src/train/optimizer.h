// AdamW over a model's parameters with global-norm clipping, on the model's backend. State (m, v, step) is
// saved beside a checkpoint for bit-exact resume. Gradients come from backward() (which accumulates): the
// trainer zeroes them per step.
//
// A host model is updated tensor by tensor in place. A packed device model (to_backend) keeps f32 master
// weights, m and v packed like the model, so a step is two launches (matrices with weight decay, then vectors
// without); a bf16 model's compute copy is refreshed by the same launch. An f32 device model is its own master.
#pragma once
#include <string>
#include <vector>

#include "backend/cpu/ops.h"
#include "core/error.h"
#include "dist/communicator.h"
#include "model/llama.h"

namespace gsa {

// ZeRO-1 (a packed model in a data-parallel group): this rank keeps m, v and (bf16 models) the f32 master
// weights for its range of the flat buffer only, ranges[rank] of dist::shard_ranges(flat size, ranks). A step
// reduce-scatters the gradients (each rank gets the sum over the ranks of its range), takes the global norm from
// the ranks' partial sums, updates its range and all-gathers the compute weights. state() and master_to_host()
// gather to rank 0 and are collective: every rank calls them (the others get an empty state / untouched host).
struct optimizer_shard {
  dist::communicator* comm = nullptr;
  std::vector<dist::range> ranges;
};

// A step refused before any update: the gradient norm is NaN or Inf (the parameters, moments and step count are
// untouched, so the trainer may skip the batch or stop).
class nonfinite_gradient : public error {
 public:
  using error::error;
};

class adamw_optimizer {
 public:
  cpu::adamw_params hp;
  float max_grad_norm = 1.0f;  // <= 0: no clipping
  int64_t step_count = 0;

  // master: the host f32 weights a device model was made from (exact master weights; without it the master is
  // the model's own weights widened to f32).
  // shard: ZeRO-1 (null: the whole state on this rank); `master` must then be given.
  explicit adamw_optimizer(llama_model& m, const llama_model* master = nullptr, const optimizer_shard* shard = nullptr);
  bool sharded() const { return sh_.comm != nullptr; }
  // One update with learning rate lr. Weight decay applies to matrices only (not norms, biases; embeddings'
  // rows are matrices and do decay, as in the common GPT recipe). Returns the gradient norm before clipping.
  double step(llama_model& m, llama_weights& grads, float lr);

  // m and v as named host tensors ("<param>.exp_avg", "<param>.exp_avg_sq"), for checkpoints.
  std::vector<std::pair<std::string, Tensor>> state(const llama_model& m) const;
  void load_state(const llama_model& m, const std::vector<std::pair<std::string, Tensor>>& named);
  // The f32 master weights into a host model of the same config (for checkpoints of a device model).
  void master_to_host(const llama_model& m, llama_model& host) const;
  // Sets the master weights (and the model's compute copy) from a host model: resume of a device run.
  void load_master(llama_model& m, const llama_model& host);

 private:
  llama_weights master_;  // packed device models in bf16 only; else empty (the model is the master)
  llama_weights m_, v_;
  // ZeRO-1: m, v and (bf16) the master weights of this rank's range only, flat f32 on the model's device.
  optimizer_shard sh_;
  Tensor shard_master_, shard_m_, shard_v_;
  dist::range mine() const { return sh_.ranges[size_t(sh_.comm->rank())]; }
  double step_sharded(llama_model& m, llama_weights& grads, float lr);
  void load_master_range(llama_model& m, const llama_model& host);  // this rank's master weights from host
  const llama_weights& master(const llama_model& m) const { return master_.flat.empty() ? m.w : master_; }
};

// Cosine schedule with linear warmup: lr at step (0-based) of total, decaying to min_ratio * lr_max.
float cosine_lr(int64_t step, int64_t warmup, int64_t total, float lr_max, float min_ratio = 0.1f);

}  // namespace gsa
