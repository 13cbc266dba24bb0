// Internal seam between the host-side checks (decode-attention.cpp, plain C++ that may throw gsa::error) and
// the kernels (decode-attention.cu, compiled by nvcc without fmt). Not part of the public API.
// Workspace layout when num_splits > 1 (f32): acc (B*Hq*S, D) then (max_log2, sum) pairs (B*Hq*S, 2); partial
// (b, hq, s) is row (b*Hq + hq)*S + s. max is in log2 units (scores are pre-scaled by log2(e)).
#pragma once
#include <cstdint>

#include "backend/cuda/decode-attention.h"

namespace gsa::cuda::detail {

// Launches the split kernel (the tensor-core one when tensor_cores) and, when num_splits > 1, the combine kernel. The params must already have been
// checked (decode_supported, buffers present). Returns a cudaError_t value (0 = success).
int launch_decode(const decode_params& p, int num_splits, int64_t keys_per_split, bool async_copy, bool tensor_cores,
                  void* workspace, void* stream);

}  // namespace gsa::cuda::detail
