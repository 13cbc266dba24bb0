// Attention on the CPU, driven by a plan (FlashInfer style: the plan says which keys each query block sees;
// the run computes). Layouts: q (Tq, Hq, D); k, v (Tk, Hkv, D); out (Tq, Hq, D); lse (Tq, Hq).
// GQA: query head h uses KV head h / (Hq / Hkv).
//
// Plans: backend/attn-plan.h (blocks of query rows; per (block, KV head) list, disjoint key segments: ranges of
// stream positions or ranges of gist units resolved through the plan's gist table). Masking rule applied by
// every kernel here: query i (0-based row of q) sits at key position q_offset + i and sees key j only if j is in
// its block's list AND j <= q_offset + i (causal). Since a plan lists, for a query block, only keys that are
// either earlier than the block or inside it, this one rule plus the list expresses every GSA visibility pattern
// (gist mask, local window, sink, unfolded chunks, hierarchy).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "backend/attn-plan.h"

namespace gsa::cpu {

using attn_plan = gsa::attn_plan;
using gsa::gist_units;
using gsa::key_range;
using gsa::key_seg;

// Total (query, key) pairs attended, summed over KV heads: the work measure for benchmarks. O(segments).
// Without q_offset the causal cut inside a block is unknown, so this counts the listed pairs
// (rows x list length): exact when every listed key precedes its block, an upper bound otherwise.
int64_t attended_pairs(const attn_plan& plan, int n_kv_heads);
// Exact count of visible pairs (list AND causal rule) for queries starting at q_offset. O(rows * segments *
// log units): segments are counted, never expanded. Needs a valid plan (validate_plan).
int64_t attended_pairs(const attn_plan& plan, int n_kv_heads, int q_offset);

// Plan for plain causal attention over Tq queries at q_offset and keys [0, q_offset + Tq), blocks of block rows:
// one range segment per block.
attn_plan plan_causal(int Tq, int q_offset, int block);

// Blocks [b0, b1) of a plan for rows at q_offset 0 as a plan for their rows alone (a pass of a chunked prefill):
// block_q rebased to block b0's first row r0, which is the q_offset to run it at, over keys [0, r1) (r1: block
// b1's first row); segments unchanged (keys stay stream positions), the gist table cut to the units inside
// [0, r1). Not for a plan with per-row unfolding (gsa::error).
attn_plan plan_blocks(const attn_plan& plan, int b0, int b1);
// Keeps, per level of the plan's gist table, the units whose gists all lie before key `end` (a prefix of each
// level: unit ids of the segments do not change). For a plan cut to the rows before `end`.
void cut_gist_table(attn_plan& plan, int64_t end);

// Appends one list holding the given keys (strictly ascending) as range segments, one per run of consecutive
// positions, and closes it (pushes seg_ptr). The caller pushes block_q. For tests and hand-made plans.
void plan_push_keys(attn_plan& plan, const int32_t* keys, size_t n);
inline void plan_push_keys(attn_plan& plan, const std::vector<int32_t>& keys) {
  plan_push_keys(plan, keys.data(), keys.size());
}

// Throws gsa::error if the plan is malformed for these sizes: block and CSR structure, gist table (per level
// strictly ascending, units g apart: what lets kernels bound a gist segment in O(1)), segments (ranges inside
// [0, Tk), gist levels and units inside the table), a key after its block's last query position, a key twice in
// one list. O(segments + listed keys), one Tk-bit map per thread.
void validate_plan(const attn_plan& plan, int Tq, int Tk, int q_offset, int Hkv);
// The part of validate_plan every backend needs before it reads a plan: sizes, heads, block_q and seg_ptr (all
// O(blocks)); the gist table and the segments themselves are checked by the caller.
void validate_plan_layout(const attn_plan& plan, int Tq, int Tk, int q_offset, int Hkv);

// The keys of list (b, h), ascending, in O(list + list * log(runs)) where runs = ascending runs of the
// segment-by-segment expansion (a handful for builder plans whose segments are sorted by first key), instead of
// list_keys' sort. tmp is scratch. Overwrites keys.
void expand_list(const attn_plan& plan, int b, int h, std::vector<int32_t>& keys, std::vector<int32_t>& tmp);

// Plan-driven attention (softmax(q k^T / sqrt(D)) v over the visible keys). Overwrites out and lse.
// A query with no visible key gets out = 0 and lse = -inf. Both kernels validate the plan first (gsa::error)
// and cost O(visible pairs * D); OpenMP over (block, KV head).
// lse is the natural log of the sum of exp of the scaled scores.
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, const attn_plan& plan,
                       int Tq, int Tk, int q_offset, int Hq, int Hkv, int D);
// dq (Tq,Hq,D) +=, dk (Tk,Hkv,D) +=, dv (Tk,Hkv,D) +=. Needs the forward's out and lse.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, const attn_plan& plan, int Tq, int Tk,
                        int q_offset, int Hq, int Hkv, int D);

// Reference: dense attention with an explicit boolean mask (Tq, Tk) (1 = visible), O(Tq * Tk). For tests.
void attention_dense_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                             const uint8_t* mask, int Tq, int Tk, int Hq, int Hkv, int D);
void attention_dense_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                              const float* v, const float* out, const float* lse, const uint8_t* mask, int Tq, int Tk,
                              int Hq, int Hkv, int D);

}  // namespace gsa::cpu
