// AdamW over a model's parameters with global-norm clipping. State (m, v, step) is saved beside a checkpoint
// for bit-exact resume. Gradients come from backward() (which accumulates): the trainer zeroes them per step.
#pragma once
#include <string>
#include <vector>

#include "backend/cpu/ops.h"
#include "model/llama.h"

namespace gsa {

class adamw_optimizer {
 public:
  cpu::adamw_params hp;
  float max_grad_norm = 1.0f;  // <= 0: no clipping
  int64_t step_count = 0;

  explicit adamw_optimizer(const llama_model& m);
  // One update with learning rate lr. Weight decay applies to matrices only (not norms, biases, embeddings'
  // rows are matrices and do decay, as in the common GPT recipe). Returns the gradient norm before clipping.
  double step(llama_model& m, llama_weights& grads, float lr);

  // m and v as named tensors ("<param>.exp_avg", "<param>.exp_avg_sq"), for checkpoints.
  std::vector<std::pair<std::string, Tensor>> state(const llama_model& m) const;
  void load_state(const llama_model& m, const std::vector<std::pair<std::string, Tensor>>& named);

 private:
  std::vector<Tensor> m_, v_;
};

// Cosine schedule with linear warmup: lr at step (0-based) of total, decaying to min_ratio * lr_max.
float cosine_lr(int64_t step, int64_t warmup, int64_t total, float lr_max, float min_ratio = 0.1f);

}  // namespace gsa
