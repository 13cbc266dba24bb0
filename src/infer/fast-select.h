// Decode-time gist scoring and chunk selection: the fast path of gist/select.h for one query row, giving the
// same results bit for bit (tests/infer/test-fast-select.cpp checks every function against its gist/ reference).
//  * Scoring reads the cache's transposed gist-key tiles (kv::kv_cache::gist_key_tiles), so q . k for 16
//    consecutive gists is one unit-stride vector loop over d; each lane sums over d in the reference's order, so
//    the scores equal gist::score_units exactly (no reassociation).
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

// out[i * ld + (u - u0)] = max over r < g of (q_i . k_{u g + r}) / sqrt(D), for query heads i < G (q (G, D),
// contiguous) and units u in [u0, u1) of a store whose tiles (one KV head) are `tiles` (kv-cache.h layout).
// Overwrites out.
void score_unit_range(float* out, size_t ld, const float* q, int G, int D, const float* tiles, int g, int u0, int u1);

// The same for an ascending unit list (runs of consecutive units are scored as ranges): out (G, units.size()).
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
