// The CUDA backend's decode lists (backend.h prepare_decode_lists / decode_attention_lists), kept out of
// cuda-backend.cpp: prepare uploads a row's description once per step; run selects, expands and attends.
#pragma once
#include <memory>

#include "backend/backend.h"

namespace gsa::cuda {

// Null where the kernels do not cover the description (top-p selection, unsupported shapes): the host selects.
std::shared_ptr<const void> prepare_lists(backend& be, const decode_lists& d, const void* previous);
// Every call's row in one launch per kernel: the flat selections' scores and top-k, their expansion, and one
// split-K decode over every row (decode_seq: each row with its own pool and lists); hierarchical selections
// walk row by row first.
void run_lists_batch(dtype act, Tensor& out, const Tensor& q, int page_rows, std::vector<backend::lists_call>& calls);

}  // namespace gsa::cuda
