// Elementwise CUDA ops over flat arrays of the activation type t (f32 or bf16), math in f32, one rounding on store:
//   swiglu_forward   y = silu(gate) * up                         overwrites y
//   swiglu_backward  dgate += dy * up * s * (1 + g (1 - s)),     accumulate (each optional), s = sigmoid(g)
//                    dup   += dy * g * s
//   add_inplace      y += x
//   convert          f32 <-> bf16 (round to nearest even), or a copy when the types match
// and two helpers for matmul.cpp: add_bias_rows (y (M, N) += bias (N)) and column_sum_accumulate (out (N) f32 +=
// column sums, deterministic two-pass: see ops-device.cuh).
//
// One grid-stride kernel template serves them all: an op functor processes W consecutive elements at a time;
// W is the 16-byte pack width when every pointer is 16-byte aligned, and the n % W tail is done with W = 1 by the
// first threads of the grid.
#include "backend/cuda/ops-device.cuh"
#include "backend/cuda/ops.h"

namespace gsa::cuda {

namespace {

using dev::bf16;
using dev::load_f;
using dev::store_f;

template <int W, class Op>
__global__ void map_kernel(int64_t n, Op op) {
  const int64_t n_packs = n / W;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t i = tid; i < n_packs; i += stride) op.template apply<W>(i * W);
  if (W > 1) {
    const int64_t j = n_packs * W + tid;
    if (j < n) op.template apply<1>(j);
  }
}

template <int W, class Op>
void launch_map(int64_t n, bool packed, Op op, const char* name) {
  if (n <= 0) return;
  constexpr int threads = 256;
  cudaStream_t st = ctx().stream;
  if (packed && W > 1)
    map_kernel<W><<<dev::grid_for(n / W + 1, threads), threads, 0, st>>>(n, op);
  else
    map_kernel<1><<<dev::grid_for(n, threads), threads, 0, st>>>(n, op);
  check_launch(name, __FILE__, __LINE__);
}

bool all_aligned(std::initializer_list<const void*> ps) {
  for (const void* p : ps)
    if (p && !dev::aligned16(p)) return false;
  return true;
}

template <class T>
struct swiglu_fwd_op {
  T* y;
  const T *gate, *up;
  template <int W>
  __device__ void apply(int64_t i) const {
    float g[W], u[W], r[W];
    load_f<T, W>(g, gate + i);
    load_f<T, W>(u, up + i);
#pragma unroll
    for (int k = 0; k < W; k++) {
      const float s = 1.0f / (1.0f + expf(-g[k]));  // exp overflow for very negative g gives s = 0, the limit
      r[k] = g[k] * s * u[k];
    }
    store_f<T, W>(y + i, r);
  }
};

template <class T>
struct swiglu_bwd_op {
  T *dgate, *dup;
  const T *dy, *gate, *up;
  template <int W>
  __device__ void apply(int64_t i) const {
    float d[W], g[W], u[W], s[W];
    load_f<T, W>(d, dy + i);
    load_f<T, W>(g, gate + i);
    load_f<T, W>(u, up + i);
#pragma unroll
    for (int k = 0; k < W; k++) s[k] = 1.0f / (1.0f + expf(-g[k]));
    if (dgate) {
      float acc[W];
      load_f<T, W>(acc, dgate + i);
#pragma unroll
      for (int k = 0; k < W; k++) acc[k] += d[k] * u[k] * s[k] * (1.0f + g[k] * (1.0f - s[k]));
      store_f<T, W>(dgate + i, acc);
    }
    if (dup) {
      float acc[W];
      load_f<T, W>(acc, dup + i);
#pragma unroll
      for (int k = 0; k < W; k++) acc[k] += d[k] * g[k] * s[k];
      store_f<T, W>(dup + i, acc);
    }
  }
};

template <class T>
struct add_op {
  T* y;
  const T* x;
  template <int W>
  __device__ void apply(int64_t i) const {
    float a[W], b[W];
    load_f<T, W>(a, y + i);
    load_f<T, W>(b, x + i);
#pragma unroll
    for (int k = 0; k < W; k++) a[k] += b[k];
    store_f<T, W>(y + i, a);
  }
};

template <class To, class From>
struct convert_op {
  To* dst;
  const From* src;
  template <int W>
  __device__ void apply(int64_t i) const {
    float a[W];
    load_f<From, W>(a, src + i);
    store_f<To, W>(dst + i, a);
  }
};

// y (M, N) += bias (N). With packs, N % W == 0 keeps a pack inside one row and bias + c 16-byte aligned.
template <class T>
struct bias_rows_op {
  T* y;
  const T* bias;
  int64_t N;
  template <int W>
  __device__ void apply(int64_t i) const {
    float a[W], b[W];
    load_f<T, W>(a, y + i);
    load_f<T, W>(b, bias + i % N);
#pragma unroll
    for (int k = 0; k < W; k++) a[k] += b[k];
    store_f<T, W>(y + i, a);
  }
};

template <class T>
struct column_value {
  const T* x;
  int N;
  __device__ float operator()(int r, int c) const { return dev::to_f(x[int64_t(r) * N + c]); }
};

std::string op_name(const char* op, dtype t) { return std::string("cuda ") + op + " (" + dtype_name(t) + ")"; }

}  // namespace

void swiglu_forward(void* y, const void* gate, const void* up, int64_t n, dtype t) {
  detail::check_activation_type(t, "swiglu_forward");
  if (n <= 0) return;
  if (!y || !gate || !up) fail_msg("cuda swiglu_forward: null y, gate or up");
  const bool packed = all_aligned({y, gate, up});
  if (t == dtype::f32) {
    launch_map<4>(n, packed, swiglu_fwd_op<float>{(float*)y, (const float*)gate, (const float*)up},
                  "swiglu_forward");
  } else {
    launch_map<8>(n, packed, swiglu_fwd_op<bf16>{(bf16*)y, (const bf16*)gate, (const bf16*)up}, "swiglu_forward");
  }
}

void swiglu_backward(void* dgate, void* dup, const void* dy, const void* gate, const void* up, int64_t n, dtype t) {
  detail::check_activation_type(t, "swiglu_backward");
  if (n <= 0 || (!dgate && !dup)) return;
  if (!dy || !gate || !up) fail_msg("cuda swiglu_backward: null dy, gate or up");
  const bool packed = all_aligned({dgate, dup, dy, gate, up});
  if (t == dtype::f32) {
    launch_map<4>(n, packed,
                  swiglu_bwd_op<float>{(float*)dgate, (float*)dup, (const float*)dy, (const float*)gate,
                                       (const float*)up},
                  "swiglu_backward");
  } else {
    launch_map<8>(n, packed,
                  swiglu_bwd_op<bf16>{(bf16*)dgate, (bf16*)dup, (const bf16*)dy, (const bf16*)gate, (const bf16*)up},
                  "swiglu_backward");
  }
}

void add_inplace(void* y, const void* x, int64_t n, dtype t) {
  detail::check_activation_type(t, "add_inplace");
  if (n <= 0) return;
  if (!y || !x) fail_msg("cuda add_inplace: null y or x");
  const bool packed = all_aligned({y, x});
  if (t == dtype::f32)
    launch_map<4>(n, packed, add_op<float>{(float*)y, (const float*)x}, "add_inplace");
  else
    launch_map<8>(n, packed, add_op<bf16>{(bf16*)y, (const bf16*)x}, "add_inplace");
}

void convert(void* dst, dtype to, const void* src, dtype from, int64_t n) {
  detail::check_activation_type(to, "convert");
  detail::check_activation_type(from, "convert");
  if (n <= 0) return;
  if (!dst || !src) fail_msg("cuda convert: null dst or src");
  if (to == from) {
    copy_d2d(dst, src, size_t(n) * dtype_size(to));
    return;
  }
  const bool packed = all_aligned({dst, src});
  if (to == dtype::bf16)  // 4-wide: 16 bytes of f32 in, 8 of bf16 out
    launch_map<4>(n, packed, convert_op<bf16, float>{(bf16*)dst, (const float*)src}, "convert f32->bf16");
  else
    launch_map<4>(n, packed, convert_op<float, bf16>{(float*)dst, (const bf16*)src}, "convert bf16->f32");
}

namespace detail {

void add_bias_rows(void* y, const void* bias, int M, int N, dtype t) {
  const int64_t n = int64_t(M) * N;
  if (n <= 0) return;
  if (t == dtype::f32)
    launch_map<4>(n, all_aligned({y, bias}) && N % 4 == 0, bias_rows_op<float>{(float*)y, (const float*)bias, N},
                  "add_bias_rows");
  else if (t == dtype::bf16)
    launch_map<8>(n, all_aligned({y, bias}) && N % 8 == 0, bias_rows_op<bf16>{(bf16*)y, (const bf16*)bias, N},
                  "add_bias_rows");
  else
    fail_msg(op_name("add_bias_rows", t) + ": unsupported type");
}

void column_sum_accumulate(float* out, const void* x, int M, int N, dtype t) {
  if (t == dtype::f32)
    dev::column_reduce(out, M, N, column_value<float>{(const float*)x, N}, "column_sum_accumulate");
  else if (t == dtype::bf16)
    dev::column_reduce(out, M, N, column_value<bf16>{(const bf16*)x, N}, "column_sum_accumulate");
  else
    fail_msg(op_name("column_sum_accumulate", t) + ": unsupported type");
}

}  // namespace detail

}  // namespace gsa::cuda
