// Embedding lookup: y (T, C) = table (V, C)[ids[t]]. Forward overwrites y; backward ACCUMULATES into dtable.
// ids are trusted to lie in [0, V): the caller validates them once where they enter (tokenizer / data loader).
#include <algorithm>
#include <cstring>

#include "backend/cpu/ops.h"

namespace gsa::cpu {

void embedding_forward(float* y, const int32_t* ids, const float* table, int T, int C) {
#pragma omp parallel for schedule(static) if (int64_t(T) * C >= (1 << 16))
  for (int t = 0; t < T; t++)
    std::memcpy(y + int64_t(t) * C, table + int64_t(ids[t]) * C, sizeof(float) * C);
}

void embedding_backward(float* dtable, const float* dy, const int32_t* ids, int T, int C) {
  if (!dtable) return;
  // A token id may repeat, so rows of dtable can collide: split over columns instead, which never races.
  constexpr int col_block = 64;
  const int n_blocks = (C + col_block - 1) / col_block;
#pragma omp parallel for schedule(static) if (int64_t(T) * C >= (1 << 16))
  for (int b = 0; b < n_blocks; b++) {
    const int c0 = b * col_block, c1 = std::min(C, c0 + col_block);
    for (int t = 0; t < T; t++) {
      float* dst = dtable + int64_t(ids[t]) * C;
      const float* src = dy + int64_t(t) * C;
      for (int c = c0; c < c1; c++) dst[c] += src[c];
    }
  }
}

}  // namespace gsa::cpu
