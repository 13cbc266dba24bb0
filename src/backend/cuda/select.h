// Chunk selection for selective unfolding (DESIGN 1.3, 1.5) on the GPU: the per-block gist scoring of
// gist::score_units followed by gist::select_chunks, for every selecting block of a training plan at once, so q
// and k never leave the device. Host-side header: no CUDA types, callers pass device pointers as void*.
//
// Contract (same as src/model/gsa-plans.cpp's select_for_blocks on the CPU):
// * For blocks b in [b_begin, n_blocks): rows [block_q[b], block_q[b+1]) of q. A block whose first row is a gist
//   of level > 0, or that has no candidate, does not unfold. The candidates of a block whose first row is in chunk
//   m are chunks [0, gist::candidate_count(m, n_complete, cfg.local_chunks)).
// * s_h(u) = max over the block's rows and the unit's g gists of (q_h . k_gist) / sqrt(D), k at stream positions
//   chunk_gist_begin[u] + [0, g).
// * k = gist::select_k(cfg, m * c_0, Hq / Hkv, n_candidates) (fixed or adaptive); per KV head the union over its
//   query heads of each head's top k, or with cfg.group_scoring one top k of the group's summed scores.
//   Ties: the lower chunk index wins; NaN ranks as -inf (select.h of gist). select = top_p is not supported yet
//   (gsa::error).
// * Output: selected[(b - b_begin) * Hkv + h] = ascending chunk ids (empty for blocks that do not unfold);
//   unfolds[b] = 1 for the blocks that unfold (with at least one candidate, even if k = 0), else 0. Both vectors
//   are overwritten (resized to (n_blocks - b_begin) * Hkv and n_blocks).
//
// Arithmetic: every dot product is f32, summed in order d = 0..D-1 with separately rounded multiplies and adds
// (no FMA), then times the host's 1/sqrt(float(D)): the same operations as gist::score_units built with
// -ffp-contract=off, so the scores (and so the selection) equal the CPU's bit for bit when the CPU reads the same
// values (bf16 inputs widened exactly). Group sums are f32 in head order, as in gist::select_top.
// Except by default for per-token selection (one-row blocks) on bf16 q and k with D 64 / 128: those scores run on
// tensor cores (select-mma.cu, ~10x cheaper), whose sums are not in feature order: identical inputs still score
// identically (ties, passes), integer-valued data exactly, but two candidates within ~1e-6 (relative) at the k-th
// place may swap against the CPU. select_args::exact_scores or GSA_SELECT_EXACT=1 keeps the exact kernel.
//
// Cost: one upload of the small host tables, two kernels per batch of blocks (scores, then top-k + union), one
// device -> host copy of the ids per batch. Score scratch is bounded (batches of blocks), so any length works.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "backend/cuda/decode-lists.h"
#include "core/dtype.h"
#include "gist/config.h"

namespace gsa::cuda {

struct select_args {
  // Device tensors q (T, Hq, D) of stream rows [q_row0, q_row0 + T) and k (Tk, Hkv, D) of stream rows [0, Tk)
  // (Tk 0: T, with q_row0 0 the whole sequence), dtype f32 or bf16; heads and dims dense, rows q_stride_t /
  // k_stride_t elements apart (0: dense, Hq * D and Hkv * D; e.g. 3C-wide rows of a fused qkv). A pass of a
  // chunked prefill: q_row0 > 0, the selecting blocks inside its rows (row_selection: q_row0 0, with block_q,
  // row_level and row_chunk rebased to the pass's first row instead).
  const void* q = nullptr;
  const void* k = nullptr;
  dtype type = dtype::bf16;
  int T = 0, Hq = 0, Hkv = 0, D = 0;
  int q_row0 = 0, Tk = 0;
  int64_t q_stride_t = 0, k_stride_t = 0;
  // Host tables.
  const int32_t* block_q = nullptr;           // (n_blocks + 1) first stream row of each block, then its end
  int n_blocks = 0;
  int b_begin = 0;                            // first block that may select
  const int8_t* row_level = nullptr;          // (T) stream::level
  const int32_t* row_chunk = nullptr;         // (T) stream::chunk
  const int32_t* chunk_gist_begin = nullptr;  // (n_chunks) stream::chunk_gist_begin
  int n_chunks = 0;
  int n_complete = 0;                         // gist::complete_chunk_count(stream)
  const gist::gsa_config* cfg = nullptr;
  // Scores held on the device at once (floats); blocks are launched in batches under it (a batch holds at least
  // one block). 0: the default, 256 Mi (1 GiB). Tests set it small to exercise batching.
  int64_t max_scratch_scores = 0;
  // Per-token selection on bf16: score with the exact f32 kernel (bit-equal to the CPU) instead of tensor cores
  // (see "Arithmetic" above). GSA_SELECT_EXACT=1 in the environment sets it for every selection.
  bool exact_scores = false;
};

// Selects as described above; returns the number of unfolded (block, KV head, chunk) triples, i.e. the sum of
// the sizes of `selected` (for gsa_plan_stats::unfolded_chunks). Runs on ctx().stream and synchronises. Throws
// gsa::error on bad arguments, unsupported options (top_p) or a CUDA failure.
int64_t select_blocks(const select_args& a, std::vector<std::vector<int32_t>>& selected,
                      std::vector<uint8_t>& unfolds);

// The same selection kept on the device as dense per-row tables (backend/row-unfold.h's layout), for plans
// whose selecting blocks are what the caller wants per row (a per-row split: one row each): every row of a
// selecting block gets the block's ids. Two steps, so that the caller can size the tables in between: the
// constructor builds the block table on the host (checks included), run() launches. t_count (T, Hkv) and t_ids
// (T, Hkv, cap) are device i32 buffers; t_count must be zeroed by the caller (rows that do not select keep 0);
// cap >= cap(). key_begin / key_end (n_chunks, device) give each chunk's key count for the totals. totals (2 u64,
// device, zeroed by the caller) gets the selected (row, head, chunk) triples and their keys. Nothing is copied
// to the host; runs on ctx().stream without synchronising. a's host tables must outlive the object.
struct selection_plan;
class row_selection {
 public:
  explicit row_selection(const select_args& a);
  // The same block table for other q and k (another layer): every field of b but q and k must equal the ones
  // this was built with (gsa::error otherwise). Shares the host tables: no rebuild.
  row_selection rebound(const select_args& b) const;
  int cap() const;  // id slots per (row, KV head) the tables need
  // key_begin / key_end / gist_end / listed: the row unfold's chunk tables (row-unfold.h; the last two null for
  // one gist level), for the totals.
  void run(int32_t* t_count, int32_t* t_ids, int cap, const int32_t* key_begin, const int32_t* key_end,
           const int32_t* gist_end, const int32_t* listed, unsigned long long* totals) const;

 private:
  row_selection(const select_args& a, std::shared_ptr<const selection_plan> p) : a_(a), plan_(std::move(p)) {}
  select_args a_;
  std::shared_ptr<const selection_plan> plan_;
};

// Launch seam between select.cpp (checks, tables, batching) and select.cu (kernels). Not a public API.
namespace select_detail {

// One selecting block, offsets relative to the batch it is launched in.
struct block_desc {
  int32_t row0 = 0;       // first row of the block in q
  int32_t rows = 0;       // rows of the block
  int32_t n_cand = 0;     // candidates: chunks [0, n_cand)
  int32_t k = 0;          // per-head (or per-group) count, 0 <= k
  int32_t cap = 0;        // id slots per KV head: min(n_cand, k * (group_scoring ? 1 : G))
  int32_t pad = 0;
  int64_t score_off = 0;  // scores (Hq, n_cand) at scores + score_off
  int64_t id_off = 0;     // ids (Hkv, cap) at ids + id_off
};

// scores[score_off + h * n_cand + u] = s_h(u), OVERWRITTEN. rows_tile: q rows staged in shared memory at a
// time (rows_tile * D floats of dynamic shared memory). vec: q and k rows are 16-byte aligned (vector loads).
// q_st / k_st: row strides in elements. one_row: every block has one row (per-token selection), so blocks are
// scored several per CTA with the group's heads together (score_rows_kernel, D 64 / 128 with vec).
void launch_scores(const block_desc* blocks, int n_blocks, const void* q, const void* k, bool bf16, int Hq,
                   int Hkv, int D, int64_t q_st, int64_t k_st, float scale, const int32_t* gist_begin, int g, float* scores, int rows_tile,
                   bool vec, bool one_row, void* stream);

// The same scores for one-row blocks on tensor cores (select-mma.cu): bf16 q and k, 16-byte aligned rows, D 64 or
// 128 (scores_mma_supported). Not bit-equal to the CPU's: near-ties at the k-th place may swap.
bool scores_mma_supported(int D, int Hq, int Hkv);
void launch_scores_mma(const block_desc* blocks, int n_blocks, const void* q, const void* k, int Hq, int Hkv, int D,
                       int64_t q_st, int64_t k_st, float scale, const int32_t* gist_begin, int g, float* scores,
                       void* stream);

// Per (block, KV head): ids[id_off + h * cap + i], i < counts[block * Hkv + h], ascending; both OVERWRITTEN.
// With group_scoring the first row of each group in scores is overwritten by the group sum. max_cand: the
// largest n_cand of the launch (sizes the shared-memory bitmask).
// one_row: one warp per (block, KV head) instead of a CTA (per-token selection's many short lists).
void launch_topk(const block_desc* blocks, int n_blocks, float* scores, int Hq, int Hkv, bool group_scoring,
                 int32_t* ids, int32_t* counts, int max_cand, bool one_row, void* stream);

// The training walk (gist::select_block with several levels and cfg.unfold_walk): per (block, KV head), one warp
// walks the levels from the top as gist::select_hierarchical does, over scores launch_scores wrote for every whole
// unit of every level (level 0 excepted with score0, below): level l's allowed units are the children of the units kept one level up plus the loose
// ones (whole at l, parent not whole), and select_top's union (or group) top min(k, allowed) keeps some of them.
// The kept level-0 units are the block's ids (ids / counts as launch_topk writes them). level[l]: the block
// table of level l (n_cand = whole level-l units, score_off into scores[l]; level 0's k, cap and id_off are the
// block's), fan[l] (l >= 1) = cfg.chunk[l]. max_cand: the largest level-0 n_cand (at most walk_max_candidates).
// score0 (one-row blocks): level 0 is not in scores[0] but scored inside the walk, only at the units the walk
// allows there (children of the level-1 units it kept, and the loose ones): gist::score_units' exact arithmetic
// (f32, d in order, no FMA), q row0 of each block, level-0 gists at gist0[u] + [0, g). m_max bounds a block's
// allowed level-0 units (walk_level0_bound); it sizes the per-warp shared memory. mma (bf16, vec, D 64 / 128,
// G <= 8): those scores on tensor cores instead, every head of the group from one read of each key (bf16 products
// exact in f32, the sums in the tensor cores' order: the "Arithmetic" note above), when their per-warp shared
// memory (walk_warp_smem with mma) fits; launch_walk falls back to the exact scalar scores otherwise.
struct walk_args {
  static constexpr int max_levels = 8;
  int levels = 0;
  const block_desc* level[max_levels] = {};
  float* scores[max_levels] = {};
  int fan[max_levels] = {};
  bool score0 = false;
  const void* q = nullptr;
  const void* k = nullptr;
  bool bf16 = false, vec = false, mma = false;
  int D = 0, g = 1, m_max = 0;
  int64_t q_st = 0, k_st = 0;
  float scale = 0;
  const int32_t* gist0 = nullptr;
};
constexpr int walk_max_candidates = 16 * 1024;
// Level-0 units a block's walk can allow: the level-1 units it keeps (at most heads x k, heads = 1 with group
// scoring, else G; at most n1 of them) times fan = cfg.chunk[1], plus fewer than fan loose ones; at most n0.
inline int64_t walk_level0_bound(int64_t n0, int64_t n1, int64_t heads, int64_t k, int64_t fan) {
  const int64_t kept1 = std::min(n1, heads * std::max<int64_t>(0, k));
  return std::min(n0, kept1 * fan + fan - 1);
}
// Shared memory per warp of the walk (bytes): the radix histogram, two masks over max_cand units, and with score0
// the allowed list, its scores (every head's with mma), its mask and (scalar scores) the row's G query vectors.
inline size_t walk_warp_smem(int max_cand, bool score0, int m_max, int G, int D, bool mma = false) {
  const size_t words = size_t(max_cand + 31) / 32;
  size_t ints = 256 + 2 * words;
  if (score0 && mma) ints += size_t(m_max) * (1 + G) + size_t(m_max + 31) / 32;
  else if (score0) ints += 2 * size_t(m_max) + size_t(m_max + 31) / 32 + size_t(G) * D;
  return ints * 4;
}
constexpr size_t walk_smem_max = 160 * 1024;  // per CTA; the walk scores level 0 itself only below it
void launch_walk(const walk_args& w, int n_blocks, int Hq, int Hkv, bool group_scoring, int32_t* ids, int32_t* counts,
                 int max_cand, void* stream);

// Per selecting block (one warp): the block's ids into the dense per-row tables of select_rows, totals added.
void launch_scatter_rows(const block_desc* blocks, int n_blocks, const int32_t* ids, const int32_t* counts, int Hkv,
                         int cap, const int32_t* key_begin, const int32_t* key_end, const int32_t* gist_end,
                         const int32_t* listed, int32_t* t_count, int32_t* t_ids, unsigned long long* totals,
                         void* stream);

// The decode walk of gist::select_hierarchical for one query row (backend/decode-lists.h, hgsa): per level from
// the top, the children of the kept units plus the loose ones, scored as gist::score_units does (f32, d in
// order, no FMA) at their rows of the pool, then select_top's union or group top k[l] per KV head (ties: lower
// index). Writes out (decode_lists' `selected` layout): count [h], ascending chunk ids [Hkv + h cap ...], units
// scored [Hkv (1 + cap) + h]. max_n >= every level's unit count (whole[0] = the candidate count bounds it).
struct hier_args {
  static constexpr int max_levels = 8;
  int levels = 0;
  const int32_t* unit_row[max_levels] = {};  // device: first gist row of each whole unit of level l
  int whole[max_levels] = {};
  int k[max_levels] = {};
  int chunk[max_levels] = {};                // children per unit of level l (l >= 1)
  int cap = 0, g = 1, Hq = 0, Hkv = 0, D = 0, max_n = 0;
  int64_t k_st = 0;                          // pool row stride in elements (Hkv * D)
  float scale = 0;
  bool group = false;
};
// Scratch: scores hier_scratch_floats(a) floats, units hier_scratch_ints(a) ints. Per level one wide score
// launch (the top level over every whole unit, a lower level over each KV head's list), the top-k on one CTA
// per query head into a mask, and one CTA per KV head that compacts it and builds the next level's list.
inline int64_t hier_scratch_floats(const hier_args& a) {
  return int64_t(a.Hq) * (a.whole[a.levels - 1] + a.max_n);
}
inline int64_t hier_scratch_ints(const hier_args& a) {
  return int64_t(a.Hkv) * (3 * a.max_n + 2 + (a.max_n + 31) / 32);
}
void launch_hierarchical(const hier_args& a, const void* q, const void* pool, bool bf16, float* scores,
                         int32_t* units, int32_t* out, void* stream);

// The flat selection of every selecting row of a batched decode step (lists_row, decode-lists.h) in two launches:
// each row's scores[h n + u] = max over r < g of (q_h . k[gist_row[u] + r]) * scale (grid (units, Hq, rows),
// one thread per unit and head: score_units' arithmetic), its mask cleared, then its top-k (select_top's rule:
// with group scoring the group's f32 sum, row h G of each group overwritten with it, one top k per KV head, else
// each query head's top k) ORed into its mask (Hkv, ceil(n / 32)): one CTA per query head and row, the keys
// staged in shared memory up to 48 Ki candidates. rows: device array of n_rows; max_cand >= every row's n_cand.
// The rows share the heads (Hq, Hkv, D), the dtype and the pool row stride Hkv * D.
// From max_cand = topk_cluster_min (default 4096) up to 128 Ki candidates, the top-k runs on a cluster of 8 CTAs
// per head (each a slice of the candidates; same result); so does each level of launch_hierarchical's walk.
void launch_decode_rows(const lists_row* rows, int n_rows, int max_cand, bool bf16, int Hq, int Hkv, int D,
                        void* stream);
// Sets the candidate count from which launch_decode_rows' top-k runs on clusters (tests: 1 sends every row
// there); returns the previous value. Not thread-safe: for tests and benchmarks.
int set_topk_cluster_min(int n);

// Largest candidate count launch_topk handles (its bitmask lives in 32 KiB of shared memory, under the 48 KiB a
// kernel gets without opting in): c_0 = 4 up to a million tokens.
constexpr int max_candidates = 32 * 1024 * 8;

}  // namespace select_detail

}  // namespace gsa::cuda
