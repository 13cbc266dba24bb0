// RMSNorm on CUDA (contract: cuda/ops.h, cpu/ops.h). x, y, dy, dx (T, C) and w (C) of type t; rstd (T), dw (C) f32.
//   forward   y = (x * rstd) * w, rstd = 1 / sqrt(mean(x^2) + eps)    overwrites y and rstd
//   backward  dx += rstd * (dy*w - x * (mean(dy*w*x) * rstd^2))        accumulate (type t, one rounding)
//             dw += sum over rows of dy * x * rstd                      accumulate (f32), deterministic
// One block per row for the row-wise passes (sums in f32, fixed reduction tree); dw is a two-pass column
// reduction (ops-device.cuh). Rows are read with 16-byte packs when C and the pointers allow it.
#include "backend/cuda/ops-device.cuh"
#include "backend/cuda/ops.h"

namespace gsa::cuda {

namespace {

using dev::bf16;
using dev::load_f;
using dev::store_f;

template <class T, int W>
__global__ void rmsnorm_forward_kernel(T* y, float* rstd, const T* x, const T* w, int C, float eps) {
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * C;
  T* yr = y + row * C;
  float ss = 0.0f;
  for (int c = threadIdx.x * W; c < C; c += blockDim.x * W) {
    float v[W];
    load_f<T, W>(v, xr + c);
#pragma unroll
    for (int k = 0; k < W; k++) ss += v[k] * v[k];
  }
  ss = dev::block_sum(ss, red);
  const float r = 1.0f / sqrtf(ss / float(C) + eps);
  if (rstd && threadIdx.x == 0) rstd[row] = r;
  for (int c = threadIdx.x * W; c < C; c += blockDim.x * W) {
    float v[W], g[W];
    load_f<T, W>(v, xr + c);
    load_f<T, W>(g, w + c);
#pragma unroll
    for (int k = 0; k < W; k++) v[k] = (v[k] * r) * g[k];
    store_f<T, W>(yr + c, v);
  }
}

template <class T, int W>
__global__ void rmsnorm_backward_dx_kernel(T* dx, const T* dy, const T* x, const T* w, const float* rstd, int C) {
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * C;
  const T* dyr = dy + row * C;
  T* dxr = dx + row * C;
  float dot = 0.0f;
  for (int c = threadIdx.x * W; c < C; c += blockDim.x * W) {
    float a[W], b[W], g[W];
    load_f<T, W>(a, dyr + c);
    load_f<T, W>(b, xr + c);
    load_f<T, W>(g, w + c);
#pragma unroll
    for (int k = 0; k < W; k++) dot += a[k] * g[k] * b[k];
  }
  dot = dev::block_sum(dot, red);
  const float r = rstd[row];
  const float kf = (dot / float(C)) * r * r;  // mean(dy*w*n) / rstd with n = x * rstd folded in
  for (int c = threadIdx.x * W; c < C; c += blockDim.x * W) {
    float a[W], b[W], g[W], o[W];
    load_f<T, W>(a, dyr + c);
    load_f<T, W>(b, xr + c);
    load_f<T, W>(g, w + c);
    load_f<T, W>(o, dxr + c);
#pragma unroll
    for (int k = 0; k < W; k++) o[k] += r * (a[k] * g[k] - b[k] * kf);
    store_f<T, W>(dxr + c, o);
  }
}

template <class T>
struct dw_term {
  const T *dy, *x;
  const float* rstd;
  int C;
  __device__ float operator()(int r, int c) const {
    const int64_t i = int64_t(r) * C + c;
    return dev::to_f(dy[i]) * dev::to_f(x[i]) * rstd[r];
  }
};

bool packed_ok(int C, int W, std::initializer_list<const void*> ps) {
  if (C % W != 0) return false;
  for (const void* p : ps)
    if (p && !dev::aligned16(p)) return false;
  return true;
}

template <class T>
void forward_impl(void* y, float* rstd, const void* x, const void* w, int T_, int C, float eps) {
  constexpr int W = dev::vec16<T>;
  cudaStream_t st = ctx().stream;
  if (packed_ok(C, W, {y, x, w}))
    rmsnorm_forward_kernel<T, W><<<T_, dev::row_threads(C / W), 0, st>>>((T*)y, rstd, (const T*)x, (const T*)w, C,
                                                                          eps);
  else
    rmsnorm_forward_kernel<T, 1><<<T_, dev::row_threads(C), 0, st>>>((T*)y, rstd, (const T*)x, (const T*)w, C, eps);
  check_launch("rmsnorm_forward", __FILE__, __LINE__);
}

template <class T>
void backward_impl(void* dx, float* dw, const void* dy, const void* x, const void* w, const float* rstd, int T_,
                   int C) {
  constexpr int W = dev::vec16<T>;
  cudaStream_t st = ctx().stream;
  if (dx) {
    if (packed_ok(C, W, {dx, dy, x, w}))
      rmsnorm_backward_dx_kernel<T, W><<<T_, dev::row_threads(C / W), 0, st>>>(
          (T*)dx, (const T*)dy, (const T*)x, (const T*)w, rstd, C);
    else
      rmsnorm_backward_dx_kernel<T, 1><<<T_, dev::row_threads(C), 0, st>>>((T*)dx, (const T*)dy, (const T*)x,
                                                                            (const T*)w, rstd, C);
    check_launch("rmsnorm_backward (dx)", __FILE__, __LINE__);
  }
  if (dw) dev::column_reduce(dw, T_, C, dw_term<T>{(const T*)dy, (const T*)x, rstd, C}, "rmsnorm_backward (dw)");
}

}  // namespace

void rmsnorm_forward(void* y, float* rstd, const void* x, const void* w, int T, int C, float eps, dtype t) {
  detail::check_activation_type(t, "rmsnorm_forward");
  if (T < 0 || C <= 0) fail_msg("cuda rmsnorm_forward: bad shape (T " + std::to_string(T) + ", C " +
                                std::to_string(C) + ")");
  if (T == 0) return;
  if (!y || !x || !w) fail_msg("cuda rmsnorm_forward: null y, x or w");
  if (t == dtype::f32)
    forward_impl<float>(y, rstd, x, w, T, C, eps);
  else
    forward_impl<bf16>(y, rstd, x, w, T, C, eps);
}

void rmsnorm_backward(void* dx, float* dw, const void* dy, const void* x, const void* w, const float* rstd, int T,
                      int C, dtype t) {
  detail::check_activation_type(t, "rmsnorm_backward");
  if (T < 0 || C <= 0) fail_msg("cuda rmsnorm_backward: bad shape (T " + std::to_string(T) + ", C " +
                                std::to_string(C) + ")");
  if (T == 0 || (!dx && !dw)) return;
  if (!dy || !x || !rstd || (dx && !w)) fail_msg("cuda rmsnorm_backward: null dy, x, w or rstd");
  if (t == dtype::f32)
    backward_impl<float>(dx, dw, dy, x, w, rstd, T, C);
  else
    backward_impl<bf16>(dx, dw, dy, x, w, rstd, T, C);
}

}  // namespace gsa::cuda
