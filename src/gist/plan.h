// Attention plans (gsa::cpu::attn_plan, backend/cpu/attention.h) that realise the visibility rules of
// visibility.h for a whole stream: rows = stream positions (q_offset 0), keys = stream positions.
//
// Contract every plan here satisfies (the kernel applies key <= query itself): for each query q in block b and
// each KV head h,  { k in list(b, h) : k <= q } == { k : visible(q, k) }  (or the unfolding form of visible
// with that block's selected chunks for h). Lists hold no key after the block's last row and no key twice.
//
// Lists are segments (backend/attn-plan.h) read off the stream structure, never key by key: the sink and the
// local / own / unfolded chunks' tokens are ranges (overlaps, e.g. the sink inside chunk 0, are cut by
// merging ranges), the gists of each level one gist_units segment over the units visible, resolved through the
// plan's gist table (set_gist_table: unit u of level l -> unit_gist_position). A gist unit that a block's last row
// cuts in two (g > 1, a split inside a chunk's gists) becomes a range of its gists up to that row. Segments of a
// list are sorted by first key, so the kernels' expansion sees few ascending runs.
//
// Blocks of plan_compress: for each level-0 chunk m, one block of its raw tokens and level-0 gists (they share
// one view of the past), then one block per higher level l whose g gists follow chunk m (a level-l gist sees
// different keys: no raw tokens, no gists below level l-1). A trailing incomplete chunk is one block of raw
// tokens. Memory: O(1) segments per block (sink, local chunks, one per gist level) plus the table, O(n / c);
// an unfold plan adds one range per unfolded chunk (its raw tokens, and its level-0 gists right after them unless
// a gist segment holds them already): O(n k / c) for per-chunk blocks, O(n k) for per-row blocks.
#pragma once
#include <cstdint>
#include <vector>

#include "backend/cpu/attention.h"
#include "gist/config.h"
#include "gist/stream.h"

namespace gsa::gist {

// The plan's gist table for stream s: every level's units whose first gist is in the stream, g = gists per chunk.
void set_gist_table(cpu::attn_plan& plan, const stream& s, const gsa_config& cfg);

// Segments of the keys visible to the queries of chunk m of class `level` (-1 or 0: raw tokens and level-0 gists;
// l >= 1: the level-l gists after chunk m), restricted to keys <= last, sorted by first key; gist units refer to
// plan's gist table (set_gist_table(plan, s, cfg)). Overwrites out. O(levels + local + sink / c).
void compress_segments(std::vector<cpu::key_seg>& out, const cpu::attn_plan& plan, const stream& s,
                       const gsa_config& cfg, int chunk, int level, int last);
// The same keys expanded, ascending (decode builds one row's list with it). Overwrites out.
void compress_keys(std::vector<int32_t>& out, const stream& s, const gsa_config& cfg, int chunk, int level,
                   int last);

// Gist-mask plan (heads = 1). If split_at is in (0, n), a block that straddles it is cut there (same list),
// so rows >= split_at start a block (the context / suffix boundary).
cpu::attn_plan plan_compress(const stream& s, const gsa_config& cfg, int split_at = -1);

// The plan with every block whose first row is >= first_row cut into one block per row, each keeping the keys
// of its block up to that row (heads = 1 plans only). Per-row selection (gsa_config::select_per_token) builds
// its unfold plans on this.
cpu::attn_plan plan_split_rows(const cpu::attn_plan& base, int first_row = 0);

// Unfold plan (heads = n_kv_heads) from a compress plan: selected[b * n_kv_heads + h] = chunk ids (any order,
// duplicates allowed) that block b unfolds for KV head h; their raw tokens and level-0 gists join the list,
// and with cfg.gists_all every gist too. unfolds (per block, may be empty = all blocks) says which blocks
// unfold at all; a block that does not keeps its compress list and must have empty selections.
// With a block range [b_begin, b_end) (b_end < 0: to the end) only those blocks are built, as cpu::plan_blocks
// cuts a plan: rows rebased to block b_begin's first row r0 (the q_offset to run it at), keys stream positions,
// the gist table cut to the units before block b_end's first row; selected then holds (b_end - b_begin) *
// n_kv_heads lists and unfolds (if not empty) at least b_end flags. A pass of a chunked unfolding prefill.
cpu::attn_plan plan_unfold(const stream& s, const gsa_config& cfg, const cpu::attn_plan& base,
                           const std::vector<std::vector<int32_t>>& selected, int n_kv_heads,
                           const std::vector<uint8_t>& unfolds = {}, int b_begin = 0, int b_end = -1);

// The base of per-row unfolding (backend/row-unfold.h) for cfg: base (plan_compress of s) itself, unless
// cfg.gists_all, where every block that unfolds (its first row >= first_row is a level-0 row of a chunk with a
// candidate, as the trainer's selection decides) also lists every gist of every level up to its last row. A row
// unfold on this base then adds raw tokens only, and base + unfold sees what plan_unfold sees. Same blocks as
// base, heads 1.
cpu::attn_plan plan_unfold_base(const stream& s, const gsa_config& cfg, const cpu::attn_plan& base,
                                int first_row = 0);

// Suffix plan: context rows (< ctx_end) keep the gist mask; suffix rows unfold. base must be
// plan_compress(s, cfg, ctx_end); selected[(b - first suffix block) * n_kv_heads + h] for the suffix blocks.
cpu::attn_plan plan_suffix(const stream& s, const gsa_config& cfg, const cpu::attn_plan& base, int ctx_end,
                           const std::vector<std::vector<int32_t>>& selected, int n_kv_heads);

// First block whose rows start at or after `row` (n_blocks if none).
int first_block_at(const cpu::attn_plan& plan, int row);
// The blocks from row_begin on (row_begin must be a block boundary), rows rebased to row_begin, lists and gist
// table unchanged: run it with q_offset = row_begin over the cache (prefill of a suffix, decode).
cpu::attn_plan plan_rows(const cpu::attn_plan& plan, int row_begin);

}  // namespace gsa::gist
