// The CUDA backend: the op interface (backend/backend.h) over backend/cuda/ops.h and backend/cuda/attention.h,
// on the process's CUDA context (runtime.h). Created through gsa::get_backend(device::cuda, act).
#pragma once
#include <memory>

#include "backend/backend.h"

namespace gsa::cuda {

// Throws gsa::error (what to change) when there is no usable GPU or act is not bf16 / f32.
std::unique_ptr<backend> make_backend(dtype act);

}  // namespace gsa::cuda
