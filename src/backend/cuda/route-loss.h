// The routing distillation loss on CUDA (contract: backend/route-loss.h; kernels: route-loss.cu).
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace gsa::cuda {

struct route_args {
  int R = 0, n_max = 0, g = 1, span = 1, Hq = 0, Hkv = 0, D = 0;
  float scale = 1, grad_scale = 0;
};

// q (T, Hq, D), k (T, Hkv, D) of type t on the device (T = T_len); dq, dk accumulate; table:
// route_spec::host_table() on the device; *kl (device f32) += the mean KL. On ctx().stream.
void route_loss(void* dq, void* dk, const void* q, const void* k, int T_len, const int32_t* table, float* kl,
                const route_args& a, dtype t);

// The most bytes of f32 logits (rows x Hq x T) one group of rows may hold (default 256 MiB); more rows run in
// several groups. Tests lower it to exercise the groups on small shapes.
int64_t& route_score_budget();

}  // namespace gsa::cuda
