// CPU operators (the reference backend). Layout conventions, shared by every op here:
//  * activations are row-major (T, C): T rows (stream positions), C features;
//  * weights use the Hugging Face layout (out_features, in_features), so y = x W^T;
//  * attention tensors are (T, H, D): position, head, head dimension;
//  * every *_backward ACCUMULATES (+=) into its gradient outputs, parameter and activation gradients alike
//    (llm.c convention): callers zero gradient buffers once, and residual branches simply add up.
// Pass nullptr for a gradient output that is not needed.
#pragma once
#include <cstdint>
#include <vector>

namespace gsa::cpu {

// ---- matmul ------------------------------------------------------------------------------------------------
// y (M, N) = x (M, K) @ w (N, K)^T + bias (N, optional). Overwrites y.
// OpenBLAS sgemm for large shapes; an own OpenMP kernel for M == 1 (matrix-vector, decode).
void matmul_forward(float* y, const float* x, const float* w, const float* bias, int M, int K, int N);
// dx (M, K) += dy @ w; dw (N, K) += dy^T @ x; dbias (N) += column sums of dy.
void matmul_backward(float* dx, float* dw, float* dbias, const float* dy, const float* x, const float* w, int M,
                     int K, int N);

// ---- embedding -----------------------------------------------------------------------------------------------
// y (T, C) = table[ids[t]] (table: (V, C)). Overwrites y. ids must be in [0, V) (checked by the caller).
void embedding_forward(float* y, const int32_t* ids, const float* table, int T, int C);
// dtable[ids[t]] += dy[t].
void embedding_backward(float* dtable, const float* dy, const int32_t* ids, int T, int C);

// ---- RMSNorm ------------------------------------------------------------------------------------------------
// y = x / sqrt(mean(x^2) + eps) * w, per row. rstd (T) receives 1/sqrt(mean(x^2)+eps) for backward.
void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int T, int C, float eps);
void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd,
                      int T, int C);

// ---- RoPE (Hugging Face "rotate_half" convention: dimension i pairs with i + D/2) --------------------------------
struct rope_scaling {
  // type "none" or "llama3" (Llama 3.1 frequency-dependent scaling).
  bool llama3 = false;
  float factor = 8.0f, low_freq_factor = 1.0f, high_freq_factor = 4.0f;
  int original_max_position = 8192;
};
// inv_freq (D/2) for head dimension D: theta^(-2i/D), then the scaling rule.
std::vector<float> rope_inv_freq(int D, float theta, const rope_scaling& scaling);
// Rotates x (T, H, D) in place; token t uses position pos[t].
void rope_forward(float* x, const int32_t* pos, const float* inv_freq, int T, int H, int D);
// Backward of the rotation (the inverse rotation), applied in place to the gradient dx (T, H, D).
void rope_backward(float* dx, const int32_t* pos, const float* inv_freq, int T, int H, int D);

// ---- SwiGLU ------------------------------------------------------------------------------------------------
// y = silu(gate) * up, elementwise over n values. Overwrites y.
void swiglu_forward(float* y, const float* gate, const float* up, int64_t n);
void swiglu_backward(float* dgate, float* dup, const float* dy, const float* gate, const float* up, int64_t n);

// ---- LM head fused with softmax cross-entropy -------------------------------------------------------------------
// Logits = h (T, C) @ w (V, C)^T are computed vocab_chunk columns at a time and never stored whole.
// targets (T): the class per row, or -100 (ignore). Writes lse (T) (log-sum-exp per row, for backward) and
// returns the SUM of the losses over valid rows; *n_valid receives their count.
double lm_head_xent_forward(float* lse, const float* h, const float* w, const int32_t* targets, int T, int C, int V,
                            int64_t* n_valid, int vocab_chunk = 4096);
// Gradient of scale * (summed loss): dh (T, C) +=, dw (V, C) +=. Recomputes the logits chunk by chunk.
void lm_head_xent_backward(float* dh, float* dw, const float* h, const float* w, const int32_t* targets,
                           const float* lse, int T, int C, int V, float scale, int vocab_chunk = 4096);

// ---- optimizer -----------------------------------------------------------------------------------------------
struct adamw_params {
  float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.0f;
};
// One AdamW step (decoupled weight decay: p -= lr * wd * p) at step number t (1-based) for n parameters.
void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, int64_t t, const adamw_params& hp);
// Sum of squares of g (n values), in double.
double sum_squares(const float* g, int64_t n);
// Global-norm clipping: given the global norm over all gradients, returns the factor (<= 1) to scale them by.
float clip_factor(double global_norm, float max_norm);
void scale_inplace(float* g, int64_t n, float s);

}  // namespace gsa::cpu
