// Plan-driven GSA attention on CUDA, forward and backward (training and prefill): the Run half for the plans of
// backend/attn-plan.h, with the CPU kernels' contract (backend/cpu/attention.h): the same plan gives the same
// result. Layouts: q (Tq, Hq, D); k, v (Tk, Hkv, D); out (Tq, Hq, D), all of activation type t (bf16 or f32);
// lse (Tq, Hq) f32, natural log. GQA: query head h uses KV head h / (Hq / Hkv). A row with no visible key gets
// out = 0, lse = -inf.
//
// The kernel exploits the plan's structure instead of masking a dense grid: ranges (own chunk, local window,
// sink, unfolded chunks) are read as contiguous K/V tiles; gist segments as the compact gist table; one online
// softmax over all segments of a list. Head dims 64 and 128.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "backend/attn-plan.h"
#include "backend/row-unfold.h"
#include "core/dtype.h"

namespace gsa::cuda {

// A plan uploaded to the device (owns its buffers; built once per layer and step, reused by backward).
struct device_plan {
  int heads = 1, gists_per_unit = 1, n_blocks = 0;
  int64_t n_segs = 0;
  int max_block_rows = 0;
  int Tq = 0, Tk = 0, q_offset = 0, Hkv = 0;  // the sizes upload_plan validated it for (checked at every run)
  const int32_t* block_q = nullptr;
  const int64_t* seg_ptr = nullptr;
  const key_seg* segs = nullptr;
  const int32_t* gist_ptr = nullptr;
  const int32_t* gist_pos = nullptr;
  // Structured fast path (attention-structured.cu): upload_plan sets it when the plan is a heads == 1 plan whose
  // every list is a few short stream ranges (sink, local window, own chunk) plus at most one gist-unit range per
  // level, as gist::plan_compress builds; the bf16 runs then take the structured kernels (when 64 % G == 0).
  // Clear `structured` to force the generic kernels.
  bool structured = false;
  int levels = 0;                 // gist levels of the table
  const void* sblocks = nullptr;  // (n_blocks) per-block descriptors of the structured kernels
  bool wide = false;              // the structured backward may take row tiles of 256 rows (attention-kernels.h)
  // The structured plan's inverse for the key-major backward (attention-kernels.h, attn_plan_view::ktiles).
  int n_ktiles = 0;
  const void* ktiles = nullptr;
  const void* kruns = nullptr;
  std::shared_ptr<void> storage;  // one device allocation holding every array
  // A row unfold attended on top of the plan (bf16 only; set by attach_unfold): its device tables stay alive.
  std::shared_ptr<const row_unfold> unfold;
};
// Attaches a row unfold whose tables live on this device to an uploaded plan (gsa::error if it does not fit the
// plan's sizes). Runs then need bf16 and Hq / Hkv <= 16 (the rows of a warp tile).
void attach_unfold(device_plan& plan, std::shared_ptr<const row_unfold> u);
// Whether the overlay kernels can run this unfold (bf16, D 64 / 128, Hq / Hkv <= 16); otherwise a caller expands
// it into a plain plan (expand_row_unfold).
bool unfold_supported(int Hq, int Hkv, int D, dtype t);
// Validates the plan for these sizes on the host (gsa::error as cpu::validate_plan) and uploads it; with
// keymajor_backward() on, a structured plan also gets its inverse for the key-major backward (else that
// backward falls back to the atomics).
device_plan upload_plan(const attn_plan& plan, int Tq, int Tk, int q_offset, int Hkv);

// True if upload_plan found the structure of the fast path (see device_plan::structured).
bool attention_plan_is_structured(const device_plan& plan);

// True if (D, t) is a compiled variant (head dims 64 and 128; 32 for the forward only, for inference of the
// small shipped models); *why says what to change otherwise.
bool attention_supported(int D, dtype t, std::string* why, bool backward = true);

// Overwrites out and lse.
void attention_forward(void* out, float* lse, const void* q, const void* k, const void* v, const device_plan& plan,
                       int Tq, int Tk, int q_offset, int Hq, int Hkv, int D, dtype t);
// Whether the backward sums dk / dv partials in int64 fixed point, the same bits on every run, or with f32
// atomics, whose order shows in the last bits (the default: fixed point costs 1.2-2.3x in the backward, see
// docs/cuda.md). On with GSA_CUDA_DETERMINISTIC=1 in the environment, or the setter. In fixed point a partial of
// magnitude 2^10 or more turns dk / dv into NaN.
bool deterministic_backward();
void set_deterministic_backward(bool on);
// Whether the backward of structured bf16 plans computes dk / dv key-major (attention-keymajor.cu: a CTA per key
// tile, or piece of one, walks the rows that see it and adds once per key) or with the row pass's per-tile
// atomics. Measured on the H200 (docs/cuda.md) the atomics are faster in f32 (7.2 against 9.5 ms at 32k), and
// key-major is faster with the fixed-point scratch (12.0 against 18.2 ms), where one add per key instead of per
// tile pays: so by default key-major exactly when deterministic_backward(). GSA_CUDA_BWD=keymajor|atomic in the
// environment, or set_backward_scheme, forces one. Scheme: -1 automatic, 0 atomics, 1 key-major.
bool keymajor_backward();
int backward_scheme();
void set_backward_scheme(int s);
// Row tile of the structured backward's row pass: 0 automatic (256 stacked rows, half the dK / dV atomics of 128,
// where the plan allows it and the tiles fill every SM), 128 or 256 forces one (256 only where the plan allows
// it). GSA_CUDA_BWD_ROWS in the environment, or the setter.
int structured_backward_rows();
void set_structured_backward_rows(int rows);
// Row tile of the structured forward: 0 automatic (128 stacked rows where they still fill two CTAs per SM and
// 128 % G == 0, else 64), 64 or 128 forces one (128 only where 128 % G == 0). GSA_CUDA_FWD_ROWS or the setter;
// the tests run both.
int structured_forward_rows();
void set_structured_forward_rows(int rows);
// The structured kernels on Hopper's wgmma: 0 mma.sync, 1 wgmma where there is a wgmma kernel: the forward
// (attention-structured-wgmma.cu, 128-row tiles, where 128 % G == 0 and the rows are not forced to 64) and the
// key-major dK / dV pass (attention-keymajor-wgmma.cu); 2 the same with the warp-specialized forward (a producer
// warpgroup and two consumers, mbarriers; not yet run on a GPU); -1 automatic: the key-major pass on wgmma (3-5%
// faster), the forward on mma.sync (the wgmma forward measured 10-14% slower; docs/cuda.md).
// GSA_CUDA_WGMMA=0|1|2 or the setter; the tests run each.
int structured_wgmma();
void set_structured_wgmma(int k);

// dq (Tq,Hq,D) +=, dk, dv (Tk,Hkv,D) += (type t; any may be null). Needs the forward's out and lse.
void attention_backward(void* dq, void* dk, void* dv, const void* dout, const void* q, const void* k, const void* v,
                        const void* out, const float* lse, const device_plan& plan, int Tq, int Tk, int q_offset,
                        int Hq, int Hkv, int D, dtype t);

}  // namespace gsa::cuda
