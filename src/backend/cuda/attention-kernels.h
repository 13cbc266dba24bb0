// Internal seam between the host side of plan-driven attention (attention.cpp: checks, plan upload, scratch
// buffers; plain C++ that may throw gsa::error) and the kernels (attention-fwd.cu, attention-bwd.cu,
// attention-bwd-mma.cu, compiled by nvcc without fmt). Not part of the public API; contract and layouts: attention.h.
#pragma once
#include <cstdint>

#include "backend/attn-plan.h"

namespace gsa::cuda::detail {

// Structured plans (attention-structured.cu): a heads == 1 plan whose every list is a few short stream ranges plus at
// most one gist-unit segment per level. upload_plan detects it and stores one sblock per block; the structured
// kernels then tile consecutive query rows across blocks (see attention-structured.cuh).
constexpr int kSNR = 4;          // stream ranges per block
constexpr int kSLV = 4;          // gist levels
constexpr int kSMaxB = 32;       // blocks meeting any aligned window of kSWindow rows
constexpr int kSWindow = 128;    // row tile (rows) every structured plan allows
constexpr int kSWide = 256;      // the backward's wide row tile, where the plan allows it (attn_plan_view::wide)
constexpr int kSMaxRange = 512;  // keys per stream range

struct sblock {
  int32_t nr = 0, pad = 0;
  int32_t r[kSNR][2] = {};  // stream ranges [begin, end), uncut
  int32_t u[kSLV][2] = {};  // per level: visible units [begin, end) (empty: begin == end)
};
static_assert(sizeof(sblock) == 72);

constexpr int kKTile = 64;  // keys per CTA of the key-major backward (4 warps x 16)
struct ktile {
  int32_t level, first, run_begin, run_end;
};
struct krun {
  int32_t b0, b1;
};

struct attn_dims {
  int Tq = 0, Tk = 0, q_offset = 0, Hq = 0, Hkv = 0, D = 0;
  bool bf16 = false;  // activation type t: bf16 or f32
};

// Device pointers of an uploaded plan (device_plan without ownership).
struct attn_plan_view {
  int heads = 1, gists_per_unit = 1, n_blocks = 0, max_block_rows = 0;
  const int32_t* block_q = nullptr;
  const int64_t* seg_ptr = nullptr;
  const key_seg* segs = nullptr;
  const int32_t* gist_ptr = nullptr;
  const int32_t* gist_pos = nullptr;
  int levels = 0;                   // gist levels (entries of gist_ptr - 1)
  const sblock* sblocks = nullptr;  // (n_blocks) set only when the launcher takes the structured kernels
  bool wide = false;  // every aligned window of kSWide rows also meets at most kSMaxB blocks
  // The inverse of a structured plan for the key-major backward (attention-keymajor.cu): key tiles of kKTile keys,
  // each {level or -1, first key, run_begin, run_end}: the stream positions [first, first + kKTile) (level -1) or
  // the gist indices [first, first + kKTile) of that level (index u g + i: gist i of unit u), seen by the rows of
  // the blocks of runs [run_begin, run_end) of kruns ({b0, b1}: blocks [b0, b1)). Tiles in decreasing order of
  // rows to visit (the longest CTAs start first). n_ktiles == 0: not built.
  int n_ktiles = 0;
  const ktile* ktiles = nullptr;
  const krun* kruns = nullptr;
};

// A row unfold on the device (backend/row-unfold.h) attended on top of the plan by the bf16 overlay kernels
// (attention-unfold.cu); cap == 0: none.
struct unfold_view {
  int cap = 0, n_chunks = 0;
  const int32_t* count = nullptr;      // (Tq, Hkv)
  const int32_t* ids = nullptr;        // (Tq, Hkv, cap) ascending chunk ids
  const int32_t* key_begin = nullptr;  // (n_chunks) keys [key_begin[m], key_end[m]) of chunk m
  const int32_t* key_end = nullptr;
  // Several gist levels (else null): chunk m adds [key_begin[m], gist_end[m]) to a row r whose list lacks its
  // level-0 gists, i.e. unless listed[2 r] <= m < listed[2 r + 1] (row-unfold.h).
  const int32_t* gist_end = nullptr;
  const int32_t* listed = nullptr;
};

struct attn_fwd_args {
  attn_dims d;
  attn_plan_view p;
  unfold_view uf;
  void* out = nullptr;  // (Tq, Hq, D) t
  float* lse = nullptr;  // (Tq, Hq)
  const void *q = nullptr, *k = nullptr, *v = nullptr;
  int rows = 0;  // row tile of the structured forward: 0 automatic, 64 or 128 (structured_forward_rows)
  int kernel = -1;  // structured forward: -1 automatic, 0 mma.sync, 1 wgmma, 2 warp-specialized wgmma
};

struct attn_bwd_args {
  attn_dims d;
  attn_plan_view p;
  unfold_view uf;
  void* dq = nullptr;  // (Tq, Hq, D) t, +=; may be null
  // Scratch (Tk, Hkv, D), zeroed by the caller; null when the matching gradient is not wanted. f32, or int64
  // fixed point when `fixed` (deterministic sums: acc_add4 in attention-kernels.cuh); overflow: one zeroed u32
  // (fixed only) that a partial out of the fixed-point range sets.
  void *dk_acc = nullptr, *dv_acc = nullptr;
  bool fixed = false;
  unsigned* overflow = nullptr;
  void *dk = nullptr, *dv = nullptr;  // (Tk, Hkv, D) t, += scratch at the end
  // Key-major dK / dV (structured bf16 plans with an inverse, p.n_ktiles > 0): the row pass computes dq only and
  // writes D_i = rowsum(dout * out) of every row into di (Tq, Hq); attention-keymajor.cu then adds dk / dv into the
  // scratch with one add per key and gradient (no per-tile atomics).
  bool keymajor = false;
  bool wgmma = false;  // the key-major dK / dV pass on wgmma (attention-keymajor-wgmma.cu)
  int rows = 0;  // row tile of the structured row pass: 0 automatic, 128 or 256 (structured_backward_rows)
  float* di = nullptr;
  const void *dout = nullptr, *q = nullptr, *k = nullptr, *v = nullptr, *out = nullptr;
  const float* lse = nullptr;
};

// Launch on `stream` (a cudaStream_t). Inputs are already checked. Return a cudaError_t value (0 = success).
int launch_attention_forward(const attn_fwd_args& a, int sm_count, void* stream);
int launch_attention_backward(const attn_bwd_args& a, int sm_count, void* stream);
// The bf16 tensor-core backward kernel alone (attention-bwd-mma.cu): dq += and the dk / dv scratch partials; the
// scratch add into dk / dv is left to launch_attention_backward.
int launch_attention_backward_mma(const attn_bwd_args& a, int sm_count, void* stream);
// The structured kernels (bf16 only; a.p.sblocks set; 64 % G == 0): forward, and backward without the scratch add.
// The overlay of a.uf (bf16, a.uf.cap > 0, Hq / Hkv <= 16): the forward merges the unfolded keys' softmax into
// out / lse, which must hold the plan's result; the backward adds the unfolded keys' dq (+=) and dk / dv partials
// (scratch) given the merged out and lse.
int launch_unfold_forward(const attn_fwd_args& a, int sm_count, void* stream);
int launch_unfold_backward(const attn_bwd_args& a, int sm_count, void* stream);
int launch_attention_forward_structured(const attn_fwd_args& a, int sm_count, void* stream);
// The structured forward on wgmma (attention-structured-wgmma.cu; 128 stacked rows a CTA): where it applies
// (D 64 / 128, 128 % G == 0); launch_attention_forward_structured picks it.
bool structured_wgmma_applies(const attn_fwd_args& a);
int launch_attention_forward_structured_wgmma(const attn_fwd_args& a, void* stream);
int launch_attention_backward_structured(const attn_bwd_args& a, int sm_count, void* stream);
// With a.keymajor: the structured row pass without dk / dv (dq += and a.di), then the key-major dk / dv pass.
int launch_attention_backward_keymajor(const attn_bwd_args& a, int sm_count, void* stream);
// Its dK / dV pass on wgmma alone (a.di written by the row pass).
int launch_keymajor_dkdv_wgmma(const attn_bwd_args& a, void* stream);

}  // namespace gsa::cuda::detail
