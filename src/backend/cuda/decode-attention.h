// Sparse (gathered-key) decode attention on CUDA: one new query row per sequence, attending to a per-(sequence,
// KV head) list of key positions (GSA: sink + selected chunks + gists + local window; full attention is the list
// 0..T-1). Split-K over each list (flash-decoding): every split writes a partial (max, sum, acc) and a combine
// kernel merges them; with one split the main kernel writes the output directly.
//
// Plan vs Run (as in FlashInfer): plan_decode() is pure host code (no CUDA call) that picks the split size from
// the shapes and the device's multiprocessor count, and says how much workspace the run needs; run_decode()
// only launches. The caller owns every buffer (device memory), the workspace included.
//
// Layouts (all strides in elements, not bytes):
//   q    (B, Hq, D)          element [b][h][d] at b*q_stride_b + h*q_stride_h + d        dtype = kv dtype
//   k, v pool (rows, Hkv, D) element of sequence b, position p, KV head h, dim d at
//        (kv_row_offset[b] + p)*kv_stride_t + h*kv_stride_h + d    (kv_row_offset may be null: all 0)
//   indptr (B*Hkv + 1) int64, indices int32: list (b, h) = indices[indptr[b*Hkv+h] .. indptr[b*Hkv+h+1]),
//        positions within sequence b, after the optional shared prefix (shared, n_shared); order and
//        duplicates are not checked (duplicates count twice). max_list_len of plan_decode counts the prefix.
//   out  (B, Hq, D)          at b*o_stride_b + h*o_stride_h + d, f32 or bf16; OVERWRITTEN.
//   lse  (B, Hq)             f32 at b*lse_stride_b + h, natural log of sum(exp(scale * q.k)); may be null.
// GQA: query head h uses KV head h / (Hq / Hkv). An empty list gives out = 0, lse = -inf.
// Arithmetic: f32 accumulation throughout; bf16 inputs are widened exactly.
//
// Compiled variants (decode-attention.cu): kv dtype {f32, bf16} x D {32, 64, 128} x group Hq/Hkv {1, 2, 3, 4, 6, 7,
// 8} x load path {cp.async ring, registers} on CUDA cores, and a tensor-core kernel for bf16 and D {64, 128} (any
// of those groups; the plan's default there); output dtype is a run-time switch. Anything else throws gsa::error
// (check with decode_supported()).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "backend/decode-lists.h"

namespace gsa::cuda {

enum class decode_dtype : uint8_t { f32, bf16 };

// One sequence of a launch whose sequences live in different pools (decode_params::seqs: a batched decode step,
// each session with its own K/V pool and lists): its query (Hq, D) and output (Hq, D) rows, heads q_stride_h /
// o_stride_h apart; its pool's K and V rows (kv_stride_t, kv_stride_h as for every sequence); its Hkv lists
// indices[indptr[h] .. indptr[h + 1]) after its own shared prefix (shared, n_shared).
struct decode_seq {
  const void* q = nullptr;
  void* out = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const int64_t* indptr = nullptr;  // (Hkv + 1)
  const int32_t* indices = nullptr;
  const int32_t* shared = nullptr;
  int64_t n_shared = 0;
  const void* host_k = nullptr;  // its pool's off-device K rows, or null (see decode_params::host_k)
};

struct decode_params {
  int batch = 0;        // B sequences
  int n_q_heads = 0;    // Hq
  int n_kv_heads = 0;   // Hkv, divides Hq
  int head_dim = 0;     // D
  decode_dtype kv_dtype = decode_dtype::bf16;   // q, k, v
  decode_dtype out_dtype = decode_dtype::f32;
  float scale = 0;      // usually 1/sqrt(D)

  const void* q = nullptr;
  int64_t q_stride_b = 0, q_stride_h = 0;
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t kv_stride_t = 0, kv_stride_h = 0;  // shared by k and v
  const int64_t* kv_row_offset = nullptr;    // (B) first pool row of each sequence, or null
  // Off-device rows (kv-cache.h tier host): a list entry r >= kv_host_row0 (backend/decode-lists.h) names row
  // r - kv_host_row0 of host_k (host memory mapped for the device, read in place over the bus), its V row at the
  // same distance from it as v is from k. Null: every entry is a row of k / v.
  const void* host_k = nullptr;
  const int64_t* indptr = nullptr;           // (B*Hkv + 1)
  const int32_t* indices = nullptr;
  // Optional prefix of every list of the launch: list (b, h) is shared[0 .. n_shared) followed by its own
  // indices (a decode row's base keys, the same for every KV head and layer, are stored once).
  const int32_t* shared = nullptr;
  int64_t n_shared = 0;
  void* out = nullptr;
  int64_t o_stride_b = 0, o_stride_h = 0;
  float* lse = nullptr;
  int64_t lse_stride_b = 0;
  // Device array of `batch` sequences, or null. When set, each sequence's q, out, k, v, lists and shared prefix
  // are its own (decode_seq) and the fields above they replace (q, k, v, kv_row_offset, indptr, indices,
  // shared, n_shared, out, q_stride_b, o_stride_b) are not read; lse must be null. max_list_len of plan_decode
  // is the longest list of any sequence.
  const decode_seq* seqs = nullptr;
};

// The host-side decision, made from shapes only.
struct decode_plan {
  int num_splits = 1;            // grid splits per list; 1: no combine, no workspace
  int64_t keys_per_split = 0;    // each split handles keys [s*keys_per_split, (s+1)*keys_per_split) of its list
  size_t workspace_bytes = 0;    // device scratch run_decode needs (0 when num_splits == 1)
  bool async_copy = true;        // K/V through a cp.async shared-memory ring (else plain register loads)
  bool tensor_cores = false;     // the tensor-core kernel (bf16, D 64 / 128; docs/cuda-decode.md) runs the splits
};

struct decode_plan_options {
  int num_sms = 132;             // multiprocessors of the device (H200: 132)
  int ctas_per_sm = 4;           // target resident blocks per SM the split count aims to fill
  int64_t min_keys_per_split = 256;  // below this a split's fixed cost dominates
  int max_splits = 256;
  int force_splits = 0;          // > 0: use exactly this many (tests of the combine path)
  bool async_copy = true;        // load path of the CUDA-core split kernel (both are compiled; docs/cuda-decode.md)
  // The tensor-core split kernel where it applies (bf16 K/V, head dim 64 or 128): scores and the weighted sum of
  // V as mma tiles of 16 keys x 8 query heads. false: the CUDA-core kernel (async_copy picks its load path).
  bool tensor_cores = true;
};

// True when a compiled variant covers these shapes; *why gets the reason otherwise.
bool decode_supported(const decode_params& p, std::string* why = nullptr);

// Picks the split. max_list_len is the longest list of the launch (host knows it: it built the lists).
// Throws gsa::error for unsupported shapes or negative lengths.
decode_plan plan_decode(const decode_params& p, int64_t max_list_len, const decode_plan_options& opt = {});

// Launches on `stream` (a cudaStream_t; null = default stream). workspace: plan.workspace_bytes of device memory,
// 256-byte aligned (cudaMalloc is), may be null when that is 0. Throws gsa::error on unsupported shapes, a
// missing buffer or a launch error. Asynchronous: the caller synchronizes.
void run_decode(const decode_params& p, const decode_plan& plan, void* workspace, void* stream = nullptr);

// The attention probabilities of the listed keys (what H2O accumulates), after run_decode of the same params with
// lse written: weights[e] for entry e of list (b, h) (indices order, device f32, indptr's total entries) is the sum
// over the query heads hq of KV head h of exp(scale * q_hq . k - lse[b, hq]); the key row is read as run_decode
// reads it (kv_row_offset, host_k). longest: the longest list. Head dims 32, 64, 128; p.seqs and a shared prefix
// are not supported. Throws gsa::error on bad arguments or a launch error; asynchronous on `stream`.
void run_decode_weights(const decode_params& p, const float* lse, float* weights, int64_t longest,
                        void* stream = nullptr);

// Multiprocessor count of the current device (one CUDA call; for decode_plan_options::num_sms).
int current_device_sms();

}  // namespace gsa::cuda
