// The walk of the key-major dK / dV kernels (attention-keymajor.cu on mma.sync, attention-keymajor-wgmma.cu on
// wgmma) over the rows that see a key tile: runs of blocks, row windows of RQ query rows, and the row statistics
// of a window.
#pragma once
#include "backend/cuda/attention-kernels.cuh"

namespace gsa::cuda::detail {

struct krow {  // one stacked row of a window
  int32_t lim;  // causal limit; -1: padding or not in the run
  int32_t bl;   // block index relative to the window's first block
  float lse2, di;
};

// The walk over a tile's rows: run index, window start (query row, aligned to RQ), the run's rows [lo, hi) and b,
// the block holding the window's first row of the run (windows only move forward, so b does too).
struct kcursor {
  int run, w0, lo, hi, b;
};

__device__ inline void kcursor_block(kcursor& c, const attn_plan_view& p) {
  const int first = max(c.w0, c.lo);
  while (__ldg(p.block_q + c.b + 1) <= first) c.b++;
}

__device__ inline bool kcursor_start(kcursor& c, const attn_plan_view& p, int run_end, int row_min, int RQ) {
  for (; c.run < run_end; c.run++) {
    const krun r = p.kruns[c.run];
    c.lo = max(__ldg(p.block_q + r.b0), row_min);
    c.hi = __ldg(p.block_q + r.b1);
    if (c.lo < c.hi) {
      c.w0 = c.lo / RQ * RQ;
      c.b = r.b0;
      kcursor_block(c, p);
      return true;
    }
  }
  return false;
}

// Advances to the next window; false at the end of the walk.
__device__ inline bool kcursor_next(kcursor& c, const attn_plan_view& p, int run_end, int row_min, int RQ) {
  c.w0 += RQ;
  if (c.w0 < c.hi) {
    kcursor_block(c, p);
    return true;
  }
  c.run++;
  return kcursor_start(c, p, run_end, row_min, RQ);
}

// Whether a key (position pos, gist unit unit or -1 for a stream key) is in block b's list.
__device__ inline bool block_lists(const sblock& b, int level, int32_t pos, int32_t unit) {
  if (level >= 0) return unit >= b.u[level][0] && unit < b.u[level][1];
  bool m = false;
  for (int r = 0; r < b.nr; r++) m |= pos >= b.r[r][0] && pos < b.r[r][1];
  return m;
}


// Key j of the tile: its position and gist unit (-1 for a stream key); kInvalidKey past the end.
__device__ inline void ktile_key(const attn_plan_view& p, const ktile& tile, int Tk, int j, int32_t& pos,
                                 int32_t& unit) {
  const int32_t o = tile.first + j;
  pos = kInvalidKey;
  unit = -1;
  if (tile.level < 0) {
    if (o < Tk) pos = o;
  } else {
    const int gpu = p.gists_per_unit;
    const int32_t g0 = __ldg(p.gist_ptr + tile.level), units = __ldg(p.gist_ptr + tile.level + 1) - g0;
    if (o < units * gpu) {
      unit = o / gpu;
      pos = __ldg(p.gist_pos + g0 + unit) + (o - unit * gpu);
    }
  }
}

// The walk itself: windows double-buffered (issue(buffer, cursor) stages one, one cp.async commit group), then per
// window a barrier after its copies (with ASYNC_PROXY, a fence first, for wgmma's reads) and body(buffer), then a
// barrier before that buffer is staged again. Returns after the last window's copies have landed.
template <bool ASYNC_PROXY, class Issue, class Body>
__device__ inline void kwalk(const ktile& tile, const attn_plan_view& p, int row_min, int RQ, Issue issue, Body body) {
  kcursor cur{tile.run_begin, 0, 0, 0, 0};
  bool have = kcursor_start(cur, p, tile.run_end, row_min, RQ);
  if (have) issue(0, cur);
  for (int it = 0; have; it++) {
    const int buf = it & 1;
    kcursor nxt = cur;
    const bool more = kcursor_next(nxt, p, tile.run_end, row_min, RQ);
    if (more)
      issue(buf ^ 1, nxt);
    else
      cp_async_commit();
    cp_async_wait<1>();
    if (ASYNC_PROXY) asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();  // window buf (and, the first time, the key tile) visible
    body(buf);
    __syncthreads();  // buffer buf is rewritten by the window after next
    cur = nxt;
    have = more;
  }
  cp_async_wait<0>();
}

// The tile's kKTile keys into kpos / kunit (threads < kKTile), a barrier, then warp 0 writes the smallest position
// into kmin (kInvalidKey: an empty tile); kmin is read after the caller's next barrier.
__device__ inline void ktile_keys(const attn_plan_view& p, const ktile& tile, int Tk, int tid, int warp, int lane,
                                  int32_t* kpos, int32_t* kunit, int32_t& kmin) {
  static_assert(kKTile == 64, "warp 0 reduces two keys per lane");
  if (tid < kKTile) ktile_key(p, tile, Tk, tid, kpos[tid], kunit[tid]);
  __syncthreads();
  if (warp == 0) {
    int32_t m = min(kpos[lane], kpos[lane + 32]);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) m = min(m, __shfl_xor_sync(0xffffffffu, m, off));
    if (lane == 0) kmin = m;
  }
}

// cp_rows_pair's src for window c's stacked rows (query rows c.w0 + s / G, head hk G + s % G of a (Tq, Hq, D)
// tensor; -1 outside the run's rows [c.lo, c.hi)).
template <int D>
__device__ inline auto window_rows(const kcursor& c, int G, int Hq, int hk) {
  return [c, G, Hq, hk](int s) -> int64_t {
    const int r = c.w0 + s / G;
    return r >= c.lo && r < c.hi ? (int64_t(r) * Hq + hk * G + s % G) * D : -1;
  };
}

// P^T and dS^T of a warp's 16 keys against a window's MQ rows, in place of S^T (s) and dP^T (dp) in the m16
// accumulator layout (keys pos_a = row lane / 4, pos_b = + 8; window row nt * 8 + 2 c4 + {0, 1}): a key counts for a
// row when the row's block lists it (vis_* bit x.bl) and the row's causal limit reaches it.
template <int MQ>
__device__ __forceinline__ void key_probs_ds(float (&s)[MQ / 8][4], float (&dp)[MQ / 8][4], const krow* rows,
                                             uint32_t vis_a, uint32_t vis_b, int32_t pos_a, int32_t pos_b, float sl2,
                                             float scale, int c4) {
#pragma unroll
  for (int nt = 0; nt < MQ / 8; nt++)
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const krow x = rows[nt * 8 + c4 * 2 + (e & 1)];
      const bool hi = e >= 2;
      const bool ok = (((hi ? vis_b : vis_a) >> x.bl) & 1) && (hi ? pos_b : pos_a) <= x.lim;
      const float p = ok ? exp2f(s[nt][e] * sl2 - x.lse2) : 0.f;
      s[nt][e] = p;
      dp[nt][e] = ok ? p * (dp[nt][e] - x.di) * scale : 0.f;
    }
}

// Stacked row s of window c: its causal limit (-1 outside the run), block relative to c.b, lse log2(e) (+inf for
// a row without keys) and D_i.
__device__ inline krow window_row(const attn_bwd_args& a, const kcursor& c, int s, int G, int q_offset) {
  const int r = c.w0 + s / G, g = s % G, hk = blockIdx.y;
  krow x{-1, 0, INFINITY, 0.f};
  if (r >= c.lo && r < c.hi) {
    int b = c.b;
    while (__ldg(a.p.block_q + b + 1) <= r) b++;
    const int64_t row = int64_t(r) * a.d.Hq + hk * G + g;
    const float l = __ldg(a.lse + row);
    x.lim = q_offset + r;
    x.bl = b - c.b;
    x.lse2 = l == -INFINITY ? INFINITY : l * kLog2e;
    x.di = __ldg(a.di + row);
  }
  return x;
}

// The window's blocks: the first (c.b) and how many (at most 32).
__device__ inline void window_blocks(const attn_plan_view& p, const kcursor& c, int RQ, int32_t& first,
                                     int32_t& n) {
  const int last = min(c.hi, c.w0 + RQ) - 1;
  int b = c.b;
  while (__ldg(p.block_q + b + 1) <= last) b++;
  first = c.b;
  n = min(b - c.b + 1, 32);
}

// Bit i: block first + i lists the key.
__device__ inline uint32_t key_blocks(const attn_plan_view& p, int first, int n, int level, int32_t pos,
                                      int32_t unit) {
  uint32_t vis = 0;
  if (pos == kInvalidKey) return vis;
  for (int i = 0; i < n; i++)
    if (block_lists(p.sblocks[first + i], level, pos, unit)) vis |= 1u << i;
  return vis;
}

// One add per key and feature of a warp's 16 key rows (c: m16 accumulator layout over D, keys pos_a = row lane / 4
// and pos_b = that + 8). Lanes q = 2j and 2j + 1 (q = lane % 4) swap halves so each adds 4 consecutive features of
// one key. Every lane takes part in the shuffles.
template <int D>
__device__ inline void flush_key_rows(const attn_bwd_args& a, void* acc, const float (&c)[D / 8][4], int32_t pos_a,
                                      int32_t pos_b, int hk, int lane) {
  const int c4 = lane & 3;
  const bool odd = c4 & 1;
  const int32_t pos = odd ? pos_b : pos_a;
  const int64_t base = pos == kInvalidKey ? -1 : (int64_t(pos) * a.d.Hkv + hk) * D + (c4 & ~1) * 2;
#pragma unroll
  for (int dt = 0; dt < D / 8; dt++) {
    const float s0 = odd ? c[dt][0] : c[dt][2], s1 = odd ? c[dt][1] : c[dt][3];
    const float r0 = __shfl_xor_sync(0xffffffffu, s0, 1), r1 = __shfl_xor_sync(0xffffffffu, s1, 1);
    const float4 x = odd ? make_float4(r0, r1, c[dt][2], c[dt][3]) : make_float4(c[dt][0], c[dt][1], r0, r1);
    if (acc && base >= 0) acc_add4(acc, base + dt * 8, x, a.fixed, a.overflow);
  }
}

}  // namespace gsa::cuda::detail
