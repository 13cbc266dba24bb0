// The hierarchical walk of the training selection on the GPU (contract: select.h, launch_walk): one warp per
// (selecting block, KV head), the levels from the top. A level's allowed units are a bitmask in shared memory
// (children of the kept units of the level above, then the loose ones); the top-k runs over every whole unit of
// the level with the units outside the mask given order key 0, below every real score's key (order_key(-inf) is
// 0x007fffff), and k clamped to the allowed count, so it keeps exactly what select_top keeps over the allowed
// list (ties: lower index). The kept mask of one level is the next level's parent mask; level 0's is the result.
//
// score0 (per-token selection): level 0 has no precomputed scores. The warp lists its allowed units (a few per
// level-1 unit kept: walk_level0_bound), scores only those, as gist::score_units does (f32, d in order, no FMA;
// the row's G query vectors staged in shared memory), and selects over the list: the hierarchy's point, a row's
// work grows with k, not with the context (before, every level-0 unit was scored and written to global memory,
// then read by five radix passes, for the few hundred the walk allows). The list is ascending, so ties still go
// to the lower unit.
//
// mma (walk_args::mma): level 0's scores on tensor cores, bf16 inputs, every head of the group at once. The warp
// takes the allowed list 16 units at a time as the A operand of mma.m16n8k16 (rows: units) and the group's G <= 8
// query vectors as B (columns: heads), so each key is read once for all heads (the scalar path reads it once per
// head and spends two FP32 instructions per product). Lane (r, c) = (lane / 4, lane % 4) loads the contiguous
// quarter c of the feature dimension of units r and r + 8 and of head r, and each k-step takes features
// c D / 4 + 4 ks + [0, 4) of every quarter: a permutation of the dot product's terms, the same for every unit,
// so identical inputs still score identically. The scores of every head go to shared memory (G x m_max), then
// the same per-head (or group-sum) top-k.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "backend/cuda/attention-kernels.cuh"
#include "backend/cuda/ops-device.cuh"
#include "backend/cuda/select-kernels.cuh"
#include "backend/cuda/select.h"

namespace gsa::cuda::select_detail {

namespace {

constexpr int walk_warps = 8;

// One level-0 unit's score for query vector qj (f32, D), as gist::score_units: the max over its g gists of the
// dot product (d in order, separately rounded multiplies and adds) times scale; NaN skipped.
template <class T, bool VEC>
__device__ __forceinline__ float unit_score(const float* qj, const T* __restrict__ k, int64_t k_row0, int64_t k_st,
                                            int D, int g, float scale) {
  float best = -INFINITY;
  for (int r = 0; r < g; r++) {
    const T* kp = k + (k_row0 + r) * k_st;
    float dot = 0.0f;
    if constexpr (VEC) {
      constexpr int V = dev::vec16<T>;
      for (int d0 = 0; d0 < D; d0 += V) {
        float kv[V];
        dev::load_f<T, V>(kv, kp + d0);
#pragma unroll
        for (int e = 0; e < V; e++) dot = __fadd_rn(dot, __fmul_rn(qj[d0 + e], kv[e]));
      }
    } else {
      for (int d = 0; d < D; d++) dot = __fadd_rn(dot, __fmul_rn(qj[d], dev::to_f(kp[d])));
    }
    const float v = __fmul_rn(dot, scale);
    best = best < v ? v : best;
  }
  return best;
}

// Level 0 of one row's walk on tensor cores (see the top): scores of every head of the group for the m units of
// the ascending list `units` into sc (head j's at j * ld), max over the g gists of scale x dot (NaN skipped).
template <int D>
__device__ void walk_scores_mma(const walk_args& w, const block_desc& b0, int h, int G, const int32_t* units, int m,
                                float* sc, int ld, int lane) {
  constexpr int W = D / 8;  // u32 words (bf16 pairs) of a lane's quarter of a vector
  const int r = lane >> 2, c = lane & 3;
  const bf16* q = static_cast<const bf16*>(w.q);
  const bf16* k = static_cast<const bf16*>(w.k) + int64_t(h) * D + c * (D / 4);
  uint32_t qw[W];
  if (r < G) {
    const uint4* src = reinterpret_cast<const uint4*>(q + int64_t(b0.row0) * w.q_st + int64_t(h * G + r) * D +
                                                      c * (D / 4));
#pragma unroll
    for (int i = 0; i < W / 4; i++) {
      const uint4 v = src[i];
      qw[4 * i] = v.x, qw[4 * i + 1] = v.y, qw[4 * i + 2] = v.z, qw[4 * i + 3] = v.w;
    }
  } else {
#pragma unroll
    for (int i = 0; i < W; i++) qw[i] = 0u;
  }
  for (int t0 = 0; t0 < m; t0 += 16) {
    const int ua = t0 + r, ub = ua + 8;
    const int64_t ra = ua < m ? int64_t(w.gist0[units[ua]]) : -1, rb = ub < m ? int64_t(w.gist0[units[ub]]) : -1;
    float best[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    for (int gi = 0; gi < w.g; gi++) {
      uint32_t wa[W], wb[W];
#pragma unroll
      for (int i = 0; i < W / 4; i++) {
        const uint4 va = ra >= 0 ? reinterpret_cast<const uint4*>(k + (ra + gi) * w.k_st)[i] : make_uint4(0, 0, 0, 0);
        const uint4 vb = rb >= 0 ? reinterpret_cast<const uint4*>(k + (rb + gi) * w.k_st)[i] : make_uint4(0, 0, 0, 0);
        wa[4 * i] = va.x, wa[4 * i + 1] = va.y, wa[4 * i + 2] = va.z, wa[4 * i + 3] = va.w;
        wb[4 * i] = vb.x, wb[4 * i + 1] = vb.y, wb[4 * i + 2] = vb.z, wb[4 * i + 3] = vb.w;
      }
      float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int ks = 0; ks < D / 16; ks++) {
        const uint32_t a[4] = {wa[2 * ks], wb[2 * ks], wa[2 * ks + 1], wb[2 * ks + 1]};
        detail::mma_bf16(acc, a, qw[2 * ks], qw[2 * ks + 1]);
      }
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const float v = __fmul_rn(acc[e], w.scale);
        best[e] = best[e] < v ? v : best[e];
      }
    }
    // acc[e]: unit (e < 2 ? ua : ub), head 2 c + (e & 1)
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int j = 2 * c + (e & 1), u = e < 2 ? ua : ub;
      if (j < G && u < m) sc[j * ld + u] = best[e];
    }
  }
  __syncwarp();
}

template <class T, bool VEC, int DM>
__global__ void __launch_bounds__(32 * walk_warps)
    walk_kernel(const walk_args w, int n_blocks, int Hq, int Hkv, bool group_scoring, int32_t* __restrict__ ids,
                int32_t* __restrict__ counts, int words_max, int warps, bool radix) {
  // Per warp: hist[256], kept[words_max], allow[words_max]; with score0 also units[m_max], sc[m_max] (DM: G x
  // m_max), cmask[(m_max + 31) / 32], and without DM qv[G * D] (walk_warp_smem).
  extern __shared__ int wsm[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t item = int64_t(blockIdx.x) * warps + warp;
  if (item >= int64_t(n_blocks) * Hkv) return;  // warp-uniform; no CTA-wide barrier below
  const int bi = int(item / Hkv), h = int(item % Hkv);
  const int G = Hq / Hkv;
  const int m_max = w.score0 ? w.m_max : 0;
  const int sc_len = DM > 0 ? G * m_max : m_max, qv_len = w.score0 && DM == 0 ? G * w.D : 0;
  int* hist = wsm + int64_t(warp) * (256 + 2 * words_max + m_max + sc_len + (m_max + 31) / 32 + qv_len);
  uint32_t* kept = reinterpret_cast<uint32_t*>(hist + 256);
  uint32_t* allow = kept + words_max;
  const block_desc b0 = w.level[0][bi];
  int n_above = 0;  // whole units one level up (their kept bits are in kept)
  for (int l = w.levels - 1; l >= 0; l--) {
    const block_desc bl = w.level[l][bi];
    const int n = bl.n_cand, words = (n + 31) / 32;
    const bool top = l == w.levels - 1;
    const int fan = top ? 1 : w.fan[l + 1];
    const int loose0 = top ? 0 : n_above * fan;
    int allowed = 0;
    for (int x = lane; x < words; x += 32) {
      uint32_t bits = 0;
      for (int j = 0; j < 32; j++) {
        const int i = x * 32 + j;
        if (i >= n) break;
        const int parent = i / fan;
        const bool on = i >= loose0 || ((kept[parent >> 5] >> (parent & 31)) & 1u);
        bits |= uint32_t(on) << j;
      }
      allow[x] = bits;
      allowed += __popc(bits);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) allowed += __shfl_xor_sync(0xffffffffu, allowed, o);
    __syncwarp();
    for (int x = lane; x < words; x += 32) kept[x] = 0;
    __syncwarp();
    n_above = n;
    const int kk = min(b0.k, allowed);
    if (kk <= 0) continue;
    if (kk >= allowed) {
      for (int x = lane; x < words; x += 32) kept[x] = allow[x];
      __syncwarp();
      continue;
    }
    const int heads = group_scoring ? 1 : G;
    if (l == 0 && w.score0) {
      if (allowed > m_max) __trap();  // walk_level0_bound is a bound: never
      int32_t* units = reinterpret_cast<int32_t*>(allow + words_max);
      float* sc = reinterpret_cast<float*>(units + m_max);
      uint32_t* cmask = reinterpret_cast<uint32_t*>(sc + sc_len);
      float* qv = reinterpret_cast<float*>(cmask + (m_max + 31) / 32);
      const int m = warp_emit_ids(allow, words, units, m_max, lane);  // ascending unit ids, m == allowed
      if constexpr (DM > 0) {
        for (int x = lane; x < (m + 31) / 32; x += 32) cmask[x] = 0;
        __syncwarp();  // units, written by warp_emit_ids
        walk_scores_mma<DM>(w, b0, h, G, units, m, sc, m_max, lane);
        if (group_scoring) warp_group_sum(sc, m, G, lane, m_max);
        for (int j = 0; j < heads; j++) {
          const float* sj = sc + j * m_max;
          warp_select_keys([&](int t) { return order_key(sj[t]); }, m, kk, cmask, hist, lane, radix);
        }
        for (int t = lane; t < m; t += 32)
          if ((cmask[t >> 5] >> (t & 31)) & 1u) atomicOr(&kept[units[t] >> 5], 1u << (units[t] & 31));
        __syncwarp();
        continue;
      }
      const T* q = static_cast<const T*>(w.q);
      const T* k = static_cast<const T*>(w.k) + int64_t(h) * w.D;
      for (int i = lane; i < G * w.D; i += 32) {
        const int j = i / w.D, d = i - j * w.D;
        qv[i] = dev::to_f(q[int64_t(b0.row0) * w.q_st + int64_t(h * G + j) * w.D + d]);
      }
      for (int x = lane; x < (m + 31) / 32; x += 32) cmask[x] = 0;
      __syncwarp();
      for (int j = 0; j < heads; j++) {
        for (int t = lane; t < m; t += 32) {
          const int64_t k_row0 = w.gist0[units[t]];
          float v;
          if (group_scoring) {  // the group's f32 sum in head order, as gist::select_top
            v = 0.0f;
            for (int jj = 0; jj < G; jj++)
              v = __fadd_rn(v, unit_score<T, VEC>(qv + jj * w.D, k, k_row0, w.k_st, w.D, w.g, w.scale));
          } else {
            v = unit_score<T, VEC>(qv + j * w.D, k, k_row0, w.k_st, w.D, w.g, w.scale);
          }
          sc[t] = v;
        }
        __syncwarp();
        warp_select_keys([&](int t) { return order_key(sc[t]); }, m, kk, cmask, hist, lane, radix);
      }
      for (int t = lane; t < m; t += 32)
        if ((cmask[t >> 5] >> (t & 31)) & 1u) atomicOr(&kept[units[t] >> 5], 1u << (units[t] & 31));
      __syncwarp();
      continue;
    }
    float* rows = w.scores[l] + bl.score_off + int64_t(h) * G * n;  // (G, n) of this KV head
    if (group_scoring) warp_group_sum(rows, n, G, lane);
    for (int j = 0; j < heads; j++) {
      const float* row = rows + int64_t(j) * n;
      warp_select_keys([&](int i) { return ((allow[i >> 5] >> (i & 31)) & 1u) ? order_key(row[i]) : 0u; }, n, kk,
                       kept, hist, lane, radix);
    }
  }
  const int at = warp_emit_ids(kept, (b0.n_cand + 31) / 32, ids + b0.id_off + int64_t(h) * b0.cap, b0.cap, lane);
  if (lane == 0) counts[int64_t(bi) * Hkv + h] = min(at, b0.cap);
}

}  // namespace

void launch_walk(const walk_args& w, int n_blocks, int Hq, int Hkv, bool group_scoring, int32_t* ids, int32_t* counts,
                 int max_cand, void* stream) {
  if (n_blocks <= 0) return;
  if (w.levels < 2 || w.levels > walk_args::max_levels)
    fail_msg("GPU chunk selection: the walk needs 2 to " + std::to_string(walk_args::max_levels) + " levels, got " +
             std::to_string(w.levels));
  if (max_cand > walk_max_candidates)
    fail_msg("GPU chunk selection: the hierarchical walk handles at most " + std::to_string(walk_max_candidates) +
             " candidate chunks per row, this plan has " + std::to_string(max_cand) +
             "; use a larger chunk[0], gsa.unfold_select \"flat\", or the CPU selection");
  const int words = (max_cand + 31) / 32, G = Hq / Hkv;
  // Tensor-core level-0 scores where asked for and their shared memory fits, else the exact scalar ones.
  const bool mma = w.score0 && w.mma && w.bf16 && w.vec && (w.D == 64 || w.D == 128) && G <= 8 &&
                   walk_warp_smem(max_cand, true, w.m_max, G, w.D, true) <= walk_smem_max;
  const size_t per_warp = walk_warp_smem(max_cand, w.score0, w.m_max, G, w.D, mma);
  auto launch = [&](auto kernel) {
    // Warps per CTA: the most resident warps per SM (227 KiB of shared memory, 1 KiB reserved per CTA; 64 K
    // registers; 32 CTAs, 64 warps), ties to the larger CTA.
    cudaFuncAttributes fa{};
    cudaError_t e = cudaFuncGetAttributes(&fa, kernel);
    const int regs_warp = std::max(1, ((fa.numRegs * 32 + 255) / 256) * 256);  // allocated per warp in 256s
    int warps = 0, resident = 0;
    for (int c = 1; c <= walk_warps && size_t(c) * per_warp <= walk_smem_max; c++) {
      const size_t by_smem = size_t(227 * 1024) / (size_t(c) * per_warp + 1024);
      const size_t by_regs = size_t(65536) / size_t(c * regs_warp);
      const int r = c * int(std::min<size_t>({size_t(32), size_t(64 / c), by_smem, by_regs}));
      if (r >= resident) warps = c, resident = r;
    }
    if (warps < 1)
      fail_msg("GPU chunk selection: the walk needs " + std::to_string(per_warp) + " bytes of shared memory per warp, " +
               "at most " + std::to_string(walk_smem_max) + " available (select.cpp scores level 0 ahead instead)");
    const int64_t items = int64_t(n_blocks) * Hkv, grid = (items + warps - 1) / warps;
    const size_t smem = size_t(warps) * per_warp;
    if (e == cudaSuccess) e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (e == cudaSuccess) {
      kernel<<<unsigned(grid), 32 * warps, smem, static_cast<cudaStream_t>(stream)>>>(w, n_blocks, Hq, Hkv, group_scoring,
                                                                                      ids, counts, words, warps,
                                                                                      warp_radix_topk());
      e = cudaGetLastError();
    }
    if (e != cudaSuccess) fail_msg(launch_error("walk_kernel", e));
  };
  if (!w.score0)
    launch(walk_kernel<float, false, 0>);
  else if (mma)
    w.D == 64 ? launch(walk_kernel<bf16, true, 64>) : launch(walk_kernel<bf16, true, 128>);
  else if (w.bf16)
    w.vec ? launch(walk_kernel<bf16, true, 0>) : launch(walk_kernel<bf16, false, 0>);
  else
    w.vec ? launch(walk_kernel<float, true, 0>) : launch(walk_kernel<float, false, 0>);
}

}  // namespace gsa::cuda::select_detail
