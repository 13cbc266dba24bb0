// The hierarchical walk of the training selection on the GPU (contract: select.h, launch_walk): one warp per
// (selecting block, KV head), the levels from the top. A level's allowed units are a bitmask in shared memory
// (children of the kept units of the level above, then the loose ones); the top-k runs over every whole unit of
// the level with the units outside the mask given order key 0, below every real score's key (order_key(-inf) is
// 0x007fffff), and k clamped to the allowed count, so it keeps exactly what select_top keeps over the allowed
// list (ties: lower index). The kept mask of one level is the next level's parent mask; level 0's is the result.
#include <cuda_runtime.h>

#include <string>

#include "backend/cuda/select-kernels.cuh"
#include "backend/cuda/select.h"

namespace gsa::cuda::select_detail {

namespace {

constexpr int walk_warps = 8;

__global__ void __launch_bounds__(32 * walk_warps)
    walk_kernel(const walk_args w, int n_blocks, int Hq, int Hkv, bool group_scoring, int32_t* __restrict__ ids,
                int32_t* __restrict__ counts, int words_max) {
  extern __shared__ int wsm[];  // per warp: hist[256], kept[words_max], allow[words_max]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t item = int64_t(blockIdx.x) * walk_warps + warp;
  if (item >= int64_t(n_blocks) * Hkv) return;  // warp-uniform; no CTA-wide barrier below
  const int bi = int(item / Hkv), h = int(item % Hkv);
  const int G = Hq / Hkv;
  int* hist = wsm + warp * (256 + 2 * words_max);
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
    float* rows = w.scores[l] + bl.score_off + int64_t(h) * G * n;  // (G, n) of this KV head
    if (group_scoring) warp_group_sum(rows, n, G, lane);
    const int heads = group_scoring ? 1 : G;
    for (int j = 0; j < heads; j++) {
      const float* row = rows + int64_t(j) * n;
      warp_select_keys([&](int i) { return ((allow[i >> 5] >> (i & 31)) & 1u) ? order_key(row[i]) : 0u; }, n, kk,
                       kept, hist, lane);
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
  const int words = (max_cand + 31) / 32;
  const int64_t items = int64_t(n_blocks) * Hkv, grid = (items + walk_warps - 1) / walk_warps;
  const size_t smem = size_t(walk_warps) * (256 + 2 * size_t(words)) * sizeof(int);  // <= 40 KiB
  walk_kernel<<<unsigned(grid), 32 * walk_warps, smem, static_cast<cudaStream_t>(stream)>>>(
      w, n_blocks, Hq, Hkv, group_scoring, ids, counts, words);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) fail_msg(launch_error("walk_kernel", e));
}

}  // namespace gsa::cuda::select_detail
