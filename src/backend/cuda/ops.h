// CUDA operators: the same contract as the CPU reference backend (backend/cpu/ops.h), on device pointers, run on
// ctx().stream (backend/cuda/runtime.h). Read cpu/ops.h first: layouts and the accumulate convention are the same.
//  * `t` is the ACTIVATION type: dtype::bf16 (default for training) or dtype::f32. Activations, activation
//    gradients and the weights the forward reads are of type t.
//  * PARAMETER gradients (dw, dbias, dtable, the norm weights' gradients) are ALWAYS f32 and accumulate (+=).
//  * Activation gradients (dx, dgate, dup, dh) are of type t and also accumulate (+=), as on the CPU.
//  * Small per-row statistics (rstd, lse) are f32.
//  * Every reduction accumulates in f32; bf16 values are widened exactly and rounded once on store.
// Matmuls go through cuBLASLt (bf16 or f32 inputs, f32 compute; bias in the epilogue where cuBLASLt allows), a
// forward of a few rows (a decode step) through a matrix-vector kernel (gemv.cu) that streams the weights.
// Every entry point checks its arguments (clear gsa::error on an unsupported dtype or shape) and launch errors.
#pragma once
#include <cstdint>

#include "backend/cpu/ops.h"  // adamw_params, rope_scaling
#include "core/dtype.h"

namespace gsa::cuda {

// ---- matmul: y (M, N) = x (M, K) @ w (N, K)^T + bias (N, optional, type t). Overwrites y.
void matmul_forward(void* y, const void* x, const void* w, const void* bias, int M, int K, int N, dtype t);
// dx (M, K) += dy @ w (dx may be null); dw (N, K) f32 += dy^T @ x (may be null); dbias (N) f32 += colsum(dy).
void matmul_backward(void* dx, float* dw, float* dbias, const void* dy, const void* x, const void* w, int M, int K,
                     int N, dtype t);

// ---- embedding: y (T, C) = table[ids[t]]; ids on the device, checked in [0, V) by the caller.
void embedding_forward(void* y, const int32_t* ids, const void* table, int T, int C, dtype t);
void embedding_backward(float* dtable, const void* dy, const int32_t* ids, int T, int C, dtype t);  // deterministic

// ---- RMSNorm (rstd (T) f32 written by forward).
void rmsnorm_forward(void* y, float* rstd, const void* x, const void* w, int T, int C, float eps, dtype t);
void rmsnorm_backward(void* dx, float* dw, const void* dy, const void* x, const void* w, const float* rstd, int T,
                      int C, dtype t);

// ---- RoPE, in place on x (T, H, D); pos (T) int32 and inv_freq (D/2) f32 on the device (inv_freq from
// cpu::rope_inv_freq, so Llama-3 scaling is the CPU's).
void rope_forward(void* x, const int32_t* pos, const float* inv_freq, int T, int H, int D, dtype t);
void rope_backward(void* dx, const int32_t* pos, const float* inv_freq, int T, int H, int D, dtype t);

// ---- SwiGLU over n values. forward overwrites y; backward accumulates into dgate, dup.
void swiglu_forward(void* y, const void* gate, const void* up, int64_t n, dtype t);
void swiglu_backward(void* dgate, void* dup, const void* dy, const void* gate, const void* up, int64_t n, dtype t);

// ---- elementwise helpers
void add_inplace(void* y, const void* x, int64_t n, dtype t);            // y += x
void convert(void* dst, dtype to, const void* src, dtype from, int64_t n);  // f32 <-> bf16 (or a copy)

// ---- LM head fused with cross-entropy, vocab_chunk columns of logits at a time (never the full (T, V)).
// targets (T) int32 on the device (-100 = ignore). Writes lse (T) f32; returns the SUM of losses over valid rows
// (synchronises) and *n_valid.
double lm_head_xent_forward(float* lse, const void* h, const void* w, const int32_t* targets, int T, int C, int V,
                            int64_t* n_valid, dtype t, int vocab_chunk = 8192);
// dh (T, C) +=, dw (V, C) f32 += (either may be null): gradient of scale * summed loss.
void lm_head_xent_backward(void* dh, float* dw, const void* h, const void* w, const int32_t* targets,
                           const float* lse, int T, int C, int V, float scale, dtype t, int vocab_chunk = 8192);

// ---- optimizer over flat f32 buffers (all parameters in one buffer: one launch per step).
// p, g, m, v (n) f32; the step number t is 1-based. decay (n, optional u8): 1 where weight decay applies (null: all).
// p_lowp (n, optional): also writes the updated parameters rounded to bf16 there (the compute copy).
void adamw_step(float* p, const float* g, float* m, float* v, const uint8_t* decay, uint16_t* p_lowp, int64_t n,
                int64_t t, const cpu::adamw_params& hp);
// Sum of squares of g (n), accumulated in double on the device; returns it to the host (synchronises).
double sum_squares(const float* g, int64_t n);
void scale_inplace(float* g, int64_t n, float s);

}  // namespace gsa::cuda
