// Random segment plans for the kernel and plan tests: a random key set per list, written as segments of both
// kinds (gist units wherever a random gist table's unit lies wholly inside the set and a coin says so, ranges of
// consecutive keys for the rest), in shuffled order (kernels must not assume an order).
#pragma once
#include <algorithm>
#include <vector>

#include "backend/cpu/attention.h"
#include "core/rng.h"

namespace gsa::test {

// A gist table over [0, Tk): g in {1, 2}; level 0 units at 3 + 5u, level 1 (if two levels) at 1 + 10u, so the
// levels never share a position.
inline void random_gist_table(cpu::attn_plan& p, rng& r, int Tk) {
  const int g = 1 + int(r.below(2)), levels = 1 + int(r.below(2));
  p.gists_per_unit = g;
  p.gist_ptr = {0};
  p.gist_pos.clear();
  for (int l = 0; l < levels; l++) {
    const int first = l == 0 ? 3 : 1, step = l == 0 ? 5 : 10;
    for (int pos = first; pos + g <= Tk; pos += step) p.gist_pos.push_back(pos);
    p.gist_ptr.push_back(int32_t(p.gist_pos.size()));
  }
}

// Appends one list holding exactly the keys k with in[k] != 0, and closes it.
inline void push_key_set(cpu::attn_plan& p, rng& r, std::vector<uint8_t> in) {
  std::vector<cpu::key_seg> segs;
  const int g = p.gists_per_unit;
  for (int l = 0; l + 1 < int(p.gist_ptr.size()); l++) {
    const int32_t* pos = p.gist_pos.data() + p.gist_ptr[l];
    const int n = p.gist_ptr[l + 1] - p.gist_ptr[l];
    int run = -1;  // first unit of the current run of units taken
    for (int u = 0; u <= n; u++) {
      bool take = u < n && r.below(4) != 0;
      for (int i = 0; take && i < g; i++) take = in[size_t(pos[u] + i)] != 0;
      if (take) {
        for (int i = 0; i < g; i++) in[size_t(pos[u] + i)] = 0;
        if (run < 0) run = u;
      } else if (run >= 0) {
        segs.push_back(cpu::gist_units(l, run, u));
        run = -1;
      }
    }
  }
  for (int j = 0; j < int(in.size());) {
    if (!in[size_t(j)]) {
      j++;
      continue;
    }
    int e = j;
    while (e < int(in.size()) && in[size_t(e)]) e++;
    segs.push_back(cpu::key_range(j, e));
    j = e;
  }
  for (size_t i = segs.size(); i > 1; i--) std::swap(segs[i - 1], segs[r.below(i)]);
  p.segs.insert(p.segs.end(), segs.begin(), segs.end());
  p.seg_ptr.push_back(int64_t(p.segs.size()));
}

// Blocks of 1..max_block rows; per (block, list) each key up to the block's last query position taken with
// probability density (10% of the lists empty).
inline cpu::attn_plan random_segment_plan(rng& r, int Tq, int Tk, int q_offset, int heads, int max_block,
                                          float density) {
  cpu::attn_plan p;
  p.heads = heads;
  random_gist_table(p, r, Tk);
  p.block_q = {0};
  while (p.block_q.back() < Tq) p.block_q.push_back(std::min(Tq, p.block_q.back() + 1 + int(r.below(max_block))));
  p.seg_ptr = {0};
  for (int b = 0; b < p.n_blocks(); b++)
    for (int h = 0; h < heads; h++) {
      std::vector<uint8_t> in(size_t(Tk), 0);
      const int last = std::min(Tk - 1, q_offset + p.block_q[b + 1] - 1);
      if (r.uniform() >= 0.1f)  // else: an empty list
        for (int j = 0; j <= last; j++) in[size_t(j)] = r.uniform() < density;
      push_key_set(p, r, std::move(in));
    }
  return p;
}

}  // namespace gsa::test
