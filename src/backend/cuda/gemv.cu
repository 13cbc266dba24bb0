// The decode step's matrix products: y (M, N) = x (M, K) @ w (N, K)^T + bias (N), for M <= gemv_max_rows rows (one
// row per session of a batched decode step). cuBLASLt's tiled kernels read the weights at well under the memory
// bandwidth when M is this small (the tile's other rows are wasted); here one warp computes one output column n
// for every row at once, streaming w's row n through 16-byte loads that bypass L1 (each weight is read once per
// step) while the M rows of x, shared by every warp, stay in L1. Accumulation in f32 (per lane in k order, then a
// butterfly over the warp), the bias added in f32, one rounding on store: the contract of cuda/ops.h, with another
// summation order than cuBLASLt's (so results differ from it in the last bits).
#include "backend/cuda/ops-device.cuh"
#include "backend/cuda/ops.h"

namespace gsa::cuda::detail {

namespace {

using dev::bf16;

constexpr int kWarps = 8;   // output columns per CTA
constexpr int kUnroll = 4;  // 16-byte weight loads in flight per lane

__device__ __forceinline__ uint4 load_streaming(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

// The 16 bytes u as floats.
__device__ __forceinline__ void widen(const uint4& u, float (&f)[4]) {
  f[0] = __uint_as_float(u.x), f[1] = __uint_as_float(u.y), f[2] = __uint_as_float(u.z), f[3] = __uint_as_float(u.w);
}
__device__ __forceinline__ void widen(const uint4& u, float (&f)[8]) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; i++) {
    // bf16 -> f32 is exact: the 16 bits are the high half of the f32.
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

template <class T, int MR>
__global__ void __launch_bounds__(kWarps * 32) gemv_kernel(T* __restrict__ y, const T* __restrict__ x,
                                                           const T* __restrict__ w, const T* __restrict__ bias, int K,
                                                           int N) {
  constexpr int V = dev::vec16<T>;  // elements per 16-byte load
  const int lane = threadIdx.x & 31;
  const int n = blockIdx.x * kWarps + (threadIdx.x >> 5);
  if (n >= N) return;
  const T* wr = w + size_t(n) * K;
  float acc[MR];
#pragma unroll
  for (int m = 0; m < MR; m++) acc[m] = 0.0f;
  auto step = [&](const uint4& wv, int k) {
    float wf[V], xf[V];
    widen(wv, wf);
#pragma unroll
    for (int m = 0; m < MR; m++) {
      widen(__ldg(reinterpret_cast<const uint4*>(x + size_t(m) * K + k)), xf);
#pragma unroll
      for (int i = 0; i < V; i++) acc[m] = fmaf(wf[i], xf[i], acc[m]);
    }
  };
  constexpr int stride = 32 * V;
  int k = lane * V;
  for (; k + (kUnroll - 1) * stride < K; k += kUnroll * stride) {
    uint4 wv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; u++) wv[u] = load_streaming(wr + k + u * stride);
#pragma unroll
    for (int u = 0; u < kUnroll; u++) step(wv[u], k + u * stride);
  }
  for (; k < K; k += stride) step(load_streaming(wr + k), k);
#pragma unroll
  for (int m = 0; m < MR; m++) acc[m] = dev::warp_sum(acc[m]);
  if (lane == 0) {
    const float b = bias ? dev::to_f(bias[n]) : 0.0f;
#pragma unroll
    for (int m = 0; m < MR; m++) y[size_t(m) * N + n] = dev::from_f<T>(acc[m] + b);
  }
}

template <class T>
void launch(void* y, const void* x, const void* w, const void* bias, int M, int K, int N) {
  const dim3 grid(unsigned((N + kWarps - 1) / kWarps)), block(kWarps * 32);
  cudaStream_t st = ctx().stream;
  T* yo = static_cast<T*>(y);
  const T *xi = static_cast<const T*>(x), *wi = static_cast<const T*>(w), *bi = static_cast<const T*>(bias);
  switch (M) {
#define GSA_GEMV_CASE(R) \
  case R:                \
    gemv_kernel<T, R><<<grid, block, 0, st>>>(yo, xi, wi, bi, K, N); \
    break;
    GSA_GEMV_CASE(1)
    GSA_GEMV_CASE(2)
    GSA_GEMV_CASE(3)
    GSA_GEMV_CASE(4)
    GSA_GEMV_CASE(5)
    GSA_GEMV_CASE(6)
    GSA_GEMV_CASE(7)
    GSA_GEMV_CASE(8)
#undef GSA_GEMV_CASE
  }
  check_launch("gemv_kernel", __FILE__, __LINE__);
}

}  // namespace

bool gemv_rows(void* y, const void* x, const void* w, const void* bias, int M, int K, int N, dtype t) {
  static_assert(gemv_max_rows == 8, "gemv_kernel is instantiated for 1 .. 8 rows");
  if (M < 1 || M > gemv_max_rows || K <= 0 || N <= 0 || !gemv_enabled()) return false;
  const int V = t == dtype::bf16 ? dev::vec16<bf16> : dev::vec16<float>;
  // 16-byte loads of every row of x and w: aligned bases and K a multiple of the load.
  if (K % V != 0 || !dev::aligned16(x) || !dev::aligned16(w)) return false;
  if (t == dtype::bf16)
    launch<bf16>(y, x, w, bias, M, K, N);
  else
    launch<float>(y, x, w, bias, M, K, N);
  return true;
}

}  // namespace gsa::cuda::detail
