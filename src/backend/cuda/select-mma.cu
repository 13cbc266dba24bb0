// The gist scores of per-token selection (one-row blocks) on tensor cores, bf16 inputs: the fast alternative to
// select.cu's score_rows_kernel, which sums each dot product in f32 in feature order without FMA so that the GPU's
// scores equal the CPU's bit for bit (select.h, "Arithmetic").
//
// Why: an unfolding prefill or a per-token training step scores every row against every earlier chunk's gists,
// T x T / (2 c_0) dot products per query head; on the FP32 pipes that cost as much as dense attention on tensor
// cores (docs/decode.md). Here a CTA takes R consecutive one-row blocks and the G query heads of one KV head
// (R G <= 64 query vectors, zero-padded, a warp per 16), stages the gist keys of 64 units at a time in shared
// memory and computes the 64 x 64 score tile with mma.sync m16n8k16 (bf16 x bf16 products are exact in f32; the
// sums run in the tensor cores' order). Then times scale, the max over the unit's g gists (NaN skipped, as
// std::max's best < v ? v : best), and each (block, head) row written where the block has candidates.
//
// What is kept: identical inputs give identical scores (every score is the same sequence of operations on its own
// q row and key, whatever the tile, CTA or pass), so ties still go to the lower index and a pass of a chunked
// prefill selects as the whole call; integer-valued data is scored exactly. What is not: bit equality with the
// CPU reference: two candidates within ~1e-6 (relative) of each other at the k-th place may swap.
// select_args::exact_scores (or GSA_SELECT_EXACT=1) keeps the exact kernel.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "backend/cuda/attention-mma.cuh"
#include "backend/cuda/runtime.h"
#include "backend/cuda/select.h"

namespace gsa::cuda::select_detail {

namespace {

using detail::bf16;

constexpr int mma_vectors = 64;  // query vectors per CTA (4 warps x 16)
constexpr int mma_units = 64;    // gist keys per shared-memory tile
constexpr int mma_max_rows = 16;

template <int D>
__global__ void __launch_bounds__(128)
    score_rows_mma_kernel(const block_desc* __restrict__ blocks, int n_blocks, int R, const bf16* __restrict__ q,
                          const bf16* __restrict__ k, int Hq, int Hkv, int64_t q_st, int64_t k_st, float scale,
                          const int32_t* __restrict__ gist_begin, int g, float* __restrict__ scores) {
  constexpr int LD = D + 8;  // 16-byte rows, distinct bank groups for ldmatrix
  constexpr int C = D / 8;   // 16-byte pieces per row
  __shared__ __align__(16) bf16 Qs[mma_vectors * LD];
  __shared__ __align__(16) bf16 Ks[mma_units * LD];
  __shared__ block_desc bd[mma_max_rows];
  const int G = Hq / Hkv, hk = blockIdx.y, b0 = blockIdx.x * R, nb = min(R, n_blocks - b0);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (int(threadIdx.x) < nb) bd[threadIdx.x] = blocks[b0 + threadIdx.x];
  __syncthreads();
  const int n = nb * G;  // query vector x = block i * G + head j of the group
  for (int idx = threadIdx.x; idx < mma_vectors * C; idx += blockDim.x) {
    const int x = idx / C, c = idx - x * C;
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (x < n) {
      const int i = x / G, j = x - i * G;
      v = *reinterpret_cast<const uint4*>(q + int64_t(bd[i].row0) * q_st + int64_t(hk * G + j) * D + c * 8);
    }
    *reinterpret_cast<uint4*>(Qs + x * LD + c * 8) = v;
  }
  int max_cand = 0;
  for (int i = 0; i < nb; i++) max_cand = max(max_cand, bd[i].n_cand);
  __syncthreads();

  uint32_t qf[D / 16][4];
#pragma unroll
  for (int ks = 0; ks < D / 16; ks++)
    detail::ldmatrix_x4(qf[ks], Qs + (warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + ks * 16 + (lane >> 4) * 8);
  // This thread's two query vectors (accumulator rows g and g + 8 of the warp's 16) and where their rows go.
  const int xa = warp * 16 + (lane >> 2);
  float* out[2] = {nullptr, nullptr};
  int lim[2] = {0, 0};
  for (int half = 0; half < 2; half++) {
    const int x = xa + half * 8;
    if (x >= n) continue;
    const int i = x / G, j = x - i * G;
    out[half] = scores + bd[i].score_off + int64_t(hk * G + j) * bd[i].n_cand;
    lim[half] = bd[i].n_cand;
  }

  for (int u0 = 0; u0 < max_cand; u0 += mma_units) {
    float best[mma_units / 8][4];
#pragma unroll
    for (int nt = 0; nt < mma_units / 8; nt++) best[nt][0] = best[nt][1] = best[nt][2] = best[nt][3] = -INFINITY;
    for (int r = 0; r < g; r++) {
      __syncthreads();  // the previous tile's reads of Ks are done
      for (int idx = threadIdx.x; idx < mma_units * C; idx += blockDim.x) {
        const int j = idx / C, c = idx - j * C, u = u0 + j;
        uint4 v = make_uint4(0u, 0u, 0u, 0u);
        if (u < max_cand)
          v = *reinterpret_cast<const uint4*>(k + int64_t(gist_begin[u] + r) * k_st + int64_t(hk) * D + c * 8);
        *reinterpret_cast<uint4*>(Ks + j * LD + c * 8) = v;
      }
      __syncthreads();
      float s[mma_units / 8][4];
      detail::mma_scores<D, mma_units, LD>(s, qf, Ks, lane);
#pragma unroll
      for (int nt = 0; nt < mma_units / 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const float v = __fmul_rn(s[nt][e], scale);
          best[nt][e] = best[nt][e] < v ? v : best[nt][e];
        }
    }
#pragma unroll
    for (int nt = 0; nt < mma_units / 8; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int half = e >> 1, u = u0 + nt * 8 + (lane & 3) * 2 + (e & 1);
        if (out[half] && u < lim[half]) out[half][u] = best[nt][e];
      }
  }
}

}  // namespace

bool scores_mma_supported(int D, int Hq, int Hkv) {
  return (D == 64 || D == 128) && Hq % Hkv == 0 && Hq / Hkv <= mma_vectors;
}

void launch_scores_mma(const block_desc* blocks, int n_blocks, const void* q, const void* k, int Hq, int Hkv, int D,
                       int64_t q_st, int64_t k_st, float scale, const int32_t* gist_begin, int g, float* scores,
                       void* stream) {
  if (n_blocks <= 0) return;
  const int G = Hq / Hkv, R = std::max(1, std::min(mma_max_rows, mma_vectors / G));
  const dim3 grid{unsigned((n_blocks + R - 1) / R), unsigned(Hkv)};
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const bf16* qb = static_cast<const bf16*>(q);
  const bf16* kb = static_cast<const bf16*>(k);
  if (D == 64)
    score_rows_mma_kernel<64><<<grid, 128, 0, st>>>(blocks, n_blocks, R, qb, kb, Hq, Hkv, q_st, k_st, scale, gist_begin,
                                                    g, scores);
  else
    score_rows_mma_kernel<128><<<grid, 128, 0, st>>>(blocks, n_blocks, R, qb, kb, Hq, Hkv, q_st, k_st, scale,
                                                     gist_begin, g, scores);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    fail_msg(std::string("GPU chunk selection: launch of score_rows_mma_kernel failed: ") + cudaGetErrorString(e));
}

}  // namespace gsa::cuda::select_detail
