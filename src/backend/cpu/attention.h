// Attention on the CPU, driven by a plan (FlashInfer style: the plan says which keys each query block sees;
// the run computes). Layouts: q (Tq, Hq, D); k, v (Tk, Hkv, D); out (Tq, Hq, D); lse (Tq, Hq).
// GQA: query head h uses KV head h / (Hq / Hkv).
//
// Masking rule applied by every kernel here: query i (0-based row of q) sits at key position q_offset + i and
// sees key j only if j is in its block's key list AND j <= q_offset + i (causal). Since a plan lists, for a
// query block, only keys that are either earlier than the block or inside it, this one rule plus the list
// expresses every GSA visibility pattern (gist mask, local window, sink, unfolded chunks, hierarchy).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace gsa::cpu {

struct attn_plan {
  int heads = 1;                 // 1: one key list per block shared by all KV heads; else Hkv lists per block
  std::vector<int32_t> block_q;  // (n_blocks + 1) query row boundaries: block b = rows [block_q[b], block_q[b+1])
  std::vector<int64_t> indptr;   // (n_blocks * heads + 1) CSR offsets into indices; list of (b, h) = b * heads + h
  std::vector<int32_t> indices;  // key positions, strictly ascending within each list

  int n_blocks() const { return int(block_q.size()) - 1; }
  int64_t list_begin(int b, int h) const { return indptr[size_t(b) * heads + (heads == 1 ? 0 : h)]; }
  int64_t list_end(int b, int h) const { return indptr[size_t(b) * heads + (heads == 1 ? 0 : h) + 1]; }
  // Total (query, key) pairs attended, summed over KV heads: the work measure for benchmarks.
  // Without q_offset the causal cut inside a block is unknown, so this counts the listed pairs
  // (rows x list length): exact when every listed key precedes its block, an upper bound otherwise.
  int64_t attended_pairs(int n_kv_heads) const;
  // Exact count of visible pairs (list AND causal rule) for queries starting at q_offset.
  int64_t attended_pairs(int n_kv_heads, int q_offset) const;
};

// Plan for plain causal attention over Tq queries at q_offset and keys [0, q_offset + Tq), blocks of block rows.
attn_plan plan_causal(int Tq, int q_offset, int block);

// Throws gsa::error if the plan is malformed for these sizes (lists not ascending, keys out of range, ...).
void validate_plan(const attn_plan& plan, int Tq, int Tk, int q_offset, int Hkv);

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
