// Decode-time gist scoring and chunk selection: the fast path of gist/select.h for one query row, giving the
// same results bit for bit (tests/infer/test-fast-select.cpp checks every function against its gist/ reference).
//  * Scoring reads the cache's transposed gist-key tiles (kv::kv_cache::gist_key_tiles) through
//    gist::score_unit_range, so the scores equal gist::score_units exactly.
//  * Count rules (fixed, adaptive) select by a bounded insertion buffer (k <= 64) or nth_element under the
//    reference order (score descending, NaN last, then index ascending): a strict total order, so the top-k set
//    is the one the reference's full stable sort gives. top_p needs the ranked prefix: it calls gist/ directly.
// Score layouts are row-major (rows, n); query head h of a KV head's group i is row i of that KV head's block.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "gist/config.h"
#include "gist/select.h"

namespace gsa::infer {

using gist::score_unit_range;  // scoring over a store's transposed gist-key tiles (gist/select.h)

// score_unit_range for an ascending unit list (runs of consecutive units are scored as ranges): out
// (G, units.size()).
void score_unit_list(float* out, const float* q, int G, int D, const float* tiles, int g,
                     const std::vector<int32_t>& units);

// Appends to out the indices of the min(k, n) best scores of s (reference order above), in no particular order.
void top_k_append(const float* s, int n, int k, std::vector<int32_t>& out);

// gist::select_top with the same contract: per KV head, ascending indices into 0..n-1.
void select_top_fast(const float* scores, int Hq, int Hkv, int n, int k, const gist::gsa_config& cfg,
                     std::vector<std::vector<int32_t>>& out);

// gist::select_hierarchical (its one top-down walk) with select_top_fast as the per-level selector: the same
// contract and result.
gist::hier_selection select_hierarchical_fast(int n_candidates, int Hq, int Hkv, const std::vector<int>& k_per_level,
                                              const gist::gsa_config& cfg, const gist::unit_scorer& score);

}  // namespace gsa::infer
