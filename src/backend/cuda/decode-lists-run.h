// The CUDA backend's decode lists (backend.h prepare_decode_lists / decode_attention_lists), kept out of
// cuda-backend.cpp: prepare uploads a row's description once per step; run selects, expands and attends.
#pragma once
#include <memory>

#include "backend/backend.h"

namespace gsa::cuda {

// Null where the kernels do not cover the description (top-p selection, unsupported shapes): the host selects.
std::shared_ptr<const void> prepare_lists(backend& be, const decode_lists& d);
void run_lists(dtype act, Tensor& out, const Tensor& q, const Tensor& pool, int page_rows, const void* prepared,
               bool select, Tensor& selected);

}  // namespace gsa::cuda
