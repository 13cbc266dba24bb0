// Attention probabilities of a decode step's listed keys (H2O's accumulation; contract: decode-attention.h,
// run_decode_weights). One warp per list entry: the warp reads the key row once (D / 32 elements a lane, widened
// to f32), and for each query head of the group reduces q . k across the warp and adds exp(scale * q . k - lse).
// The normaliser lse comes from run_decode over the same lists, so the weights of a list sum to 1 per query head.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "backend/cuda/decode-attention.h"
#include "backend/cuda/ops-device.cuh"
#include "core/error.h"

namespace gsa::cuda {
namespace {

constexpr int kWarps = 4;

template <class T, int D>
__global__ void __launch_bounds__(kWarps * 32)
    weights_kernel(const T* __restrict__ q, int64_t q_stride_b, int64_t q_stride_h, const T* __restrict__ k,
                   const T* __restrict__ host_k, int64_t kv_stride_t, int64_t kv_stride_h,
                   const int64_t* __restrict__ kv_row_offset, const int64_t* __restrict__ indptr,
                   const int32_t* __restrict__ indices, const float* __restrict__ lse, int64_t lse_stride_b, int Hkv,
                   int G, float scale, float* __restrict__ weights) {
  constexpr int E = D / 32;  // elements per lane
  const int list = blockIdx.y, b = list / Hkv, h = list % Hkv;
  const int lane = threadIdx.x & 31;
  const int64_t e = indptr[list] + int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (e >= indptr[list + 1]) return;
  int64_t r = indices[e];
  const T* base = k;
  if (host_k && r >= kv_host_row0) {
    base = host_k;
    r -= kv_host_row0;
  } else if (kv_row_offset) {
    r += kv_row_offset[b];
  }
  const T* kp = base + r * kv_stride_t + int64_t(h) * kv_stride_h + lane * E;
  float kf[E];
#pragma unroll
  for (int i = 0; i < E; i++) kf[i] = dev::to_f(kp[i]);
  float w = 0;
  for (int g = 0; g < G; g++) {
    const int hq = h * G + g;
    const T* qp = q + int64_t(b) * q_stride_b + int64_t(hq) * q_stride_h + lane * E;
    float dot = 0;
#pragma unroll
    for (int i = 0; i < E; i++) dot += dev::to_f(qp[i]) * kf[i];
    dot = dev::warp_sum(dot);
    w += expf(scale * dot - lse[int64_t(b) * lse_stride_b + hq]);
  }
  if (lane == 0) weights[e] = w;
}

template <class T>
void launch(const decode_params& p, const float* lse, float* weights, int64_t longest, cudaStream_t st) {
  const dim3 grid(unsigned((longest + kWarps - 1) / kWarps), unsigned(p.batch * p.n_kv_heads));
  const int G = p.n_q_heads / p.n_kv_heads;
  auto* q = static_cast<const T*>(p.q);
  auto* k = static_cast<const T*>(p.k);
  auto* hk = static_cast<const T*>(p.host_k);
  if (p.head_dim == 32)
    weights_kernel<T, 32><<<grid, kWarps * 32, 0, st>>>(q, p.q_stride_b, p.q_stride_h, k, hk, p.kv_stride_t,
                                                       p.kv_stride_h, p.kv_row_offset, p.indptr, p.indices, lse,
                                                       p.lse_stride_b, p.n_kv_heads, G, p.scale, weights);
  else if (p.head_dim == 64)
    weights_kernel<T, 64><<<grid, kWarps * 32, 0, st>>>(q, p.q_stride_b, p.q_stride_h, k, hk, p.kv_stride_t,
                                                       p.kv_stride_h, p.kv_row_offset, p.indptr, p.indices, lse,
                                                       p.lse_stride_b, p.n_kv_heads, G, p.scale, weights);
  else
    weights_kernel<T, 128><<<grid, kWarps * 32, 0, st>>>(q, p.q_stride_b, p.q_stride_h, k, hk, p.kv_stride_t,
                                                        p.kv_stride_h, p.kv_row_offset, p.indptr, p.indices, lse,
                                                        p.lse_stride_b, p.n_kv_heads, G, p.scale, weights);
}

}  // namespace

void run_decode_weights(const decode_params& p, const float* lse, float* weights, int64_t longest, void* stream) {
  if (p.seqs || p.n_shared > 0)
    fail("decode weights: a launch of decode_seq sequences or with a shared prefix is not supported");
  if (p.head_dim != 32 && p.head_dim != 64 && p.head_dim != 128)
    fail("decode weights: head_dim {} is not supported (32, 64 or 128)", p.head_dim);
  if (p.n_kv_heads <= 0 || p.n_q_heads % p.n_kv_heads != 0)
    fail("decode weights: {} query heads for {} KV heads", p.n_q_heads, p.n_kv_heads);
  if (!p.q || !p.k || !p.indptr || !p.indices || !lse || !weights)
    fail("decode weights: q, k, indptr, indices, lse and weights must all be set");
  if (p.batch == 0 || longest <= 0) return;
  const auto st = static_cast<cudaStream_t>(stream);
  if (p.kv_dtype == decode_dtype::f32) launch<float>(p, lse, weights, longest, st);
  else launch<__nv_bfloat16>(p, lse, weights, longest, st);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) fail("decode weights: launch failed: {}", cudaGetErrorString(e));
}

}  // namespace gsa::cuda
