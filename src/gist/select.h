// Chunk selection for selective unfolding (DESIGN 1.3) and its top-down hierarchical form (DESIGN 1.4). The
// algorithm-level reference: plain loops over float arrays, no backend code. Score layouts are row-major
// (Hq, n) with the candidate index fastest; query head h belongs to KV head h / (Hq / Hkv).
//
// Rules:
// * Candidates are chunks 0..n_candidates-1: complete chunks before the query's local window
//   (candidate_count). Incomplete chunks and local-window chunks are never scored.
// * fixed: top-k per query head with k = min(topk, n). adaptive: k = adaptive_k below. top_p: per head, the
//   smallest set (by descending score) whose softmax mass over the candidates reaches top_p (at least one).
// * Union (default): each query head of a GQA group selects; the KV head unfolds the union. group_scoring:
//   the group's scores are summed per chunk and one selection (top-k, or top-p over the softmax of the sums)
//   is made per KV head.
// * Ties: the lower chunk index wins (order = score descending, then index ascending); NaN scores rank last.
// Results are per KV head, ascending chunk ids.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "gist/config.h"

namespace gsa::gist {

// Chunks a query in chunk `query_chunk` may unfold: [0, result), i.e. complete chunks before its local window.
int candidate_count(int query_chunk, int n_complete_chunks, int local_chunks);

struct stream;
// Whether training lets row `row` of s unfold at all (the trainer's selection, per row or per chunk block): a
// level-0 row (raw token or level-0 gist) of a chunk with a candidate. n_complete_chunks: complete_chunk_count(s).
bool row_unfolds(const stream& s, int row, int n_complete_chunks, int local_chunks);

// Adaptive k of the released code: k = L_raw / r / group_size / c + 1, with L_raw = raw tokens before the
// query, c = c_0, r = cfg.ratio() = c_0 c_1 ... c_{L-1} / g (one level: c_0 / g), evaluated exactly as
// floor(L_raw * g / (span * c * group_size)) + 1 with span = c_0 c_1 ... (r need not be an integer); so the
// union over the group attends about L_raw / r raw tokens per KV head at any number of levels. Capped at 25%
// of the candidates, rounded up (ceil(n / 4)), so that one chunk may be unfolded as soon as there is one
// candidate (the +1 says "at least one"); 0 when there is no candidate.
int adaptive_k(int64_t raw_before, const gsa_config& cfg, int group_size, int n_candidates);
// k of cfg.select for n candidates: fixed -> min(topk, n); adaptive -> adaptive_k; top_p -> n (an upper bound).
int select_k(const gsa_config& cfg, int64_t raw_before, int group_size, int n_candidates);

// Selection from scores (Hq, n) with count k (ignored for top_p): per KV head, ascending indices into 0..n-1.
// Uses cfg.select (top_p vs count), cfg.top_p and cfg.group_scoring.
std::vector<std::vector<int32_t>> select_top(const float* scores, int Hq, int Hkv, int n, int k,
                                             const gsa_config& cfg);

// Flat chunk selection for a query (or query block) with raw_before raw tokens before it.
std::vector<std::vector<int32_t>> select_chunks(const float* scores, int Hq, int Hkv, int n_candidates,
                                                int64_t raw_before, const gsa_config& cfg);

// s_h(u) = max over the block's Tq queries and the unit's g gists of (q_h . k_gist) / sqrt(D). Overwrites
// scores (Hq, n_units). q (Tq, Hq, D); k (Tk, Hkv, D) over stream positions; gist_begin[u] = stream position
// of unit u's first gist (its g gists are contiguous). Units may be chunks (level 0) or higher-level units.
void score_units(float* scores, const float* q, int Tq, int Hq, const float* k, int Tk, int Hkv, int D,
                 const int32_t* gist_begin, int n_units, int g);

// The fast form of score_units (equal bit for bit): gist keys kept transposed in tiles of score_tile gists per KV
// head, (ceil(n_gists / score_tile), D, score_tile), gist i's element d at [i / T][d][i % T] (T = score_tile; the
// lanes past the last gist are zero), so q . k for T consecutive gists is one unit-stride vector loop over d in
// which each lane sums over d in score_units' order (the project builds with -ffp-contract=off). A store's unit u
// owns gists [u g, (u + 1) g). The decode cache keeps such tiles (kv::kv_cache::gist_key_tiles); the training
// selection builds them per call (gist_key_tiles).
constexpr int score_tile = 16;
// out[i * ld + (u - u0)] = max over r < g of (q_i . k_{u g + r}) / sqrt(D), for query heads i < G (q (G, D),
// contiguous) and units u in [u0, u1) of one KV head's tiles. Overwrites out.
void score_unit_range(float* out, size_t ld, const float* q, int G, int D, const float* tiles, int g, int u0, int u1);
// The tiles of n units' gists (unit u's g gists at stream positions gist_begin[u] + r) of k (Tk, Hkv, D): [h] per
// KV head in the layout above.
std::vector<std::vector<float>> gist_key_tiles(const float* k, int Tk, int Hkv, int D, const int32_t* gist_begin,
                                               int n, int g);

// Hierarchical (top-down) selection. score(level, kv_head, units, out) writes the scores of the given
// level-`level` units (ascending ids) for the group_size query heads of kv_head: out (group_size, units.size()).
using unit_scorer = std::function<void(int level, int kv_head, const std::vector<int32_t>& units, float* out)>;

struct hier_selection {
  std::vector<std::vector<int32_t>> chunks;  // (Hkv) selected candidate chunks, ascending
  int64_t keys_scored = 0;                   // gist keys read: units scored x g, summed over KV heads
};

// Works on the candidate prefix [0, n_candidates): a level-l unit takes part only if all its chunks are
// candidates. Per KV head, from the top level down: score the top-level units, keep k_per_level[L-1] of them
// (select_top, so union / group / top-p apply within the group), then at each lower level score the children
// of the kept units plus the "loose" units whose parent unit is not whole, keep k_per_level[l], ...; the kept
// level-0 units are the chunks. With every k unlimited this selects every candidate.
// `select` (optional) replaces select_top at each level: given one KV head's scores (group_size, n) and k, it
// writes the kept indices (ascending, into 0..n-1) to out; the fast path (gist/fast-select.h) plugs its
// bounded top-k in here, so the walk itself exists once.
using level_selector = std::function<void(const float* scores, int group_size, int n, int k, std::vector<int32_t>& out)>;
hier_selection select_hierarchical(int n_candidates, int Hq, int Hkv, const std::vector<int>& k_per_level,
                                   const gsa_config& cfg, const unit_scorer& score,
                                   const level_selector& select = {});

// One selecting block of a training plan or an unfolding prefill (model/gsa-plans.cpp's select_for_blocks on the
// host, and the reference of the GPU selection): the block's rows q_rows (rows, Hq, D) in level-0 chunk `chunk`,
// n_cand candidate chunks, keys k (Tk, Hkv, D) at stream positions, gist_begin = stream::unit_gist_tables.
// One level, or cfg.unfold_walk false: score_units over the n_cand chunks, then select_chunks. Several levels with
// cfg.unfold_walk: every level's whole units [0, n_cand / P_l) are scored the same way and select_hierarchical
// walks them top-down with hierarchy_k (the decode walk of hgsa, over scores computed up front). Per KV head,
// ascending chunk ids. scores (optional) gets level l's scores (Hq, n_cand / P_l) at [l] (only level 0 when flat).
// tiles (optional): [l][h] = gist_key_tiles of level l's units (at least the block's whole ones); the scores are
// then computed from them (score_unit_range: the same values; a zero's sign may differ in blocks of several rows),
// and a walk without `scores` scores level 0 only at the units it allows (the children of the level-1 units it
// kept and the loose ones), so a row's selection costs about k c_1 level-0 units, not n_cand.
using level_tiles = std::vector<std::vector<std::vector<float>>>;
std::vector<std::vector<int32_t>> select_block(const float* q_rows, int rows, const float* k, int Tk, int Hq, int Hkv,
                                               int D, const std::vector<std::vector<int32_t>>& gist_begin, int chunk,
                                               int n_cand, const gsa_config& cfg,
                                               std::vector<std::vector<float>>* scores = nullptr,
                                               const level_tiles* tiles = nullptr);
// Whether select_block walks for cfg.
inline bool walks(const gsa_config& cfg) { return cfg.levels() > 1 && cfg.unfold_walk; }

// k per level for select_hierarchical: fixed -> topk at every level; adaptive -> the flat adaptive_k at every
// level (a beam as wide as the number of chunks wanted, so each chunk may come from a different group);
// top_p -> unused (the count is taken by mass).
std::vector<int> hierarchy_k(const gsa_config& cfg, int64_t raw_before, int group_size, int n_candidates);

}  // namespace gsa::gist
