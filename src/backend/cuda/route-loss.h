// The routing distillation loss on CUDA (contract: backend/route-loss.h; kernels: route-loss.cu).
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace gsa::cuda {

struct route_args {
  int R = 0, n_max = 0, g = 1, Hq = 0, Hkv = 0, D = 0;
  float scale = 1, grad_scale = 0;
};

// q (T, Hq, D), k (T, Hkv, D) of type t on the device; dq, dk accumulate; table: route_spec::host_table() on the
// device; *kl (device f32) += the mean KL. On ctx().stream.
void route_loss(void* dq, void* dk, const void* q, const void* k, const int32_t* table, float* kl,
                const route_args& a, dtype t);

}  // namespace gsa::cuda
