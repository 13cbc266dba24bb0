// Kernels of the GPU selection of decode rows (contract: select.h): the gist / page-summary scores of one query
// row per session (decode_score_kernel, decode_score_rows_kernel), its top-k (decode_topk_row) and the
// hierarchical walk one level per launch (hier_level_kernel); the radix top-k they share is select-kernels.cuh.
#include <cuda_bf16.h>
#include <cooperative_groups.h>
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

// ---- decode top-k over many candidates: one cluster of CTAs per query head (or KV head) and row ----
//
// decode_topk_rows_kernel's result (select_row_keys' rule: order key descending, then index ascending; with group
// scoring the group's f32 sum, written back to row hk G, one top k per KV head), but a row's candidates are split
// over the kTopkCtas CTAs of a thread-block cluster, each staging its slice (whole mask words) in shared memory:
// every radix pass counts each slice into its CTA's histogram, the cluster synchronises, and every CTA sums the
// kTopkCtas histograms through distributed shared memory and takes the same decision; the ties at the k-th key are
// ranked across the slices in CTA order. A single CTA per head walked all of a 512k context's 32k candidates five
// times on one SM; here each SM walks an eighth.
constexpr int kTopkCtas = 8;
constexpr int kTopkClusterThreads = 512;
constexpr int kTopkSliceMax = 16 * 1024;  // staged keys per CTA: rows of up to 128 Ki candidates
int topk_cluster_min = 4096;              // launches whose max_cand reaches it use the clusters (tests lower it)

struct cluster_topk_smem {
  int hist[2][256];  // this CTA's counts, alternating between passes (the others read them after the sync)
  int total[256];    // the cluster's
  int ties;          // this CTA's keys equal to the k-th
  uint32_t prefix;
  int remaining, bin_count, ties_before, ties_all;
  topk_smem scan;    // block_exclusive_scan's scratch
};

// One cluster's top k of the n scores at sc (sum_rows > 1: the f32 sum of sum_rows rows ld apart, written back
// to the first) into mask. Every thread of every CTA of the cluster calls it with the same arguments.
__device__ void cluster_topk(float* __restrict__ sc, int sum_rows, int64_t ld, int n, int k,
                             uint32_t* __restrict__ mask) {
  namespace cg = cooperative_groups;
  cg::cluster_group cl = cg::this_cluster();
  __shared__ cluster_topk_smem sm;
  extern __shared__ uint32_t staged[];
  const int rank = int(cl.block_rank());
  const int words = (n + 31) / 32, per = (words + kTopkCtas - 1) / kTopkCtas;
  const int i_beg = min(n, rank * per * 32), i_end = min(n, (rank + 1) * per * 32), m = i_end - i_beg;
  const int tid = int(threadIdx.x), lane = tid & 31;

  // Stage the slice's order keys.
  for (int i = tid; i < m; i += blockDim.x) {
    float x = sc[i_beg + i];
    if (sum_rows > 1) {
      for (int j = 1; j < sum_rows; j++) x = __fadd_rn(x, sc[int64_t(j) * ld + i_beg + i]);
      sc[i_beg + i] = x;
    }
    staged[i] = order_key(x);
  }
  __syncthreads();
  // Sets the bits of this slice's keys that pass `take` (a warp's 32 indices are one mask word).
  auto mark = [&](auto take) {
    for (int i0 = 0; i0 < m; i0 += blockDim.x) {
      const int i = i0 + tid;
      const unsigned bits = __ballot_sync(0xffffffffu, i < m && take(staged[i]));
      if (lane == 0 && bits) atomicOr(&mask[(i_beg + i) >> 5], bits);
    }
  };

  if (k >= n) {
    mark([](uint32_t) { return true; });
  } else {
    uint32_t prefix = 0;
    int remaining = k;
    bool done = false;
    for (int shift = 24, buf = 0; shift >= 0 && !done; shift -= 8, buf ^= 1) {
      const uint32_t high = shift == 24 ? 0u : (~0u << (shift + 8));
      for (int i = tid; i < 256; i += blockDim.x) sm.hist[buf][i] = 0;
      __syncthreads();
      for (int i0 = 0; i0 < m; i0 += blockDim.x)  // the loop bound is uniform over the CTA
        radix_count_keys([&](int i) { return staged[i]; }, i0 + tid, m, prefix, high, shift, sm.hist[buf], lane);
      cl.sync();  // every slice's counts are in (the other buffer may still be read: it is cleared a pass later)
      for (int b = tid; b < 256; b += blockDim.x) {
        int s = 0;
        for (int c = 0; c < kTopkCtas; c++) s += cl.map_shared_rank(&sm.hist[buf][0], c)[b];
        sm.total[b] = s;
      }
      __syncthreads();
      uint32_t np;
      int nr, nc;
      if (tid < 32 && radix_find_bin(sm.total, tid, remaining, prefix, shift, np, nr, nc)) {
        sm.prefix = np;
        sm.remaining = nr;
        sm.bin_count = nc;
      }
      __syncthreads();
      prefix = sm.prefix;
      remaining = sm.remaining;
      done = remaining == sm.bin_count;  // the whole bin is taken: the top k are the keys >= prefix
      __syncthreads();
    }
    const uint32_t kth = prefix;
    if (done) {
      mark([&](uint32_t key) { return key >= kth; });
    } else {
      // `remaining` of the keys equal to the k-th are taken, lowest index first: count each slice's, then rank.
      int mine = 0;
      for (int i = tid; i < m; i += blockDim.x) mine += staged[i] == kth;
      int slice_ties = 0;
      block_exclusive_scan(mine, sm.scan, &slice_ties);
      if (tid == 0) sm.ties = slice_ties;
      cl.sync();
      if (tid == 0) {
        int before = 0, all = 0;
        for (int c = 0; c < kTopkCtas; c++) {
          const int t = *cl.map_shared_rank(&sm.ties, c);
          if (c < rank) before += t;
          all += t;
        }
        sm.ties_before = before;
        sm.ties_all = all;
      }
      __syncthreads();
      if (sm.ties_all == remaining) {
        mark([&](uint32_t key) { return key >= kth; });
      } else {
        int taken = sm.ties_before;
        for (int base = 0; base < m; base += blockDim.x) {
          const int i = base + tid;
          const uint32_t key = i < m ? staged[i] : 0u;
          const int tie = (i < m && key == kth) ? 1 : 0;
          int tile_ties = 0;
          const int before = block_exclusive_scan(tie, sm.scan, &tile_ties);
          const unsigned bits = __ballot_sync(0xffffffffu, (i < m && key > kth) || (tie && taken + before < remaining));
          if (lane == 0 && bits) atomicOr(&mask[(i_beg + i) >> 5], bits);
          taken += tile_ties;
        }
      }
    }
  }
  cl.sync();  // the others may still read this CTA's shared memory
}

// Every selecting row of a batched step (decode_topk_rows_kernel's work): grid (Hq clusters, rows).
__global__ void __cluster_dims__(kTopkCtas, 1, 1) __launch_bounds__(kTopkClusterThreads)
    decode_topk_rows_cluster_kernel(const lists_row* __restrict__ rows, int Hq, int Hkv) {
  const lists_row& r = rows[blockIdx.y];
  const int G = Hq / Hkv, head = int(blockIdx.x) / kTopkCtas;
  // Uniform over the cluster: every CTA of it returns here or none does.
  if ((r.group && head >= Hkv) || r.n_cand <= 0 || r.k <= 0) return;
  const int hk = r.group ? head : head / G;
  cluster_topk(r.scores + int64_t(r.group ? hk * G : head) * r.n_cand, r.group == 1 ? G : 1, r.n_cand, r.n_cand,
               r.k, r.mask + int64_t(hk) * ((r.n_cand + 31) / 32));
}

// One row of a walk level (decode_topk_kernel's work, no page router): grid (query heads, or KV heads with group
// scoring) clusters; head h's scores at scores + h ld, n units (n_kv: n_kv[KV head]), masks mask_words apart.
__global__ void __cluster_dims__(kTopkCtas, 1, 1) __launch_bounds__(kTopkClusterThreads)
    decode_topk_cluster_kernel(float* __restrict__ scores, int n, int k, int Hq, int Hkv, bool group_scoring,
                               uint32_t* __restrict__ gmask, const int32_t* __restrict__ n_kv, int64_t ld,
                               int mask_words) {
  const int G = Hq / Hkv, head = int(blockIdx.x) / kTopkCtas;
  const int hk = group_scoring ? head : head / G;
  const int nn = n_kv ? n_kv[hk] : n;
  if (nn <= 0 || k <= 0) return;  // uniform over the cluster
  cluster_topk(scores + int64_t(group_scoring ? hk * G : head) * ld, group_scoring ? G : 1, ld, nn, k,
               gmask + int64_t(hk) * mask_words);
}

// Dynamic shared memory of a cluster top-k launch over at most max_n candidates (a slice of whole mask words per
// CTA), opting the kernel in to the most it may take once.
template <class K>
int cluster_topk_smem_bytes(K kernel, int max_n) {
  static bool opted = false;  // per kernel (one instantiation per kernel type)
  if (!opted) {
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             kTopkSliceMax * int(sizeof(uint32_t))) != cudaSuccess)
      fail_msg("GPU decode top-k: shared memory for the cluster kernel could not be set");
    opted = true;
  }
  return ((max_n + 31) / 32 + kTopkCtas - 1) / kTopkCtas * 32 * int(sizeof(uint32_t));
}
bool use_topk_clusters(int max_n) { return max_n >= topk_cluster_min && max_n <= kTopkCtas * kTopkSliceMax; }

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

}  // namespace

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
  if (use_topk_clusters(max_cand)) {
    // Many candidates: a cluster of CTAs per head, each with a slice of whole mask words staged.
    const int smem = cluster_topk_smem_bytes(decode_topk_rows_cluster_kernel, max_cand);
    decode_topk_rows_cluster_kernel<<<dim3(unsigned(Hq * kTopkCtas), unsigned(n_rows)), kTopkClusterThreads, smem,
                                      st>>>(rows, Hq, Hkv);
    e = cudaGetLastError();
    if (e != cudaSuccess) fail_msg(launch_error("decode_topk_rows_cluster_kernel", e));
    return;
  }
  int staged_cap = 0;
  const int smem = decode_topk_smem(decode_topk_rows_kernel, max_cand, &staged_cap);
  decode_topk_rows_kernel<<<dim3(unsigned(Hq), unsigned(n_rows)), decode_topk_threads, smem, st>>>(rows, Hq, Hkv,
                                                                                                  staged_cap);
  e = cudaGetLastError();
  if (e != cudaSuccess) fail_msg(launch_error("decode_topk_rows_kernel", e));
}

int set_topk_cluster_min(int n) {
  const int before = topk_cluster_min;
  topk_cluster_min = n;
  return before;
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
    const int level_n = is_top ? top_n : lower_n;
    if (use_topk_clusters(level_n)) {  // many units: a cluster of CTAs per head (same selection)
      const int smem = cluster_topk_smem_bytes(decode_topk_cluster_kernel, level_n);
      decode_topk_cluster_kernel<<<sel_grid * kTopkCtas, kTopkClusterThreads, smem, st>>>(
          is_top ? top : lower, is_top ? top_n : 0, a.k[l], a.Hq, a.Hkv, a.group, mask, is_top ? nullptr : n_cur,
          is_top ? top_n : a.max_n, mask_words);
      hier_level_kernel<<<a.Hkv, topk_threads, 0, st>>>(a, l, mask, mask_words, units, rows, n_cur, scored, out);
      const cudaError_t e = cudaGetLastError();
      if (e != cudaSuccess) fail_msg(launch_error("decode_topk_cluster_kernel / hier_level_kernel", e));
      continue;
    }
    int staged_cap = 0;
    const int smem = decode_topk_smem(decode_topk_kernel, level_n, &staged_cap);
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
