// Decode attention over a gathered key set: one query row (Hq, D) attends, per KV head, to the listed cache rows
// (any order, read through the cache's page table, so only the listed rows are touched). GQA: query head h
// uses KV head h / (Hq / Hkv). Overwrites out (Hq, D). Split-K over the list (flash-decoding style): each part
// keeps a running max, sum and unnormalised output, merged at the end, so long lists use every thread.
// If weights != nullptr, weights[h] (size of list h) receives the attention probabilities summed over the
// GQA group of KV head h (H2O accumulates these).
#pragma once
#include <vector>

#include "kv/kv-cache.h"

namespace gsa::infer {

void decode_attention(float* out, const float* q, const kv::kv_cache& cache, int layer,
                      const std::vector<std::vector<kv::kv_addr>>& lists, int Hq,
                      std::vector<std::vector<float>>* weights = nullptr);

}  // namespace gsa::infer
