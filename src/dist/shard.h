// How a data-parallel group splits its work, as pure functions (tested on the CPU):
// * the global batch: every rank draws the same B samples of a step (the sampler's state stays the same on all
//   ranks, so a checkpoint does not depend on the number of GPUs) and computes only its contiguous slice, so
//   the union over the ranks, in rank order, is the batch one process would compute;
// * the optimizer state (ZeRO-1): rank r owns a contiguous range of the flat parameter buffer; the ranges cover
//   it exactly, in rank order, and begin on multiples of `align` elements (NCCL and 16-byte vector loads).
#pragma once
#include <cstdint>
#include <vector>

namespace gsa::dist {

struct range {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
  bool operator==(const range&) const = default;
};

// Rank `rank`'s samples of a step of `global_batch`: the first global_batch % world ranks take one more.
range batch_slice(int64_t global_batch, int world, int rank);

// Ranges of n elements for `world` ranks, each beginning on a multiple of `align` (the last ends at n); as equal
// as the alignment allows. A rank may get an empty range when n is small.
std::vector<range> shard_ranges(int64_t n, int world, int64_t align = 64);

// The part of r inside [lo, hi) (empty, begin = end, when they do not meet).
range intersect(range r, int64_t lo, int64_t hi);

}  // namespace gsa::dist
