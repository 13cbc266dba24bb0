// The GPU selection kernels' shared parts (select.cu: the training blocks; select-walk.cu: their hierarchical walk;
// select-decode.cu: one decode row per session): thread counts, the order key and the exact radix top-k of one row
// of scores (a CTA's or a warp's). Internal to those three.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "backend/cuda/ops-device.cuh"
#include "backend/cuda/select.h"

namespace gsa::cuda::select_detail {

namespace {

using dev::bf16;

constexpr int score_threads = 128;
constexpr int score_rows_max = 16;  // one-row blocks per CTA of score_rows_kernel
constexpr int topk_threads = 256;

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
  int bin_count;  // keys in the bin the last radix pass chose
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
// with the prefix extended by the bin, how many of its keys are still to take and how many it holds (equal: every
// key from the bin up is taken, and the radix passes can stop).
__device__ __forceinline__ bool radix_find_bin(const int* hist, int lane, int remaining, uint32_t prefix, int shift,
                                               uint32_t& next_prefix, int& next_remaining, int& bin_count) {
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
  bin_count = c[d - lane * 8];
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
    int nr, nc;
    if (threadIdx.x < 32 && radix_find_bin(sm.hist, threadIdx.x, remaining, prefix, shift, np, nr, nc)) {
      sm.prefix = np;
      sm.remaining = nr;
      sm.bin_count = nc;
    }
    __syncthreads();
    prefix = sm.prefix;
    remaining = sm.remaining;
    const int bin_count = sm.bin_count;
    __syncthreads();  // sm.prefix / sm.hist are rewritten by the next pass
    if (remaining == bin_count) {  // the whole bin is taken: the top k are exactly the keys >= prefix
      for (int i0 = 0; i0 < n; i0 += blockDim.x) {
        const int i = i0 + threadIdx.x;
        const unsigned bits = __ballot_sync(0xffffffffu, i < n && key_at(i) >= prefix);
        if ((threadIdx.x & 31) == 0 && bits) atomicOr(&mask[i >> 5], bits);
      }
      __syncthreads();
      return;
    }
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

// ---- top-k of one row by one warp (per-token selection's many short lists) ----
// Both set in mask the bits of the top k of the n keys key_at(0 .. n-1) (order_key's; key descending, then index
// ascending), with 256 ints of shared memory (hist); the caller handles k <= 0 and k >= n. Same result, two ways.

// Radix select: four 8-bit passes from the top byte (the first ones mostly split on the exponent, which the
// scores of one row share), each over every key; GSA_SELECT_RADIX=1 runs it instead of warp_select_keys (A/B).
template <class KeyAt>
__device__ void warp_radix_select_keys(KeyAt key_at, int n, int k, uint32_t* mask, int* hist, int lane) {
  uint32_t prefix = 0;
  int remaining = k;
  for (int shift = 24; shift >= 0; shift -= 8) {
    const uint32_t high = shift == 24 ? 0u : (~0u << (shift + 8));
    for (int i = lane; i < 256; i += 32) hist[i] = 0;
    __syncwarp();
    for (int i0 = 0; i0 < n; i0 += 32) radix_count_keys(key_at, i0 + lane, n, prefix, high, shift, hist, lane);
    __syncwarp();
    uint32_t np = 0;
    int nr = 0, nc = 0;
    const bool owner = radix_find_bin(hist, lane, remaining, prefix, shift, np, nr, nc);
    const int src = __ffs(__ballot_sync(0xffffffffu, owner)) - 1;
    prefix = __shfl_sync(0xffffffffu, np, src);
    remaining = __shfl_sync(0xffffffffu, nr, src);
    const int bin_count = __shfl_sync(0xffffffffu, nc, src);
    __syncwarp();  // hist is cleared by the next pass
    if (remaining == bin_count) {  // the whole bin is taken: the top k are exactly the keys >= prefix
      for (int i0 = 0; i0 < n; i0 += 32) {
        const int i = i0 + lane;
        const unsigned bits = __ballot_sync(0xffffffffu, i < n && key_at(i) >= prefix);
        if (lane == 0) mask[i0 >> 5] |= bits;
      }
      __syncwarp();
      return;
    }
  }
  const uint32_t kth = prefix;
  int taken_ties = 0;
  for (int i0 = 0; i0 < n; i0 += 32) {
    const int i = i0 + lane;
    const uint32_t key = i < n ? key_at(i) : 0u;
    const bool tie = i < n && key == kth;
    const unsigned ties = __ballot_sync(0xffffffffu, tie);
    const int before = __popc(ties & ((1u << lane) - 1u));
    const unsigned bits = __ballot_sync(0xffffffffu, (i < n && key > kth) || (tie && taken_ties + before < remaining));
    if (lane == 0) mask[i0 >> 5] |= bits;
    taken_ties += __popc(ties);
  }
  __syncwarp();
}

// Range select: one pass for the keys' range [lo, hi], then 256-bin histograms over the range still open (the
// first one spans just the keys present, so it separates them where the radix pass would put them all in one
// or two exponent bins); the bin holding the k-th key is either taken whole, resolved by rank when it holds at
// most range_list keys (gathered into hist, the histogram being done), or narrowed again (at most four times: the
// span shrinks 256x each). Keys above the open range are taken. Typically three reads of the row instead of five.
// Zero keys (the walk's disallowed units) are left out of the range when at least k keys are nonzero.
constexpr int range_list = 64;

// Calls f(i0, i, x) for every 32-wide step i0 = 0, 32, ... below n, every lane with its i = i0 + lane and x =
// key_at(i) (0 where i >= n), loading four steps' keys before using them: a pass's reads are independent, and
// issued together they overlap instead of each waiting for the last (the passes were latency-bound). f may use
// warp-wide intrinsics: every lane calls it the same number of times.
template <class KeyAt, class F>
__device__ __forceinline__ void warp_key_steps(KeyAt key_at, int n, int lane, F f) {
  constexpr int steps = 4;
  for (int i0 = 0; i0 < n; i0 += 32 * steps) {
    uint32_t x[steps];
#pragma unroll
    for (int u = 0; u < steps; u++) {
      const int i = i0 + 32 * u + lane;
      x[u] = i < n ? key_at(i) : 0u;
    }
#pragma unroll
    for (int u = 0; u < steps; u++)
      if (i0 + 32 * u < n) f(i0 + 32 * u, i0 + 32 * u + lane, x[u]);
  }
}

template <class KeyAt>
__device__ void warp_range_select_keys(KeyAt key_at, int n, int k, uint32_t* mask, int* hist, int lane) {
  uint32_t lo = 0xffffffffu, lo_nz = 0xffffffffu, hi = 0;
  int nz = 0;
  warp_key_steps(key_at, n, lane, [&](int, int i, uint32_t x) {
    if (i >= n) return;
    lo = min(lo, x);
    hi = max(hi, x);
    if (x) {
      lo_nz = min(lo_nz, x);
      nz++;
    }
  });
  lo = __reduce_min_sync(0xffffffffu, lo);
  lo_nz = __reduce_min_sync(0xffffffffu, lo_nz);
  hi = __reduce_max_sync(0xffffffffu, hi);
  nz = __reduce_add_sync(0xffffffffu, nz);
  uint32_t base = nz >= k ? lo_nz : lo, top = hi;  // the open range; every key above top is taken
  int remaining = k;                                // keys still to take from the open range
  for (;;) {
    const uint32_t span = top - base;
    const int shift = span < 256u ? 0 : 24 - __clz(span);  // (span >> shift) < 256
    for (int i = lane; i < 256; i += 32) hist[i] = 0;
    __syncwarp();
    warp_key_steps(key_at, n, lane, [&](int, int i, uint32_t x) {
      const bool in = i < n && x >= base && x <= top;
      const unsigned active = __ballot_sync(0xffffffffu, in);
      if (in) {
        const uint32_t bin = (x - base) >> shift;
        const unsigned peers = __match_any_sync(active, bin);
        if (__ffs(peers) - 1 == lane) atomicAdd(&hist[bin], __popc(peers));
      }
    });
    __syncwarp();
    uint32_t np = 0;
    int nr = 0, nc = 0;
    const bool owner = radix_find_bin(hist, lane, remaining, 0u, 0, np, nr, nc);
    const int src = __ffs(__ballot_sync(0xffffffffu, owner)) - 1;
    const uint32_t b = __shfl_sync(0xffffffffu, np, src);
    remaining = __shfl_sync(0xffffffffu, nr, src);
    const int bin_count = __shfl_sync(0xffffffffu, nc, src);
    __syncwarp();  // hist is rewritten below
    const uint32_t bin_lo = base + (b << shift), width = (1u << shift) - 1u;
    const uint32_t bin_hi = top - bin_lo <= width ? top : bin_lo + width;
    if (remaining == bin_count) {  // the whole bin is taken: the top k are exactly the keys >= bin_lo
      warp_key_steps(key_at, n, lane, [&](int i0, int i, uint32_t x) {
        const unsigned bits = __ballot_sync(0xffffffffu, i < n && x >= bin_lo);
        if (lane == 0) mask[i0 >> 5] |= bits;
      });
      __syncwarp();
      return;
    }
    if (shift == 0) {  // one key value: take the keys above it, and of those equal to it the lowest indices
      int taken_ties = 0;
      warp_key_steps(key_at, n, lane, [&](int i0, int i, uint32_t x) {
        const bool tie = i < n && x == bin_lo;
        const unsigned ties = __ballot_sync(0xffffffffu, tie);
        const int before = __popc(ties & ((1u << lane) - 1u));
        const unsigned bits =
            __ballot_sync(0xffffffffu, (i < n && x > bin_lo) || (tie && taken_ties + before < remaining));
        if (lane == 0) mask[i0 >> 5] |= bits;
        taken_ties += __popc(ties);
      });
      __syncwarp();
      return;
    }
    if (bin_count <= range_list) {  // gather the bin's keys and indices, take each whose rank is below remaining
      uint32_t* lk = reinterpret_cast<uint32_t*>(hist);
      int* li = hist + range_list;
      int at = 0;
      warp_key_steps(key_at, n, lane, [&](int i0, int i, uint32_t x) {
        const bool inb = i < n && x >= bin_lo && x <= bin_hi;
        const unsigned above = __ballot_sync(0xffffffffu, i < n && x > bin_hi);
        const unsigned inbits = __ballot_sync(0xffffffffu, inb);
        if (inb) {
          const int p = at + __popc(inbits & ((1u << lane) - 1u));
          lk[p] = x;
          li[p] = i;
        }
        if (lane == 0) mask[i0 >> 5] |= above;
        at += __popc(inbits);
      });
      __syncwarp();
      for (int j = lane; j < bin_count; j += 32) {
        const uint32_t xj = lk[j];
        const int ij = li[j];
        int rank = 0;
        for (int t = 0; t < bin_count; t++) rank += lk[t] > xj || (lk[t] == xj && li[t] < ij);
        if (rank < remaining) atomicOr(&mask[ij >> 5], 1u << (ij & 31));
      }
      __syncwarp();
      return;
    }
    base = bin_lo;  // narrow: keys above bin_hi are taken at the end, by the final pass's ">= / >" test
    top = bin_hi;
  }
}

template <class KeyAt>
__device__ __forceinline__ void warp_select_keys(KeyAt key_at, int n, int k, uint32_t* mask, int* hist, int lane,
                                                 bool radix) {
  if (radix)
    warp_radix_select_keys(key_at, n, k, mask, hist, lane);
  else
    warp_range_select_keys(key_at, n, k, mask, hist, lane);
}

// Group scoring by one warp: row 0 of rows (G, n; rows ld apart, default n) becomes the f32 sum of the G rows, in
// head order (as gist::select_top sums); then a __syncwarp.
__device__ __forceinline__ void warp_group_sum(float* rows, int n, int G, int lane, int64_t ld = -1) {
  if (ld < 0) ld = n;
  for (int i = lane; i < n; i += 32) {
    float sum = 0.0f;
    for (int j = 0; j < G; j++) sum = __fadd_rn(sum, rows[j * ld + i]);
    rows[i] = sum;
  }
  __syncwarp();
}

// The set bits of mask (words words) as ascending ids into out (at most cap written), by one warp: 32 words at a
// time, a warp scan of their counts. Returns the number of set bits (on every lane).
__device__ __forceinline__ int warp_emit_ids(const uint32_t* mask, int words, int32_t* out, int cap, int lane) {
  int at = 0;
  for (int w0 = 0; w0 < words; w0 += 32) {
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
      if (pos < cap) out[pos] = w * 32 + bit;
      pos++;
    }
    at += __shfl_sync(0xffffffffu, incl, 31);
  }
  return at;
}

// GSA_SELECT_RADIX=1: the warp top-k runs its radix select instead of the range select (same result; an A/B).
inline bool warp_radix_topk() {
  static const bool on = [] {
    const char* e = std::getenv("GSA_SELECT_RADIX");
    return e && *e && std::string(e) != "0";
  }();
  return on;
}

inline std::string launch_error(const char* kernel, cudaError_t e) {
  return std::string("GPU chunk selection: launch of ") + kernel + " failed: " + cudaGetErrorString(e);
}

}  // namespace
}  // namespace gsa::cuda::select_detail
