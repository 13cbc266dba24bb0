// Row tiles and key tiles of the structured attention kernels (attention-structured.cu forward,
// attention-structured-bwd.cu backward), for plans that upload_plan found structured (attention-kernels.h: every
// list = at most kSNR short stream ranges + at most one gist-unit segment per level, heads == 1).
//
// Work decomposition: grid (n_tiles, Hkv). CTA (t, hk) serves the RT = M / G consecutive query rows
// [t RT, t RT + RT) (M stacked rows, stacked GQA-style as in the generic kernels: s = r G + g) of KV head hk,
// whatever blocks they belong to (at most kSMaxB: upload_plan checks every aligned window of kSWindow rows).
// Thread 0 sets the row tile up (stile_setup): the tile's blocks and their descriptors, and the tile's key
// segments: per gist level one compact range [U0 g, U1 g) of gist indices (U0 / U1: min / max over the tile's
// blocks of their visible unit range), then the union of the blocks' stream ranges (cut at the tile's last row,
// sorted, merged: no key twice). Key tile i is slots [i KT, i KT + KT) of the segments in order: the first KT
// threads pack it, one slot each (stile_pack_load / stile_pack_store); then all warps compute, per block of the
// tile, a bit mask of the slots that block's list contains (stile_masks; a range slot: the key lies in one of the
// block's ranges; a gist slot: its unit lies in the block's unit range of that level).
// A row sees slot j iff its block's bit j is set and kpos[j] <= its causal limit: exactly the plan's rule,
// and each key of a row's list is met once (the tile's segments are disjoint).
#pragma once
#include "backend/cuda/attention-kernels.cuh"

namespace gsa::cuda::detail {

constexpr int kSMaxSeg = kSLV + kSMaxB * kSNR;
constexpr int kSTagShift = 27;  // gist slot tag: level << 27 | unit

// Key-tile descriptors in flight: the ring of the pipeline below (tile i + 2 packed while tile i computes).
constexpr int kSRing = 3;

template <int KT, int R = kSRing>
struct stile {
  int4 seg[kSMaxSeg];               // {level or -1, begin, end, gist_ptr[level]}; level >= 0: gist indices u g + i
  sblock blk[kSMaxB];               // descriptors of the tile's blocks
  uint32_t vis[R][kSMaxB][2];  // per ring slot and block: slots the block's list holds (bit j of word j / 32)
  int32_t kpos[R][KT];         // per ring slot: key positions (kInvalidKey: padding)
  int32_t ktag[R][KT];         // -1: range key; else level << kSTagShift | unit
  int32_t bq[kSMaxB + 1];           // first row of each of the tile's blocks (absolute)
  int32_t sofs[kSMaxSeg + 1];       // each segment's first slot in the tile's key order; sofs[nseg] = keys in all
  int32_t kmaxw[R][KT / 32];   // per ring slot: each packing warp's largest position (stile_pack_store)
  int32_t nbt, nseg, r0, r1;        // blocks, segments, rows [r0, r1)
};

template <int KT, int R = kSRing>
__host__ __device__ constexpr size_t stile_bytes() {
  return (sizeof(stile<KT, R>) + 15) & ~size_t(15);
}

// Thread 0 only. Rows [r0, r1), r0 < r1 <= Tq.
template <int KT, int R>
__device__ inline void stile_setup(stile<KT, R>& t, const attn_plan_view& p, int q_offset, int r0, int r1) {
  auto find = [&](int r) {  // the block holding row r: the largest b with block_q[b] <= r
    int lo = 0, hi = p.n_blocks - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) >> 1;
      if (__ldg(p.block_q + mid) <= r)
        lo = mid;
      else
        hi = mid - 1;
    }
    return lo;
  };
  const int bf = find(r0), nbt = min(find(r1 - 1) - bf + 1, kSMaxB);  // <= kSMaxB by upload_plan's check
  t.nbt = nbt;
  t.r0 = r0;
  t.r1 = r1;
  for (int i = 0; i < nbt; i++) {
    t.bq[i] = __ldg(p.block_q + bf + i);
    t.blk[i] = p.sblocks[bf + i];
  }
  t.bq[nbt] = __ldg(p.block_q + bf + nbt);
  const int32_t key_end = q_offset + r1;
  const int g = p.gists_per_unit;
  int ns = 0;
  for (int l = 0; l < p.levels; l++) {
    int lo = INT_MAX, hi = INT_MIN;
    for (int i = 0; i < nbt; i++) {
      const int a = t.blk[i].u[l][0], b = t.blk[i].u[l][1];
      if (a < b) {
        lo = min(lo, a);
        hi = max(hi, b);
      }
    }
    if (lo < hi) t.seg[ns++] = make_int4(l, lo * g, hi * g, __ldg(p.gist_ptr + l));
  }
  const int first = ns;
  for (int i = 0; i < nbt; i++)
    for (int k = 0; k < t.blk[i].nr; k++) {
      const int a = t.blk[i].r[k][0], b = min(t.blk[i].r[k][1], key_end);
      if (a >= b) continue;
      int j = ns++;  // insertion by begin
      while (j > first && t.seg[j - 1].y > a) {
        t.seg[j] = t.seg[j - 1];
        j--;
      }
      t.seg[j] = make_int4(-1, a, b, 0);
    }
  int out = first;
  for (int j = first; j < ns; j++) {
    const int4 s = t.seg[j];
    if (out > first && s.y <= t.seg[out - 1].z)
      t.seg[out - 1].z = max(t.seg[out - 1].z, s.z);
    else
      t.seg[out++] = s;
  }
  t.nseg = out;
  t.sofs[0] = 0;
  for (int j = 0; j < out; j++) t.sofs[j + 1] = t.sofs[j] + (t.seg[j].z - t.seg[j].y);
}

// Run by every warp after the packed slots of buffer buf are visible (a barrier): the per-block slot masks of
// buffer buf, warp w taking blocks w, w + W, ...
template <int KT, int R>
__device__ inline void stile_masks(stile<KT, R>& t, int buf, int warp, int W, int lane) {
  const int32_t* kpos = t.kpos[buf];
  const int32_t* ktag = t.ktag[buf];
  for (int i = warp; i < t.nbt; i += W) {
    const sblock& b = t.blk[i];
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int j = h * 32 + lane;
      bool m = false;
      if (j < KT) {
        const int32_t pos = kpos[j], tag = ktag[j];
        if (pos != kInvalidKey) {
          if (tag < 0) {
            for (int r = 0; r < b.nr; r++) m |= pos >= b.r[r][0] && pos < b.r[r][1];
          } else {
            const int l = tag >> kSTagShift, u = tag & ((1 << kSTagShift) - 1);
            m = u >= b.u[l][0] && u < b.u[l][1];
          }
        }
      }
      const uint32_t word = __ballot_sync(0xffffffffu, m);
      if (lane == 0) t.vis[buf][i][h] = word;
    }
  }
}

// Stacked row s (0 <= s < M) of the tile: its query row, head in the group, causal limit (-1: padding row) and
// block index within the tile.
struct srow {
  int r, g, bl;
  int32_t lim;
};

template <int KT, int R>
__device__ inline srow stile_row(const stile<KT, R>& t, int s, int G, int q_offset) {
  srow x;
  x.r = t.r0 + s / G;
  x.g = s % G;
  x.bl = 0;
  x.lim = -1;
  if (x.r < t.r1) {
    x.lim = q_offset + x.r;
    for (int i = 1; i < t.nbt; i++)
      if (t.bq[i] <= x.r) x.bl = i;
  }
  return x;
}

// True when every slot of a key tile (largest position kmax: stile_kmax) holds a key that both of the thread's
// rows see, on every lane of the warp: the warp may then skip the per-element mask (most tiles of the gist range).
// Padding rows (lim < 0) never are.
template <int KT>
__device__ inline bool stile_full(int32_t kmax, uint64_t vis_a, uint64_t vis_b, const srow& ra, const srow& rb) {
  static_assert(KT == 32 || KT == 64, "the visibility masks are 64 bits");
  constexpr uint64_t all = KT == 64 ? ~uint64_t(0) : (uint64_t(1) << KT) - 1;
  const bool mine = (vis_a & vis_b) == all && kmax <= min(ra.lim, rb.lim);
  return __all_sync(0xffffffffu, mine);
}

template <int KT, int R>
__device__ inline uint64_t stile_mask(const stile<KT, R>& t, int buf, int bl) {
  return uint64_t(t.vis[buf][bl][0]) | (uint64_t(t.vis[buf][bl][1]) << 32);
}

// The parallel packer (attention-structured.cu): key tile i is slots [i KT, i KT + KT) of the tile's key order
// (segments in order, sofs their first slots), so thread j < KT finds its slot's segment by binary search and
// needs no cursor. Two phases so that the gist position's global load is in flight while the thread computes:
// stile_pack_load (issues it), stile_pack_store (writes the slot and the warp's largest position). Run by whole
// warps (KT a multiple of 32).
struct pslot {
  int32_t pos, tag;
};

template <int KT, int R>
__device__ inline pslot stile_pack_load(const stile<KT, R>& t, const attn_plan_view& p, int i, int j) {
  pslot x{kInvalidKey, -1};
  const int32_t o = i * KT + j;
  if (o >= t.sofs[t.nseg]) return x;
  int lo = 0, hi = t.nseg - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (t.sofs[mid] <= o)
      lo = mid;
    else
      hi = mid - 1;
  }
  const int4 s = t.seg[lo];
  const int32_t off = s.y + (o - t.sofs[lo]);
  if (s.x < 0) {
    x.pos = off;
  } else {
    const int g = p.gists_per_unit;
    const int32_t u = off / g;
    x.pos = __ldg(p.gist_pos + s.w + u) + (off - u * g);
    x.tag = (s.x << kSTagShift) | u;
  }
  return x;
}

template <int KT, int R>
__device__ inline void stile_pack_store(stile<KT, R>& t, int buf, const pslot& x, int j) {
  t.kpos[buf][j] = x.pos;
  t.ktag[buf][j] = x.tag;
  int32_t mx = x.pos == kInvalidKey ? INT_MIN : x.pos;
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) mx = max(mx, __shfl_xor_sync(0xffffffffu, mx, off));
  if ((j & 31) == 0) t.kmaxw[buf][j >> 5] = mx;
}

// The structured kernels' key-tile pipeline (forward and backward row pass), one barrier per key tile. Before the
// loop: stile_pack_first, a barrier, stile_issue_kv of tile 0 and its masks, cp_async_wait<0>. Iteration i: a
// barrier (tile i's K / V and masks, tile i + 1's slots visible; tile i - 1 done by every warp), stile_next (tile
// i + 1's copies and masks, and the load of tile i + 2's slot), the compute of tile i, stile_pack_store of tile
// i + 2's slot, cp_async_wait<0>. Ring slot of tile i: i % kSRing, K / V buffer: i % 2.

// The slots of tiles [0, n) (threads j < KT; n < R).
template <int KT, int R>
__device__ inline void stile_pack_first(stile<KT, R>& t, const attn_plan_view& p, int ntiles, int j, int n = 2) {
  if (j < KT)
    for (int i = 0; i < n && i < ntiles; i++) stile_pack_store(t, i, stile_pack_load(t, p, i, j), j);
}

// The K / V rows of ring slot kb's keys into K / V buffer vb (Ks, Vs: [2][KT][LD]) by cp.async, padding slots
// zero-filled; one commit group.
template <int D, int KT, int LD, int R>
__device__ inline void stile_issue_kv(const stile<KT, R>& t, int kb, int vb, bf16* Ks, bf16* Vs, const bf16* k,
                                      const bf16* v, int Hkv, int hk, int tid, int nthr) {
  // The loop written out rather than cp_rows_pair: through the helper ptxas spilled 172 instead of 36 bytes in
  // the D 128 forward (both mma.sync kernels run at 255 registers).
  constexpr int DC = D / 8;
  for (int e = tid; e < KT * DC; e += nthr) {
    const int j = e / DC, c = e % DC;
    const int32_t pos = t.kpos[kb][j];
    const bool ok = pos != kInvalidKey;
    const int64_t off = ok ? (int64_t(pos) * Hkv + hk) * D + c * 8 : 0;
    cp_async16_zfill(Ks + (vb * KT + j) * LD + c * 8, k + off, ok);
    cp_async16_zfill(Vs + (vb * KT + j) * LD + c * 8, v + off, ok);
  }
  cp_async_commit();
}

// Iteration it's work before its compute: tile it + 1's copies and masks; `packs` (whole warps: threads < KT while
// tile it + 2 exists) and the load of tile it + 2's slot, stored after the compute (stile_pack_store).
template <int D, int KT, int LD, int R>
__device__ inline pslot stile_next(stile<KT, R>& t, const attn_plan_view& p, int it, int ntiles, bool& packs,
                                   bf16* Ks, bf16* Vs, const bf16* k, const bf16* v, int Hkv, int hk, int tid,
                                   int nthr, int warp, int W, int lane) {
  if (it + 1 < ntiles) {
    stile_issue_kv<D, KT, LD>(t, (it + 1) % R, (it + 1) & 1, Ks, Vs, k, v, Hkv, hk, tid, nthr);
    stile_masks(t, (it + 1) % R, warp, W, lane);
  }
  packs = tid < KT && it + 2 < ntiles;
  pslot nxt{};
  if (packs) nxt = stile_pack_load(t, p, it + 2, tid);
  return nxt;
}

// The largest key position of key tile i (buffer buf, packed by stile_pack_store); INT32_MAX unless the tile is
// full (stile_full's rule).
template <int KT, int R>
__device__ inline int32_t stile_kmax(const stile<KT, R>& t, int buf, int i) {
  if ((i + 1) * KT > t.sofs[t.nseg]) return INT32_MAX;
  int32_t mx = t.kmaxw[buf][0];
#pragma unroll
  for (int w = 1; w < KT / 32; w++) mx = max(mx, t.kmaxw[buf][w]);
  return mx;
}

}  // namespace gsa::cuda::detail
