#include "dist/shard.h"

#include <algorithm>

#include "core/error.h"

namespace gsa::dist {

range batch_slice(int64_t global_batch, int world, int rank) {
  GSA_ASSERT(world >= 1 && rank >= 0 && rank < world && global_batch >= 0);
  const int64_t base = global_batch / world, extra = global_batch % world;
  const int64_t begin = rank * base + std::min<int64_t>(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

std::vector<range> shard_ranges(int64_t n, int world, int64_t align) {
  GSA_ASSERT(world >= 1 && n >= 0 && align >= 1);
  const int64_t units = (n + align - 1) / align;  // aligned blocks, the last one possibly short
  std::vector<range> out;
  for (int r = 0; r < world; r++) {
    const range u = batch_slice(units, world, r);
    out.push_back({std::min(n, u.begin * align), std::min(n, u.end * align)});
  }
  return out;
}

range intersect(range r, int64_t lo, int64_t hi) {
  const int64_t b = std::max(r.begin, lo), e = std::min(r.end, hi);
  return b < e ? range{b, e} : range{b, b};
}

}  // namespace gsa::dist
