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
#include <cstdint>
#include <string>

#include "backend/cuda/ops-device.cuh"
#include "backend/cuda/runtime.h"
#include "backend/cuda/select.h"

namespace gsa::cuda::select_detail {

namespace {

using dev::bf16;

constexpr int score_threads = 128;
constexpr int score_rows_max = 16;  // one-row blocks per CTA of score_rows_kernel
constexpr int topk_threads = 256;

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

// ---- top-k + union ----

__device__ __forceinline__ uint32_t order_key(float x) {
  if (isnan(x)) x = -INFINITY;
  if (x == 0.0f) x = 0.0f;  // -0 ranks equal to +0
  const uint32_t u = __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Threads of the decode top-k CTAs (one CTA per query head: few CTAs, so each is wide) and the candidates whose
// order keys they stage in shared memory (above it they read the scores from global memory).
constexpr int decode_topk_threads = 1024;
constexpr int decode_stage_max = 48 * 1024;

struct topk_smem {
  int hist[256];
  int warp_count[32];  // one per warp of the block (at most 1024 threads)
  uint32_t prefix;
  int remaining;
};

// Exclusive prefix over the block of `count` (one value per thread, in thread order); returns the prefix and
// writes the block total to *total. Barriers inside: every thread must call it.
__device__ int block_exclusive_scan(int count, topk_smem& sm, int* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int incl = count;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += y;
  }
  if (lane == 31) sm.warp_count[warp] = incl;
  __syncthreads();
  int before = 0, all = 0;
  for (int w = 0; w < int(blockDim.x) / 32; w++) {
    const int c = sm.warp_count[w];
    if (w < warp) before += c;
    all += c;
  }
  __syncthreads();  // warp_count may be reused right away
  *total = all;
  return before + incl - count;
}

// One radix pass's count of s[i] (i < n, key matching prefix in the bits above shift) into hist[256]; every lane
// of the warp calls it. Warp-aggregated: scores that share a bin (most do in the first passes: one exponent) add
// once per warp, not once per lane, so the shared-memory atomics do not serialise.
template <class KeyAt>
__device__ __forceinline__ void radix_count_keys(KeyAt key_at, int i, int n, uint32_t prefix, uint32_t high,
                                                 int shift, int* hist, int lane) {
  uint32_t key = 0;
  const bool in = i < n && (((key = key_at(i)) ^ prefix) & high) == 0;
  const unsigned active = __ballot_sync(0xffffffffu, in);
  if (in) {
    const uint32_t bin = (key >> shift) & 255u;
    const unsigned peers = __match_any_sync(active, bin);
    if (__ffs(peers) - 1 == lane) atomicAdd(&hist[bin], __popc(peers));
  }
}
__device__ __forceinline__ void radix_count(const float* __restrict__ s, int i, int n, uint32_t prefix,
                                            uint32_t high, int shift, int* hist, int lane) {
  radix_count_keys([&](int j) { return order_key(s[j]); }, i, n, prefix, high, shift, hist, lane);
}

// The bin holding the remaining-th largest key, searched from bin 255 down by one warp: lane j owns bins
// [8 j, 8 j + 8); a suffix sum over the lanes finds the lane, which walks its 8 bins (the serial walk over 256 bins
// it replaces cost more than the whole scan for a decode row's few hundred candidates). True on that one lane,
// with the prefix extended by the bin and how many of its keys are still to take.
__device__ __forceinline__ bool radix_find_bin(const int* hist, int lane, int remaining, uint32_t prefix, int shift,
                                               uint32_t& next_prefix, int& next_remaining) {
  int c[8], mine = 0;
#pragma unroll
  for (int j = 0; j < 8; j++) mine += c[j] = hist[lane * 8 + j];
  int incl = mine;  // keys in bins of lanes >= lane
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_down_sync(0xffffffffu, incl, o);
    if (lane + o < 32) incl += y;
  }
  const int above_lane = incl - mine;
  const int total = __shfl_sync(0xffffffffu, incl, 0);
  if (!((above_lane < remaining && remaining <= incl) || (lane == 0 && total < remaining))) return false;
  int above = above_lane, d = lane * 8 + 7;
  for (; d > lane * 8; d--) {
    if (above + c[d - lane * 8] >= remaining) break;
    above += c[d - lane * 8];
  }
  next_prefix = prefix | (uint32_t(d) << shift);
  next_remaining = remaining - above;
  return true;
}

// Sets in mask the bits of the top k of the n keys key_at(0 .. n-1) (order_key's; order: key descending, then
// index ascending). Every thread of the block calls it.
template <class KeyAt>
__device__ void select_row_keys(KeyAt key_at, int n, int k, uint32_t* mask, topk_smem& sm) {
  if (k <= 0) return;
  if (k >= n) {
    for (int i0 = 0; i0 < n; i0 += blockDim.x) {
      const int i = i0 + threadIdx.x;
      const unsigned bits = __ballot_sync(0xffffffffu, i < n);
      if ((threadIdx.x & 31) == 0 && bits) atomicOr(&mask[i >> 5], bits);
    }
    __syncthreads();
    return;
  }
  uint32_t prefix = 0;
  int remaining = k;  // how many of the keys matching prefix (in the bits fixed so far) still to take
  for (int shift = 24; shift >= 0; shift -= 8) {
    const uint32_t high = shift == 24 ? 0u : (~0u << (shift + 8));
    for (int i = threadIdx.x; i < 256; i += blockDim.x) sm.hist[i] = 0;
    __syncthreads();
    for (int i0 = 0; i0 < n; i0 += blockDim.x)  // the loop bound is uniform
      radix_count_keys(key_at, i0 + threadIdx.x, n, prefix, high, shift, sm.hist, int(threadIdx.x & 31));
    __syncthreads();
    uint32_t np;
    int nr;
    if (threadIdx.x < 32 && radix_find_bin(sm.hist, threadIdx.x, remaining, prefix, shift, np, nr)) {
      sm.prefix = np;
      sm.remaining = nr;
    }
    __syncthreads();
    prefix = sm.prefix;
    remaining = sm.remaining;
    __syncthreads();  // sm.prefix / sm.hist are rewritten by the next pass
  }
  // prefix is now the k-th largest key; `remaining` (>= 1) of the keys equal to it are taken, lowest index first.
  const uint32_t kth = prefix;
  // When every key equal to it is taken (distinct scores: one), one pass sets the bits without the scans below.
  int my_ties = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) my_ties += key_at(i) == kth;
  int all_ties = 0;
  block_exclusive_scan(my_ties, sm, &all_ties);
  if (all_ties == remaining) {
    for (int i0 = 0; i0 < n; i0 += blockDim.x) {
      const int i = i0 + threadIdx.x;
      const unsigned bits = __ballot_sync(0xffffffffu, i < n && key_at(i) >= kth);
      if ((threadIdx.x & 31) == 0 && bits) atomicOr(&mask[i >> 5], bits);
    }
    __syncthreads();
    return;
  }
  int taken_ties = 0;
  for (int base = 0; base < n; base += blockDim.x) {
    const int i = base + threadIdx.x;
    const uint32_t key = i < n ? key_at(i) : 0u;
    const int tie = (i < n && key == kth) ? 1 : 0;
    int tile_ties = 0;
    const int before = block_exclusive_scan(tie, sm, &tile_ties);
    // A warp's 32 consecutive indices are one mask word (blockDim is a multiple of 32): one atomicOr per warp.
    const unsigned bits =
        __ballot_sync(0xffffffffu, (i < n && key > kth) || (tie && taken_ties + before < remaining));
    if ((threadIdx.x & 31) == 0 && bits) atomicOr(&mask[i >> 5], bits);
    taken_ties += tile_ties;  // uniform over the block
  }
  __syncthreads();
}

__device__ void select_row(const float* __restrict__ s, int n, int k, uint32_t* mask, topk_smem& sm) {
  select_row_keys([&](int i) { return order_key(s[i]); }, n, k, mask, sm);
}

// select_row with the keys first converted into shared memory (staged: n words of dynamic shared memory), so
// the radix passes read shared memory; without room (staged null) it reads s.
__device__ void select_row_staged(const float* __restrict__ s, int n, int k, uint32_t* mask, topk_smem& sm,
                                  uint32_t* staged) {
  if (!staged || k <= 0 || k >= n) return select_row(s, n, k, mask, sm);
  for (int i = threadIdx.x; i < n; i += blockDim.x) staged[i] = order_key(s[i]);
  __syncthreads();
  select_row_keys([&](int i) { return staged[i]; }, n, k, mask, sm);
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
// The same selection as topk_kernel (radix select of the k-th key, ties to the lower index, union over the
// group's heads or the group sum) with a warp instead of a CTA: per-token selection has many small candidate
// lists (a few hundred per row), where topk_kernel's CTA barriers and idle threads cost more than the work.

constexpr int topk_warps = 8;

__device__ void warp_select_row(const float* __restrict__ s, int n, int k, uint32_t* mask, int* hist, int lane) {
  if (k <= 0) return;
  if (k >= n) {
    for (int i0 = 0; i0 < n; i0 += 32) {
      const unsigned bits = __ballot_sync(0xffffffffu, i0 + lane < n);
      if (lane == 0) mask[i0 >> 5] |= bits;
    }
    __syncwarp();
    return;
  }
  uint32_t prefix = 0;
  int remaining = k;
  for (int shift = 24; shift >= 0; shift -= 8) {
    const uint32_t high = shift == 24 ? 0u : (~0u << (shift + 8));
    for (int i = lane; i < 256; i += 32) hist[i] = 0;
    __syncwarp();
    for (int i0 = 0; i0 < n; i0 += 32) radix_count(s, i0 + lane, n, prefix, high, shift, hist, lane);
    __syncwarp();
    uint32_t np = 0;
    int nr = 0;
    const bool owner = radix_find_bin(hist, lane, remaining, prefix, shift, np, nr);
    const int src = __ffs(__ballot_sync(0xffffffffu, owner)) - 1;
    prefix = __shfl_sync(0xffffffffu, np, src);
    remaining = __shfl_sync(0xffffffffu, nr, src);
    __syncwarp();  // hist is cleared by the next pass
  }
  const uint32_t kth = prefix;
  int taken_ties = 0;
  for (int i0 = 0; i0 < n; i0 += 32) {
    const int i = i0 + lane;
    const uint32_t key = i < n ? order_key(s[i]) : 0u;
    const bool tie = i < n && key == kth;
    const unsigned ties = __ballot_sync(0xffffffffu, tie);
    const int before = __popc(ties & ((1u << lane) - 1u));
    const unsigned bits = __ballot_sync(0xffffffffu, (i < n && key > kth) || (tie && taken_ties + before < remaining));
    if (lane == 0) mask[i0 >> 5] |= bits;
    taken_ties += __popc(ties);
  }
  __syncwarp();
}

__global__ void __launch_bounds__(32 * topk_warps)
    topk_warp_kernel(const block_desc* __restrict__ blocks, int n_blocks, float* __restrict__ scores, int Hq,
                     int Hkv, bool group_scoring, int32_t* __restrict__ ids, int32_t* __restrict__ counts,
                     int words_max) {
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
  if (group_scoring) {
    for (int i = lane; i < n; i += 32) {
      float sum = 0.0f;
      for (int j = 0; j < G; j++) sum = __fadd_rn(sum, rows[int64_t(j) * n + i]);
      rows[i] = sum;
    }
  }
  __syncwarp();
  const int heads = group_scoring ? 1 : G;
  for (int j = 0; j < heads; j++) warp_select_row(rows + int64_t(j) * n, n, b.k, mask, hist, lane);
  int32_t* out = ids + b.id_off + int64_t(h) * b.cap;
  int at = 0;
  for (int w0 = 0; w0 < words; w0 += 32) {  // ascending ids: 32 words at a time, a warp scan of their counts
    const int w = w0 + lane;
    uint32_t m = w < words ? mask[w] : 0u;
    const int cnt = __popc(m);
    int incl = cnt;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += y;
    }
    int pos = at + incl - cnt;
    while (m) {
      const int bit = __ffs(m) - 1;
      m &= m - 1;
      if (pos < b.cap) out[pos] = w * 32 + bit;
      pos++;
    }
    at += __shfl_sync(0xffffffffu, incl, 31);
  }
  if (lane == 0) counts[int64_t(bi) * Hkv + h] = min(at, b.cap);
}

// ---- decode scores (one query row): one thread per (unit, query head), so the grid covers every candidate ----

template <class T, int DC>
__global__ void __launch_bounds__(score_threads)
    decode_score_kernel(const T* __restrict__ q, const T* __restrict__ k, int Hq, int Hkv, int D_rt, int64_t k_st,
                        float scale, const int32_t* __restrict__ unit_row, int n, int g, float* __restrict__ scores,
                        const int32_t* __restrict__ n_kv, int64_t ld) {
  __shared__ float qs[128];
  const int h = blockIdx.y, hk = h / (Hq / Hkv);
  const int D = DC > 0 ? DC : D_rt;
  // Shared list (n_kv null): n units, scores row h at h * n. Per KV head: n_kv[hk] units at unit_row + hk * ld,
  // scores row h at h * ld.
  const int nn = n_kv ? n_kv[hk] : n;
  if (n_kv) unit_row += int64_t(hk) * ld;
  if (int(blockIdx.x) * int(blockDim.x) >= nn) return;
  for (int d = threadIdx.x; d < D; d += blockDim.x) qs[d] = dev::to_f(q[int64_t(h) * D + d]);
  __syncthreads();
  const int u = blockIdx.x * blockDim.x + threadIdx.x;
  if (u >= nn) return;
  float best = -INFINITY;
  for (int r = 0; r < g; r++) {
    const T* kp = k + int64_t(unit_row[u] + r) * k_st + int64_t(hk) * D;
    float dot = 0.0f;
    if constexpr (DC > 0) {
      constexpr int V = dev::vec16<T>;
#pragma unroll
      for (int d0 = 0; d0 < DC; d0 += V) {
        float v[V];
        dev::load_f<T, V>(v, kp + d0);
#pragma unroll
        for (int i = 0; i < V; i++) dot = __fadd_rn(dot, __fmul_rn(qs[d0 + i], v[i]));
      }
    } else {
      for (int d = 0; d < D; d++) dot = __fadd_rn(dot, __fmul_rn(qs[d], dev::to_f(kp[d])));
    }
    const float v = __fmul_rn(dot, scale);
    best = best < v ? v : best;
  }
  scores[int64_t(h) * (n_kv ? ld : n) + u] = best;
}

// Every selecting row of a batched step (grid (units, Hkv, rows)): its own q, pool, candidates and scores. One
// thread per (unit, KV head) reads the unit's gist keys once for the G query heads of the group (their q in
// shared memory) and keeps G dot products, each in score_units' order (f32, d ascending, no FMA). Block (0, 0)
// of a row also clears the row's selection mask for decode_topk_rows_kernel, which runs after this launch.
constexpr int kMaxGroup = 8;
template <class T, int DC>
__global__ void __launch_bounds__(score_threads)
    decode_score_rows_kernel(const lists_row* __restrict__ rows, int Hq, int Hkv, int D_rt, int64_t k_st,
                             float scale) {
  __shared__ float qs[kMaxGroup * 128];
  const lists_row& r = rows[blockIdx.z];
  const int hk = blockIdx.y, G = Hq / Hkv;
  const int D = DC > 0 ? DC : D_rt;
  if (blockIdx.x == 0 && blockIdx.y == 0)
    for (int w = threadIdx.x; w < Hkv * ((r.n_cand + 31) / 32); w += blockDim.x) r.mask[w] = 0u;
  const int n = r.n_cand;
  if (int(blockIdx.x) * int(blockDim.x) >= n) return;
  const T* q = static_cast<const T*>(r.q) + int64_t(hk) * G * D;  // the group's G heads, consecutive
  for (int i = threadIdx.x; i < G * D; i += blockDim.x) qs[i] = dev::to_f(q[i]);
  __syncthreads();
  const int u = blockIdx.x * blockDim.x + threadIdx.x;
  if (u >= n) return;
  if (r.router) {  // a page router: page u's summary planes against the G heads, the max of them (per KV head)
    const float* mn = r.summary + (int64_t(u) * 3 * Hkv + hk) * D;
    const float* mx = mn + int64_t(Hkv) * D;
    const float* me = mx + int64_t(Hkv) * D;
    float s = -INFINITY;
    for (int j = 0; j < G; j++) {
      const float* qj = qs + j * D;
      float v = 0.0f;
      if (r.router == 1)
        for (int d = 0; d < D; d++) {
          const float a = __fmul_rn(qj[d], mn[d]), b = __fmul_rn(qj[d], mx[d]);
          v = __fadd_rn(v, a < b ? b : a);  // std::max's choice (page_select's arithmetic)
        }
      else
        for (int d = 0; d < D; d++) v = __fadd_rn(v, __fmul_rn(qj[d], me[d]));
      s = s < v ? v : s;
    }
    r.scores[int64_t(hk) * G * n + u] = s;
    return;
  }
  float best[kMaxGroup];
#pragma unroll
  for (int j = 0; j < kMaxGroup; j++) best[j] = -INFINITY;
  for (int rr = 0; rr < r.g; rr++) {
    const T* kp = static_cast<const T*>(r.pool_k) + int64_t(r.gist_row[u] + rr) * k_st + int64_t(hk) * D;
    float dot[kMaxGroup];
#pragma unroll
    for (int j = 0; j < kMaxGroup; j++) dot[j] = 0.0f;
    if constexpr (DC > 0) {
      constexpr int V = dev::vec16<T>;
#pragma unroll 2
      for (int d0 = 0; d0 < DC; d0 += V) {
        float v[V];
        dev::load_f<T, V>(v, kp + d0);
#pragma unroll
        for (int j = 0; j < kMaxGroup; j++)
          if (j < G)
#pragma unroll
            for (int i = 0; i < V; i++) dot[j] = __fadd_rn(dot[j], __fmul_rn(qs[j * DC + d0 + i], v[i]));
      }
    } else {
      for (int d = 0; d < D; d++) {
        const float kv = dev::to_f(kp[d]);
#pragma unroll
        for (int j = 0; j < kMaxGroup; j++)
          if (j < G) dot[j] = __fadd_rn(dot[j], __fmul_rn(qs[j * D + d], kv));
      }
    }
#pragma unroll
    for (int j = 0; j < kMaxGroup; j++) {
      const float v = __fmul_rn(dot[j], scale);
      best[j] = best[j] < v ? v : best[j];
    }
  }
#pragma unroll
  for (int j = 0; j < kMaxGroup; j++)
    if (j < G) r.scores[int64_t(hk * G + j) * n + u] = best[j];
}

// ---- decode top-k (one query row): one CTA per query head (union) or per KV head (group scoring), each ORing
// its top k into its KV head's mask in global memory, so the G heads of a group select in parallel ----

__device__ __forceinline__ void decode_topk_row(int cta, float* __restrict__ scores, int n, int k, int Hq, int Hkv,
                                                bool group_scoring, uint32_t* __restrict__ gmask,
                                                const int32_t* __restrict__ n_kv, int64_t ld, int mask_words,
                                                int staged_cap, bool reduced = false) {
  __shared__ topk_smem sm;
  const int G = Hq / Hkv;
  // Rows of query head h at scores + h * ld; n units (n_kv: n_kv[KV head] units); masks mask_words apart.
  const int hk = group_scoring ? cta : cta / G;
  const int nn = n_kv ? n_kv[hk] : n;
  const float* row;
  if (group_scoring && reduced) {  // a page router's per-KV-head scores, in the group's first row
    row = scores + int64_t(hk) * G * ld;
  } else if (group_scoring) {
    float* rows = scores + int64_t(hk) * G * ld;
    for (int i = threadIdx.x; i < nn; i += blockDim.x) {
      float sum = 0.0f;
      for (int j = 0; j < G; j++) sum = __fadd_rn(sum, rows[int64_t(j) * ld + i]);
      rows[i] = sum;
    }
    __syncthreads();
    row = rows;
  } else {
    row = scores + int64_t(cta) * ld;
  }
  extern __shared__ uint32_t staged_keys[];  // launched with room for decode_stage_max keys, or none
  if (nn > 0)
    select_row_staged(row, nn, k, gmask + int64_t(hk) * mask_words, sm, nn <= staged_cap ? staged_keys : nullptr);
}

__global__ void __launch_bounds__(decode_topk_threads)
    decode_topk_kernel(float* __restrict__ scores, int n, int k, int Hq, int Hkv, bool group_scoring,
                       uint32_t* __restrict__ gmask, const int32_t* __restrict__ n_kv, int64_t ld, int mask_words,
                       int staged_cap) {
  decode_topk_row(int(blockIdx.x), scores, n, k, Hq, Hkv, group_scoring, gmask, n_kv, ld, mask_words, staged_cap);
}

// Every selecting row of a batched step: grid (Hq, rows); with group scoring only the first Hkv CTAs of a row
// select (one per KV head).
__global__ void __launch_bounds__(decode_topk_threads)
    decode_topk_rows_kernel(const lists_row* __restrict__ rows, int Hq, int Hkv, int staged_cap) {
  const lists_row& r = rows[blockIdx.y];
  if (r.group && int(blockIdx.x) >= Hkv) return;
  decode_topk_row(int(blockIdx.x), r.scores, r.n_cand, r.k, Hq, Hkv, r.group != 0, r.mask, nullptr, r.n_cand,
                  (r.n_cand + 31) / 32, staged_cap, r.group == 2);
}

// Dynamic shared memory of a decode top-k launch over at most max_n candidates: room to stage them when they fit
// (the kernels opt in to that much once), else none.
template <class K>
int decode_topk_smem(K kernel, int max_n, int* staged_cap) {
  static bool opted = false;  // per kernel (one instantiation per kernel type)
  if (!opted) {
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             decode_stage_max * int(sizeof(uint32_t))) != cudaSuccess)
      fail_msg("GPU decode top-k: shared memory for staging could not be set");
    opted = true;
  }
  *staged_cap = max_n <= decode_stage_max ? max_n : 0;
  return *staged_cap * int(sizeof(uint32_t));
}

// ---- the hierarchical walk (decode, one row): gist::select_hierarchical, one level per launch ----
//
// Level l's scores were written by decode_score_kernel (the top level over the shared list of whole units; a
// lower level over each KV head's own list in `cur`, rows in `rows`). This kernel (one CTA per KV head) takes the
// union / group top k[l] of them, then builds level l-1's list: the children of the kept units and the loose
// units (whole at l-1, parent not whole), ascending and distinct, with their rows; at level 0 it writes the
// chunks out. State between launches: units (Hkv, 2, max_n) = cur, kept; rows (Hkv, max_n); n_cur, scored (Hkv).
__global__ void __launch_bounds__(topk_threads)
    hier_level_kernel(const hier_args a, int l, const uint32_t* __restrict__ gmask, int mask_words,
                      int32_t* __restrict__ units, int32_t* __restrict__ rows, int32_t* __restrict__ n_cur,
                      int32_t* __restrict__ scored, int32_t* __restrict__ out) {
  __shared__ topk_smem sm;
  const int h = blockIdx.x, L = a.levels;
  int32_t* cur = units + int64_t(h) * 2 * a.max_n;
  int32_t* kept = cur + a.max_n;
  const bool is_top = l == L - 1;
  const int n = is_top ? a.whole[l] : n_cur[h];
  const int before = is_top ? 0 : scored[h];
  __syncthreads();  // thread 0 rewrites n_cur[h] and scored[h] below
  const uint32_t* mask = gmask + int64_t(h) * mask_words;  // decode_topk_kernel's union / group top k[l]
  int n_kept = 0;
  if (n > 0) {
    const int words = (n + 31) / 32;
    const int per = (words + blockDim.x - 1) / blockDim.x;
    const int w0 = min(words, int(threadIdx.x) * per), w1 = min(words, w0 + per);
    int mine = 0;
    for (int w = w0; w < w1; w++) mine += __popc(mask[w]);
    int at = block_exclusive_scan(mine, sm, &n_kept);
    for (int w = w0; w < w1; w++)
      for (uint32_t m = mask[w]; m; m &= m - 1) {
        const int i = w * 32 + __ffs(m) - 1;
        kept[at++] = is_top ? i : cur[i];
      }
    __syncthreads();
  }
  const int done = before + n;
  if (l == 0) {  // the chunks
    const int n_out = min(n_kept, a.cap);
    for (int i = threadIdx.x; i < n_out; i += blockDim.x) out[a.Hkv + int64_t(h) * a.cap + i] = kept[i];
    if (threadIdx.x == 0) {
      out[h] = n_out;
      out[int64_t(a.Hkv) * (1 + a.cap) + h] = done;
    }
    return;
  }
  // Level l-1's list: children of the kept units, then the loose units.
  const int c = a.chunk[l];
  const int loose0 = a.whole[l] * c;
  const int n_child = n_kept * c;
  const int nn = min(a.max_n, n_child + max(0, a.whole[l - 1] - loose0));
  const int32_t* unit_row = a.unit_row[l - 1];
  for (int i = threadIdx.x; i < nn; i += blockDim.x) {
    const int32_t u = i < n_child ? kept[i / c] * c + i % c : loose0 + i - n_child;
    cur[i] = u;
    rows[int64_t(h) * a.max_n + i] = unit_row[u];
  }
  if (threadIdx.x == 0) {
    n_cur[h] = nn;
    scored[h] = done;
  }
}

std::string launch_error(const char* kernel, cudaError_t e) {
  return std::string("GPU chunk selection: launch of ") + kernel + " failed: " + cudaGetErrorString(e);
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
        blocks, n_blocks, scores, Hq, Hkv, group_scoring, ids, counts, words);
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

namespace {

void launch_scores_any(const void* q, const void* k, bool bf16_in, int Hq, int Hkv, int D, int64_t k_st, float scale,
                       const int32_t* unit_row, int n, int g, float* scores, const int32_t* n_kv, int64_t ld,
                       cudaStream_t st, int kv_span = 0) {
  // Units the grid must cover: n, or with per-head counts n_kv their bound (kv_span, else the row stride ld).
  const int span = n_kv ? (kv_span > 0 ? kv_span : int(ld)) : n;
  if (span <= 0) return;
  if (D > 128) fail_msg("GPU decode scores: head dim " + std::to_string(D) + " (at most 128)");
  const dim3 grid{unsigned((span + score_threads - 1) / score_threads), unsigned(Hq)};
  // Vector loads need 16-byte aligned rows.
  const bool vec = (k_st * (bf16_in ? 2 : 4)) % 16 == 0;
  auto go = [&](auto tag) {
    using T = decltype(tag);
    const T* qt = static_cast<const T*>(q);
    const T* kt = static_cast<const T*>(k);
    if (vec && D == 64)
      decode_score_kernel<T, 64><<<grid, score_threads, 0, st>>>(qt, kt, Hq, Hkv, D, k_st, scale, unit_row, n, g,
                                                                 scores, n_kv, ld);
    else if (vec && D == 128)
      decode_score_kernel<T, 128><<<grid, score_threads, 0, st>>>(qt, kt, Hq, Hkv, D, k_st, scale, unit_row, n, g,
                                                                  scores, n_kv, ld);
    else
      decode_score_kernel<T, 0><<<grid, score_threads, 0, st>>>(qt, kt, Hq, Hkv, D, k_st, scale, unit_row, n, g,
                                                                scores, n_kv, ld);
  };
  if (bf16_in) go(bf16{});
  else go(float{});
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) fail_msg(launch_error("decode_score_kernel", e));
}

}  // namespace

void launch_decode_rows(const lists_row* rows, int n_rows, int max_cand, bool bf16_in, int Hq, int Hkv, int D,
                        void* stream) {
  if (n_rows <= 0 || max_cand <= 0) return;
  if (D > 128) fail_msg("GPU decode scores: head dim " + std::to_string(D) + " (at most 128)");
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const int64_t k_st = int64_t(Hkv) * D;
  const float scale = 1.0f / std::sqrt(float(D));
  if (Hq / Hkv > kMaxGroup) fail_msg("GPU decode scores: " + std::to_string(Hq / Hkv) + " query heads per KV head (at most 8)");
  const dim3 grid{unsigned((max_cand + score_threads - 1) / score_threads), unsigned(Hkv), unsigned(n_rows)};
  const bool vec = (k_st * (bf16_in ? 2 : 4)) % 16 == 0;
  auto go = [&](auto tag) {
    using T = decltype(tag);
    if (vec && D == 64)
      decode_score_rows_kernel<T, 64><<<grid, score_threads, 0, st>>>(rows, Hq, Hkv, D, k_st, scale);
    else if (vec && D == 128)
      decode_score_rows_kernel<T, 128><<<grid, score_threads, 0, st>>>(rows, Hq, Hkv, D, k_st, scale);
    else
      decode_score_rows_kernel<T, 0><<<grid, score_threads, 0, st>>>(rows, Hq, Hkv, D, k_st, scale);
  };
  if (bf16_in) go(bf16{});
  else go(float{});
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) fail_msg(launch_error("decode_score_rows_kernel", e));
  int staged_cap = 0;
  const int smem = decode_topk_smem(decode_topk_rows_kernel, max_cand, &staged_cap);
  decode_topk_rows_kernel<<<dim3(unsigned(Hq), unsigned(n_rows)), decode_topk_threads, smem, st>>>(rows, Hq, Hkv,
                                                                                                  staged_cap);
  e = cudaGetLastError();
  if (e != cudaSuccess) fail_msg(launch_error("decode_topk_rows_kernel", e));
}

void launch_hierarchical(const hier_args& a, const void* q, const void* pool, bool bf16_in, float* scores,
                         int32_t* units, int32_t* out, void* stream) {
  if (a.levels < 2 || a.levels > hier_args::max_levels || a.D > 128 || a.max_n > max_candidates)
    fail_msg("GPU hierarchical selection: " + std::to_string(a.levels) + " levels, head dim " +
             std::to_string(a.D) + ", " + std::to_string(a.max_n) + " units (supported: 2-" +
             std::to_string(hier_args::max_levels) + " levels, head dim <= 128, " + std::to_string(max_candidates) +
             " units)");
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  // Scratch layout (hier_scratch_floats / _ints): top scores (Hq, whole[L-1]), lower scores (Hq, max_n);
  // units (Hkv, 2, max_n), rows (Hkv, max_n), n_cur (Hkv), scored (Hkv), mask (Hkv, ceil(max_n / 32)).
  const int top_n = a.whole[a.levels - 1];
  // A level below the top scores the children of what the level above kept (at most k of its units per query
  // head, G heads in a union: G k chunk) and the loose units past its last whole parent (fewer than chunk): a
  // bound independent of the context, so these launches' grids, masks and top-k staging do not grow with it (they
  // were sized by max_n, the level-0 candidates: 128k CTAs' worth at 2M tokens, nearly all idle).
  int lower_n = 0;
  for (int l = 1; l < a.levels; l++)
    lower_n = std::max(lower_n, (a.group ? 1 : a.Hq / a.Hkv) * a.k[l] * a.chunk[l] + a.chunk[l]);
  lower_n = std::min(lower_n, a.max_n);
  const int mask_words = (std::max(top_n, lower_n) + 31) / 32;
  float* top = scores;
  float* lower = scores + int64_t(a.Hq) * top_n;
  int32_t* rows = units + int64_t(a.Hkv) * 2 * a.max_n;
  int32_t* n_cur = rows + int64_t(a.Hkv) * a.max_n;
  int32_t* scored = n_cur + a.Hkv;
  uint32_t* mask = reinterpret_cast<uint32_t*>(scored + a.Hkv);
  const unsigned sel_grid = unsigned(a.group ? a.Hkv : a.Hq);
  for (int l = a.levels - 1; l >= 0; l--) {
    const bool is_top = l == a.levels - 1;
    if (is_top)
      launch_scores_any(q, pool, bf16_in, a.Hq, a.Hkv, a.D, a.k_st, a.scale, a.unit_row[l], top_n, a.g, top, nullptr,
                        0, st);
    else
      launch_scores_any(q, pool, bf16_in, a.Hq, a.Hkv, a.D, a.k_st, a.scale, rows, 0, a.g, lower, n_cur, a.max_n, st,
                        lower_n);
    if (cudaMemsetAsync(mask, 0, size_t(a.Hkv) * mask_words * sizeof(uint32_t), st) != cudaSuccess)
      fail_msg("GPU hierarchical selection: clearing the mask failed");
    int staged_cap = 0;
    const int smem = decode_topk_smem(decode_topk_kernel, is_top ? top_n : lower_n, &staged_cap);
    if (is_top)
      decode_topk_kernel<<<sel_grid, decode_topk_threads, smem, st>>>(top, top_n, a.k[l], a.Hq, a.Hkv, a.group, mask,
                                                                      nullptr, top_n, mask_words, staged_cap);
    else
      decode_topk_kernel<<<sel_grid, decode_topk_threads, smem, st>>>(lower, 0, a.k[l], a.Hq, a.Hkv, a.group, mask,
                                                                      n_cur, a.max_n, mask_words, staged_cap);
    hier_level_kernel<<<a.Hkv, topk_threads, 0, st>>>(a, l, mask, mask_words, units, rows, n_cur, scored, out);
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) fail_msg(launch_error("hier_level_kernel", e));
  }
}

}  // namespace gsa::cuda::select_detail
