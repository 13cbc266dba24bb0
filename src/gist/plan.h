// Attention plans (gsa::cpu::attn_plan, backend/cpu/attention.h) that realise the visibility rules of
// visibility.h for a whole stream: rows = stream positions (q_offset 0), keys = stream positions.
//
// Contract every plan here satisfies (the kernel applies key <= query itself): for each query q in block b and
// each KV head h,  { k in list(b, h) : k <= q } == { k : visible(q, k) }  (or the unfolding form of visible
// with that block's selected chunks for h). Lists are strictly ascending and hold no key after the block's
// last row.
//
// Blocks of plan_compress: for each level-0 chunk m, one block of its raw tokens and level-0 gists (they share
// one view of the past), then one block per higher level l whose g gists follow chunk m (a level-l gist sees
// different keys: no raw tokens, no gists below level l-1). A trailing incomplete chunk is one block of raw
// tokens. Cost: each list is built from its sources (sink, local raw chunks, per level the current and
// previous group, the top level), never by testing pairs: O(n (c (1 + local) + sink + n/r)) with one level.
#pragma once
#include <cstdint>
#include <vector>

#include "backend/cpu/attention.h"
#include "gist/config.h"
#include "gist/stream.h"

namespace gsa::gist {

// Keys visible to the queries of chunk m of class `level` (-1 or 0: raw tokens and level-0 gists; l >= 1: the
// level-l gists after chunk m), restricted to keys <= last. Overwrites out; ascending.
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
cpu::attn_plan plan_unfold(const stream& s, const gsa_config& cfg, const cpu::attn_plan& base,
                           const std::vector<std::vector<int32_t>>& selected, int n_kv_heads,
                           const std::vector<uint8_t>& unfolds = {});

// Suffix plan: context rows (< ctx_end) keep the gist mask; suffix rows unfold. base must be
// plan_compress(s, cfg, ctx_end); selected[(b - first suffix block) * n_kv_heads + h] for the suffix blocks.
cpu::attn_plan plan_suffix(const stream& s, const gsa_config& cfg, const cpu::attn_plan& base, int ctx_end,
                           const std::vector<std::vector<int32_t>>& selected, int n_kv_heads);

// First block whose rows start at or after `row` (n_blocks if none).
int first_block_at(const cpu::attn_plan& plan, int row);
// The blocks from row_begin on (row_begin must be a block boundary), rows rebased to row_begin, lists
// unchanged: run it with q_offset = row_begin over the cache (prefill of a suffix, decode).
cpu::attn_plan plan_rows(const cpu::attn_plan& plan, int row_begin);

}  // namespace gsa::gist
