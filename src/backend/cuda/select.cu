// Kernels of the GPU chunk selection (contract: select.h). Two kernels per batch of blocks:
//
// score_kernel: one CTA per (block, query head); the block's q rows for that head are staged in shared memory
//   (f32, rows_tile at a time), each thread owns candidate units u = tid, tid + blockDim, ... and keeps the
//   unit's gist key in registers (D = 64 / 128; other D read k from global). The dot product is exactly the
//   CPU's: f32, d = 0..D-1, __fmul_rn / __fadd_rn so nvcc cannot contract into FMA, then __fmul_rn by scale.
//   The max is std::max's (best < v ? v : best), so NaN scores are skipped as on the CPU.
//
// topk_kernel: one CTA per (block, KV head). For each query head of the group (or the group's f32 sum): an
//   exact radix select of the k-th largest order key (4 passes of 8-bit histograms), then every candidate with
//   a larger key, plus the lowest-index candidates equal to it until k are taken (ties: lower index wins). The
//   chosen candidates set bits in a shared-memory bitmask (the union); the mask is compacted into ascending ids.
//   Order key: NaN -> -inf and -0 -> +0 first (gist::select's rank_value and operator> see them equal), then the
//   usual monotone float -> uint32 map.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "backend/cuda/ops-device.cuh"
#include "backend/cuda/runtime.h"
#include "backend/cuda/select-kernels.cuh"
#include "backend/cuda/select.h"

namespace gsa::cuda::select_detail {

namespace {

// ---- scores ----

template <class T, int DC, bool VEC>
__global__ void __launch_bounds__(score_threads)
    score_kernel(const block_desc* __restrict__ blocks, const T* __restrict__ q, const T* __restrict__ k, int Hq,
                 int Hkv, int D_rt, int64_t q_st, int64_t k_st, float scale, const int32_t* __restrict__ gist_begin, int g,
                 float* __restrict__ scores, int rows_tile) {
  extern __shared__ float qs[];  // (rows_tile, D)
  const block_desc b = blocks[blockIdx.x];
  const int h = blockIdx.y;
  const int hk = h / (Hq / Hkv);
  const int D = DC > 0 ? DC : D_rt;
  float* out = scores + b.score_off + int64_t(h) * b.n_cand;
  constexpr int V = VEC ? dev::vec16<T> : 1;

  for (int t0 = 0; t0 < b.rows; t0 += rows_tile) {
    const int nt = min(rows_tile, b.rows - t0);
    for (int idx = threadIdx.x * V; idx < nt * D; idx += blockDim.x * V) {
      const int t = idx / D, d = idx - t * D;  // V divides D on the vector path
      const T* src = q + int64_t(b.row0 + t0 + t) * q_st + int64_t(h) * D + d;
      float v[V];
      if constexpr (VEC) {
        dev::load_f<T, V>(v, src);
      } else {
        v[0] = dev::to_f(src[0]);
      }
#pragma unroll
      for (int i = 0; i < V; i++) qs[idx + i] = v[i];
    }
    __syncthreads();
    for (int u = threadIdx.x; u < b.n_cand; u += blockDim.x) {
      float best = t0 == 0 ? -INFINITY : out[u];
      for (int r = 0; r < g; r++) {
        const T* kp = k + int64_t(gist_begin[u] + r) * k_st + int64_t(hk) * D;
        if constexpr (DC > 0) {
          float kr[DC];
#pragma unroll
          for (int d = 0; d < DC; d += V) {
            float v[V];
            if constexpr (VEC) {
              dev::load_f<T, V>(v, kp + d);
            } else {
              v[0] = dev::to_f(kp[d]);
            }
#pragma unroll
            for (int i = 0; i < V; i++) kr[d + i] = v[i];
          }
          for (int t = 0; t < nt; t++) {
            const float* qr = qs + t * DC;
            float dot = 0.0f;
#pragma unroll
            for (int d = 0; d < DC; d++) dot = __fadd_rn(dot, __fmul_rn(qr[d], kr[d]));
            const float v = __fmul_rn(dot, scale);
            best = best < v ? v : best;
          }
        } else {
          for (int t = 0; t < nt; t++) {
            const float* qr = qs + t * D;
            float dot = 0.0f;
            for (int d = 0; d < D; d++) dot = __fadd_rn(dot, __fmul_rn(qr[d], dev::to_f(kp[d])));
            const float v = __fmul_rn(dot, scale);
            best = best < v ? v : best;
          }
        }
      }
      out[u] = best;
    }
    __syncthreads();
  }
}

// score_rows_kernel: the same scores for batches of one-row blocks (per-token selection), R consecutive blocks
// and the G query heads of one KV head per CTA: the R * G query vectors sit in shared memory and each thread
// streams its candidate units' gist keys once through registers against all of them (score_kernel reads every
// key once per row and query head). Same operations per dot product (f32, d in order, no FMA), four independent
// dot products at a time.
template <class T, int DC>
__global__ void __launch_bounds__(score_threads)
    score_rows_kernel(const block_desc* __restrict__ blocks, int n_blocks, int R, const T* __restrict__ q,
                      const T* __restrict__ k, int Hq, int Hkv, int64_t q_st, int64_t k_st, float scale,
                      const int32_t* __restrict__ gist_begin, int g, float* __restrict__ scores) {
  extern __shared__ float qv[];  // (nb * G, DC): block i, head j of the group at i * G + j
  __shared__ block_desc bd[score_rows_max];
  const int G = Hq / Hkv, hk = blockIdx.y, b0 = blockIdx.x * R, nb = min(R, n_blocks - b0);
  constexpr int V = dev::vec16<T>;
  if (int(threadIdx.x) < nb) bd[threadIdx.x] = blocks[b0 + threadIdx.x];
  __syncthreads();
  const int n = nb * G;
  for (int idx = threadIdx.x * V; idx < n * DC; idx += blockDim.x * V) {
    const int x = idx / DC, d = idx - x * DC, i = x / G, j = x - i * G;
    float v[V];
    dev::load_f<T, V>(v, q + int64_t(bd[i].row0) * q_st + int64_t(hk * G + j) * DC + d);
#pragma unroll
    for (int e = 0; e < V; e++) qv[idx + e] = v[e];
  }
  int max_cand = 0;
  for (int i = 0; i < nb; i++) max_cand = max(max_cand, bd[i].n_cand);
  __syncthreads();
  for (int u = threadIdx.x; u < max_cand; u += blockDim.x) {
    for (int r = 0; r < g; r++) {
      float kr[DC];
      const T* kp = k + int64_t(gist_begin[u] + r) * k_st + int64_t(hk) * DC;
#pragma unroll
      for (int d = 0; d < DC; d += V) {
        float v[V];
        dev::load_f<T, V>(v, kp + d);
#pragma unroll
        for (int e = 0; e < V; e++) kr[d + e] = v[e];
      }
      for (int x0 = 0; x0 < n; x0 += 4) {
        float acc[4] = {0.f, 0.f, 0.f, 0.f};
        const float* qr[4];
#pragma unroll
        for (int c = 0; c < 4; c++) qr[c] = qv + min(x0 + c, n - 1) * DC;  // past the end: a copy, discarded
#pragma unroll
        for (int d = 0; d < DC; d += 4)
#pragma unroll
          for (int c = 0; c < 4; c++) {
            const float4 a = *reinterpret_cast<const float4*>(qr[c] + d);
            acc[c] = __fadd_rn(acc[c], __fmul_rn(a.x, kr[d]));
            acc[c] = __fadd_rn(acc[c], __fmul_rn(a.y, kr[d + 1]));
            acc[c] = __fadd_rn(acc[c], __fmul_rn(a.z, kr[d + 2]));
            acc[c] = __fadd_rn(acc[c], __fmul_rn(a.w, kr[d + 3]));
          }
#pragma unroll
        for (int c = 0; c < 4; c++) {
          const int x = x0 + c, i = x / G, j = x - i * G;
          if (x >= n || u >= bd[i].n_cand) continue;
          const float v = __fmul_rn(acc[c], scale);
          float* o = scores + bd[i].score_off + int64_t(hk * G + j) * bd[i].n_cand + u;
          const float best = r == 0 ? -INFINITY : *o;
          *o = best < v ? v : best;
        }
      }
    }
  }
}

__global__ void __launch_bounds__(topk_threads)
    topk_kernel(const block_desc* __restrict__ blocks, float* __restrict__ scores, int Hq, int Hkv,
                bool group_scoring, int32_t* __restrict__ ids, int32_t* __restrict__ counts) {
  extern __shared__ uint32_t mask[];  // (ceil(n_cand / 32))
  __shared__ topk_smem sm;
  const block_desc b = blocks[blockIdx.x];
  const int h = blockIdx.y;
  const int G = Hq / Hkv;
  const int n = b.n_cand;
  const int words = (n + 31) / 32;
  for (int w = threadIdx.x; w < words; w += blockDim.x) mask[w] = 0;
  float* rows = scores + b.score_off + int64_t(h) * G * n;  // (G, n) of this KV head
  if (group_scoring) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      float sum = 0.0f;
      for (int j = 0; j < G; j++) sum = __fadd_rn(sum, rows[int64_t(j) * n + i]);
      rows[i] = sum;
    }
  }
  __syncthreads();
  const int heads = group_scoring ? 1 : G;
  for (int j = 0; j < heads; j++) select_row(rows + int64_t(j) * n, n, b.k, mask, sm);
  __syncthreads();

  // Compact the mask into ascending ids: each thread takes a contiguous range of words.
  const int per = (words + blockDim.x - 1) / blockDim.x;
  const int w0 = min(words, int(threadIdx.x) * per), w1 = min(words, w0 + per);
  int mine = 0;
  for (int w = w0; w < w1; w++) mine += __popc(mask[w]);
  int total = 0;
  int at = block_exclusive_scan(mine, sm, &total);
  int32_t* out = ids + b.id_off + int64_t(h) * b.cap;
  for (int w = w0; w < w1; w++) {
    uint32_t m = mask[w];
    while (m) {
      const int bit = __ffs(m) - 1;
      m &= m - 1;
      if (at < b.cap) out[at] = w * 32 + bit;
      at++;
    }
  }
  if (threadIdx.x == 0) counts[int64_t(blockIdx.x) * Hkv + h] = min(total, b.cap);
}

// ---- top-k + union, one warp per (block, KV head) ----
// The same selection as topk_kernel (the k-th key by warp_select_keys's range select, ties to the lower index, union over the
// group's heads or the group sum) with a warp instead of a CTA: per-token selection has many small candidate
// lists (a few hundred per row), where topk_kernel's CTA barriers and idle threads cost more than the work.

constexpr int topk_warps = 8;

__device__ void warp_select_row(const float* __restrict__ s, int n, int k, uint32_t* mask, int* hist, int lane,
                                bool radix) {
  if (k <= 0) return;
  if (k >= n) {
    for (int i0 = 0; i0 < n; i0 += 32) {
      const unsigned bits = __ballot_sync(0xffffffffu, i0 + lane < n);
      if (lane == 0) mask[i0 >> 5] |= bits;
    }
    __syncwarp();
    return;
  }
  warp_select_keys([&](int i) { return order_key(s[i]); }, n, k, mask, hist, lane, radix);
}

__global__ void __launch_bounds__(32 * topk_warps)
    topk_warp_kernel(const block_desc* __restrict__ blocks, int n_blocks, float* __restrict__ scores, int Hq,
                     int Hkv, bool group_scoring, int32_t* __restrict__ ids, int32_t* __restrict__ counts,
                     int words_max, bool radix) {
  extern __shared__ int wsm[];  // per warp: hist[256], then mask[words_max]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t item = int64_t(blockIdx.x) * topk_warps + warp;
  if (item >= int64_t(n_blocks) * Hkv) return;  // warp-uniform; no CTA-wide barrier below
  const int bi = int(item / Hkv), h = int(item % Hkv);
  const block_desc b = blocks[bi];
  const int G = Hq / Hkv, n = b.n_cand, words = (n + 31) / 32;
  int* hist = wsm + warp * (256 + words_max);
  uint32_t* mask = reinterpret_cast<uint32_t*>(hist + 256);
  for (int w = lane; w < words; w += 32) mask[w] = 0;
  float* rows = scores + b.score_off + int64_t(h) * G * n;
  if (group_scoring) warp_group_sum(rows, n, G, lane);
  __syncwarp();
  const int heads = group_scoring ? 1 : G;
  for (int j = 0; j < heads; j++) warp_select_row(rows + int64_t(j) * n, n, b.k, mask, hist, lane, radix);
  const int at = warp_emit_ids(mask, words, ids + b.id_off + int64_t(h) * b.cap, b.cap, lane);
  if (lane == 0) counts[int64_t(bi) * Hkv + h] = min(at, b.cap);
}

template <class T>
void launch_scores_t(const block_desc* blocks, int n_blocks, const void* q, const void* k, int Hq, int Hkv, int D,
                     int64_t q_st, int64_t k_st, float scale, const int32_t* gist_begin, int g, float* scores, int rows_tile, bool vec,
                     bool one_row, cudaStream_t st) {
  const dim3 grid{unsigned(n_blocks), unsigned(Hq)};
  const size_t smem = size_t(rows_tile) * D * sizeof(float);
  const T* qt = static_cast<const T*>(q);
  const T* kt = static_cast<const T*>(k);
  if (one_row && vec && (D == 64 || D == 128)) {  // R * G query vectors of at most 32 KiB per CTA
    const int G = Hq / Hkv, R = std::max(1, std::min(score_rows_max, 64 / G));
    const dim3 grid_rows{unsigned((n_blocks + R - 1) / R), unsigned(Hkv)};
    const size_t smem_rows = size_t(R) * G * D * sizeof(float);
    if (D == 64)
      score_rows_kernel<T, 64><<<grid_rows, score_threads, smem_rows, st>>>(blocks, n_blocks, R, qt, kt, Hq, Hkv, q_st,
                                                                            k_st, scale, gist_begin, g, scores);
    else
      score_rows_kernel<T, 128><<<grid_rows, score_threads, smem_rows, st>>>(blocks, n_blocks, R, qt, kt, Hq, Hkv, q_st,
                                                                             k_st, scale, gist_begin, g, scores);
    return;
  }
  if (vec && D == 64)
    score_kernel<T, 64, true><<<grid, score_threads, smem, st>>>(blocks, qt, kt, Hq, Hkv, D, q_st, k_st, scale, gist_begin, g,
                                                                 scores, rows_tile);
  else if (vec && D == 128)
    score_kernel<T, 128, true><<<grid, score_threads, smem, st>>>(blocks, qt, kt, Hq, Hkv, D, q_st, k_st, scale, gist_begin,
                                                                  g, scores, rows_tile);
  else
    score_kernel<T, 0, false><<<grid, score_threads, smem, st>>>(blocks, qt, kt, Hq, Hkv, D, q_st, k_st, scale, gist_begin, g,
                                                                 scores, rows_tile);
}

}  // namespace

void launch_scores(const block_desc* blocks, int n_blocks, const void* q, const void* k, bool bf16_in, int Hq,
                   int Hkv, int D, int64_t q_st, int64_t k_st, float scale, const int32_t* gist_begin, int g,
                   float* scores, int rows_tile, bool vec, bool one_row, void* stream) {
  if (n_blocks <= 0) return;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (bf16_in)
    launch_scores_t<bf16>(blocks, n_blocks, q, k, Hq, Hkv, D, q_st, k_st, scale, gist_begin, g, scores, rows_tile,
                           vec, one_row, st);
  else
    launch_scores_t<float>(blocks, n_blocks, q, k, Hq, Hkv, D, q_st, k_st, scale, gist_begin, g, scores, rows_tile,
                           vec, one_row, st);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) fail_msg(launch_error("score_kernel", e));
}

void launch_topk(const block_desc* blocks, int n_blocks, float* scores, int Hq, int Hkv, bool group_scoring,
                 int32_t* ids, int32_t* counts, int max_cand, bool one_row, void* stream) {
  if (n_blocks <= 0) return;
  if (max_cand > max_candidates)
    fail_msg("GPU chunk selection: " + std::to_string(max_cand) + " candidate chunks, at most " +
             std::to_string(max_candidates) + " supported; use a larger chunk or the CPU selection");
  if (one_row && max_cand <= 16384) {  // many small lists: a warp each (at most 24 KiB of shared memory)
    const int words = (max_cand + 31) / 32;
    const int64_t items = int64_t(n_blocks) * Hkv, grid = (items + topk_warps - 1) / topk_warps;
    const size_t wsmem = size_t(topk_warps) * (256 + words) * sizeof(int);
    topk_warp_kernel<<<unsigned(grid), 32 * topk_warps, wsmem, static_cast<cudaStream_t>(stream)>>>(
        blocks, n_blocks, scores, Hq, Hkv, group_scoring, ids, counts, words, warp_radix_topk());
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) fail_msg(launch_error("topk_warp_kernel", e));
    return;
  }
  const size_t smem = size_t((max_cand + 31) / 32) * sizeof(uint32_t);
  topk_kernel<<<dim3(unsigned(n_blocks), unsigned(Hkv)), topk_threads, smem, static_cast<cudaStream_t>(stream)>>>(
      blocks, scores, Hq, Hkv, group_scoring, ids, counts);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) fail_msg(launch_error("topk_kernel", e));
}

namespace {

// One warp per selecting block: its (Hkv) id lists into every row of the block in the dense tables, and the
// block's totals (chunks, keys) into totals[0..1]. gist_end / listed (several gist levels, else null): an unfolded
// chunk outside the row's listed level-0 units adds its level-0 gists too (row-unfold.h, unfold_key_end).
__global__ void __launch_bounds__(32)
    scatter_rows_kernel(const block_desc* __restrict__ blocks, const int32_t* __restrict__ ids,
                        const int32_t* __restrict__ counts, int Hkv, int cap, const int32_t* __restrict__ key_begin,
                        const int32_t* __restrict__ key_end, const int32_t* __restrict__ gist_end,
                        const int32_t* __restrict__ listed, int32_t* __restrict__ t_count,
                        int32_t* __restrict__ t_ids, unsigned long long* __restrict__ totals) {
  const block_desc b = blocks[blockIdx.x];
  const int lane = threadIdx.x;
  unsigned long long n_chunks = 0, n_keys = 0;
  for (int h = 0; h < Hkv; h++) {
    const int n = counts[int64_t(blockIdx.x) * Hkv + h];
    const int32_t* src = ids + b.id_off + int64_t(h) * b.cap;
    for (int r = 0; r < b.rows; r++) {
      const int64_t row = int64_t(b.row0) + r;
      for (int j = lane; j < n; j += 32) {
        const int32_t m = src[j];
        t_ids[(row * Hkv + h) * cap + j] = m;
        const bool with_gists = gist_end && !(m >= listed[2 * row] && m < listed[2 * row + 1]);
        n_keys += (unsigned long long)((with_gists ? gist_end[m] : key_end[m]) - key_begin[m]);
      }
      if (lane == 0) t_count[row * Hkv + h] = n;
    }
    n_chunks += (unsigned long long)n * (unsigned long long)b.rows;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) n_keys += __shfl_xor_sync(0xffffffffu, n_keys, o);
  if (lane == 0) {
    atomicAdd(totals, n_chunks);
    atomicAdd(totals + 1, n_keys);
  }
}

}  // namespace

void launch_scatter_rows(const block_desc* blocks, int n_blocks, const int32_t* ids, const int32_t* counts, int Hkv,
                         int cap, const int32_t* key_begin, const int32_t* key_end, const int32_t* gist_end,
                         const int32_t* listed, int32_t* t_count, int32_t* t_ids, unsigned long long* totals,
                         void* stream) {
  if (n_blocks <= 0) return;
  scatter_rows_kernel<<<unsigned(n_blocks), 32, 0, static_cast<cudaStream_t>(stream)>>>(
      blocks, ids, counts, Hkv, cap, key_begin, key_end, gist_end, listed, t_count, t_ids, totals);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) fail_msg(launch_error("scatter_rows_kernel", e));
}

}  // namespace gsa::cuda::select_detail
