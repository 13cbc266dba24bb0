// Device helpers shared by the CUDA op kernels (nvcc only): f32 <-> storage-type conversion, 16-byte vector packs,
// block reductions and a deterministic two-pass column reduction.
//
// Vector packs: pack<T, N> is N elements aligned to their total size, so a 16-byte pack is one 128-bit load.
// Kernels are templated on the pack width; the host picks the 16-byte width only when every pointer is 16-byte
// aligned and the row length is a multiple of it, else width 1 (odd shapes such as C = 4 in bf16, or offsets).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "backend/cuda/ops-internal.h"

namespace gsa::cuda::dev {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }

template <class T>
__device__ __forceinline__ T from_f(float x);
template <>
__device__ __forceinline__ float from_f<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ bf16 from_f<bf16>(float x) {
  return __float2bfloat16_rn(x);
}

template <class T, int N>
struct alignas(sizeof(T) * N) pack {
  T v[N];
};

// Elements per 16-byte pack.
template <class T>
constexpr int vec16 = int(16 / sizeof(T));

template <class T, int N>
__device__ __forceinline__ void load_f(float (&out)[N], const T* p) {
  const pack<T, N> k = *reinterpret_cast<const pack<T, N>*>(p);
#pragma unroll
  for (int i = 0; i < N; i++) out[i] = to_f(k.v[i]);
}

template <class T, int N>
__device__ __forceinline__ void store_f(T* p, const float (&in)[N]) {
  pack<T, N> k;
#pragma unroll
  for (int i = 0; i < N; i++) k.v[i] = from_f<T>(in[i]);
  *reinterpret_cast<pack<T, N>*>(p) = k;
}

template <class V>
__device__ __forceinline__ V warp_sum(V v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result. The order of
// additions depends only on blockDim, so results are reproducible. smem: 32 values of V. Ends with a barrier
// so smem may be reused right away.
template <class V>
__device__ V block_sum(V v, V* smem) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  V r = lane < n_warps ? smem[lane] : V(0);
  r = warp_sum(r);
  __syncthreads();
  return r;
}

__device__ inline float block_max(float v, float* smem) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
  v = warp_max(v);
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  float r = lane < n_warps ? smem[lane] : -INFINITY;
  r = warp_max(r);
  __syncthreads();
  return r;
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Threads for a row kernel over `units` packs per row: a multiple of 32 in [32, 256].
inline int row_threads(int units) {
  int t = (units + 31) / 32 * 32;
  return t < 32 ? 32 : (t > 256 ? 256 : t);
}

// Blocks for a grid-stride loop over n items with `threads` per block (bounded, at least 1).
inline unsigned grid_for(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  const int64_t cap = int64_t(ctx().sm_count) * 32;
  if (b > cap) b = cap;
  return unsigned(b < 1 ? 1 : b);
}

// ---- deterministic column reduction: out (N) += sum over rows r < M of f(r, c) -------------------------------
// Pass 1: partial[s][c] = f summed over the rows of split s, in row order (one thread per column: loads are
// coalesced along the row). Pass 2: out[c] += the partials summed in split order. No atomics, so the result
// depends only on (M, N), never on scheduling.
template <class F>
__global__ void column_partial_kernel(float* partial, int M, int N, int rows_per_split, F f) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= N) return;
  const int r0 = blockIdx.y * rows_per_split;
  const int r1 = min(M, r0 + rows_per_split);
  float acc = 0.0f;
  for (int r = r0; r < r1; r++) acc += f(r, c);
  partial[int64_t(blockIdx.y) * N + c] = acc;
}

template <int = 0>  // a template, so each translation unit may instantiate it without clashing
__global__ void column_finish_kernel(float* out, const float* partial, int splits, int N) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= N) return;
  float acc = 0.0f;
  for (int s = 0; s < splits; s++) acc += partial[int64_t(s) * N + c];
  out[c] += acc;
}

template <class F>
void column_reduce(float* out, int M, int N, F f, const char* what) {
  if (M <= 0 || N <= 0) return;
  // At most 256 splits of at least 32 rows: enough blocks to fill the device, partials of at most 256 N floats.
  int rows_per_split = (M + 255) / 256;
  if (rows_per_split < 32) rows_per_split = 32;
  const int splits = (M + rows_per_split - 1) / rows_per_split;
  detail::scratch partial(size_t(splits) * size_t(N) * sizeof(float));
  constexpr int threads = 256;
  const dim3 grid((N + threads - 1) / threads, splits);
  cudaStream_t st = ctx().stream;
  column_partial_kernel<<<grid, threads, 0, st>>>(partial.as<float>(), M, N, rows_per_split, f);
  check_launch(what, __FILE__, __LINE__);
  column_finish_kernel<><<<(N + threads - 1) / threads, threads, 0, st>>>(out, partial.as<float>(), splits, N);
  check_launch(what, __FILE__, __LINE__);
}

}  // namespace gsa::cuda::dev
