// The fast path of gist/select.h's scoring and chunk selection, giving the same results bit for bit
// (tests/infer/test-fast-select.cpp checks every function against its select.h reference): decoding
// (infer/select-keys.cpp) and the training / prefill selection (select_block) run it.
//  * Scoring reads transposed gist-key tiles (the decode cache's kv::kv_cache::gist_key_tiles, or gist_key_tiles)
//    through score_unit_range, so the scores equal score_units exactly.
//  * Count rules (fixed, adaptive) select by nth_element over (rank value, index) pairs under the
//    reference order (score descending, NaN last, then index ascending): a strict total order, so the top-k set
//    is the one the reference's full stable sort gives. top_p needs the ranked prefix: it calls gist/ directly.
// Score layouts are row-major (rows, n); query head h of a KV head's group i is row i of that KV head's block.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "gist/config.h"
#include "gist/select.h"

namespace gsa::gist {

// score_unit_range for an ascending unit list (runs of consecutive units are scored as ranges): out
// (G, units.size()).
void score_unit_list(float* out, const float* q, int G, int D, const float* tiles, int g,
                     const std::vector<int32_t>& units);

// Appends to out the indices of the min(k, n) best scores of s (reference order above), in no particular order.
void top_k_append(const float* s, int n, int k, std::vector<int32_t>& out);

// select_top with the same contract: per KV head, ascending indices into 0..n-1.
void select_top_fast(const float* scores, int Hq, int Hkv, int n, int k, const gsa_config& cfg,
                     std::vector<std::vector<int32_t>>& out);

// select_hierarchical (its one top-down walk) with select_top_fast as the per-level selector: the same
// contract and result.
hier_selection select_hierarchical_fast(int n_candidates, int Hq, int Hkv, const std::vector<int>& k_per_level,
                                              const gsa_config& cfg, const unit_scorer& score);

}  // namespace gsa::gist
