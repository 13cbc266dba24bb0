// Internal seam shared by the CUDA op files (not a public API): the cuBLASLt GEMM wrapper (matmul.cpp), a scratch
// buffer on the caching allocator, and launchers that one op file borrows from another. Host-only declarations,
// no fmt: both g++ and nvcc translation units include it.
#pragma once
#include <cstddef>
#include <cstdint>

#include "backend/cuda/runtime.h"
#include "core/dtype.h"

namespace gsa::cuda::detail {

// Device memory from the caching allocator for the duration of one op (stream-ordered: see runtime.cpp).
class scratch {
 public:
  scratch() = default;
  explicit scratch(size_t bytes) : p_(alloc(bytes)) {}
  ~scratch() { release(p_); }
  scratch(const scratch&) = delete;
  scratch& operator=(const scratch&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
};

// The row-major GEMMs every op needs (layouts of cpu/ops.h), through cuBLASLt with f32 compute. a_type is the
// type of both inputs (f32 or bf16); the output type is f32 or a_type. beta = 0 overwrites, 1 accumulates.
// Shapes with a zero dimension are no-ops (the caller handles K == 0 where it means something).
//
// y (M, N) = x (M, K) @ w (N, K)^T  [+ beta * y] [+ bias (N), same type as y, beta must be 0 then]; ldw: the row
// stride of w in elements (0: K), e.g. one head's keys out of a (T, H, D) tensor.
void gemm_xwT(void* y, dtype y_type, const void* x, const void* w, dtype a_type, int M, int K, int N, float beta,
              const void* bias = nullptr, int64_t ldw = 0);
// dx (M, K) = dy (M, N) @ w (N, K)  [+ beta * dx]
void gemm_dyw(void* dx, dtype dx_type, const void* dy, const void* w, dtype a_type, int M, int K, int N,
              float beta);
// dw (N, K) = dy (M, N)^T @ x (M, K)  [+ beta * dw]
void gemm_dyTx(void* dw, dtype dw_type, const void* dy, const void* x, dtype a_type, int M, int K, int N,
               float beta);

// ---- gemv.cu: y (M, N) = x (M, K) @ w (N, K)^T + bias (type t, overwrite) for M <= gemv_max_rows by a
// matrix-vector kernel (the decode step's products); false (nothing launched) where it does not apply: more rows,
// K not a multiple of a 16-byte load, or x / w not 16-byte aligned; or when gemv_enabled() is off.
// cuda::matmul_forward tries it first. gemv_enabled: on unless GSA_CUDA_GEMV=0; set_gemv_enabled overrides (tests,
// benchmarks against cuBLASLt).
constexpr int gemv_max_rows = 8;
bool gemv_rows(void* y, const void* x, const void* w, const void* bias, int M, int K, int N, dtype t);
bool gemv_enabled();
void set_gemv_enabled(bool on);

// ---- launchers defined in elementwise.cu, used by matmul.cpp
// y (M, N) += bias (N) broadcast over rows (type t).
void add_bias_rows(void* y, const void* bias, int M, int N, dtype t);
// out (N) f32 += column sums of x (M, N) (type t); deterministic (fixed two-pass order, no float atomics).
void column_sum_accumulate(float* out, const void* x, int M, int N, dtype t);

// ---- test seam of xent.cu: the most logits (f32 elements) one (row block x vocab chunk) tile may hold. The row
// block is max(1, budget / vocab_chunk) rows. Tests lower it to exercise several row blocks on small shapes.
int64_t& xent_tile_budget();

// Throws gsa::error naming the op when t is not f32 or bf16.
void check_activation_type(dtype t, const char* op);

}  // namespace gsa::cuda::detail
