// Device helpers shared by the plan-driven attention kernels (attention-fwd.cu, attention-bwd.cu,
// attention-bwd-mma.cu): the key-tile builder that walks a list's segments, element conversions, cp.async, ldmatrix,
// mma.sync and vector-reduction wrappers.
//
// Work decomposition (all kernels): grid (n_blocks, Hkv, Z). CTA (b, hk, z) serves the G = Hq / Hkv query heads of
// KV head hk over the rows of block b, stacked GQA-style: stacked row s = r * G + g (query row r of the block,
// head hk * G + g), so the G heads of one query row sit next to each other and share a causal limit. The block's
// R * G stacked rows are cut into row tiles of M rows; CTA z takes tiles z, z + Z, ... (Z > 1 only when there are
// too few blocks to fill the device). For each row tile the CTA walks the (b, hk) list's segments in key tiles of
// KT keys: the builder (warp 0) packs the next KT keys of the list into kpos[] (several short segments share one
// tile; a long one spans many), pads with kInvalidKey, and trims ranges at the tile's last visible key.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>

#include "backend/cuda/attention-kernels.h"

namespace gsa::cuda::detail {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr int32_t kInvalidKey = INT_MAX;  // > every causal limit: masked, its K/V row is zero-filled

using bf16 = __nv_bfloat16;

// ---- element access ------------------------------------------------------------------------------------------

__device__ inline float to_f32(float x) { return x; }
__device__ inline float to_f32(bf16 x) { return __bfloat162float(x); }
template <typename T>
__device__ inline T from_f32(float x);
template <>
__device__ inline float from_f32<float>(float x) { return x; }
template <>
__device__ inline bf16 from_f32<bf16>(float x) { return __float2bfloat16_rn(x); }

// 4 consecutive elements (16-byte aligned for f32, 8-byte for bf16) widened to f32.
__device__ inline float4 load4(const float* p) { return __ldg(reinterpret_cast<const float4*>(p)); }
__device__ inline float4 load4(const bf16* p) {
  const uint2 w = __ldg(reinterpret_cast<const uint2*>(p));
  return make_float4(__uint_as_float(w.x << 16), __uint_as_float(w.x & 0xffff0000u), __uint_as_float(w.y << 16),
                     __uint_as_float(w.y & 0xffff0000u));
}

__device__ inline float dot4(float4 a, float4 b, float acc) {
  acc = fmaf(a.x, b.x, acc);
  acc = fmaf(a.y, b.y, acc);
  acc = fmaf(a.z, b.z, acc);
  return fmaf(a.w, b.w, acc);
}

__device__ inline float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ inline float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// ---- async copies and tensor-core fragments ------------------------------------------------------------------

// 16-byte copy global -> shared; valid == false writes 16 zero bytes (src-size 0) and reads nothing.
__device__ inline void cp_async16_zfill(void* smem, const void* gmem, bool valid) {
  const uint32_t sa = uint32_t(__cvta_generic_to_shared(smem));
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sa), "l"(gmem), "r"(n));
}
__device__ inline void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ inline void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// cp_rows_pair's src for keys at stream positions kpos[j] (kInvalidKey: padding) of a (T, Hkv, D) tensor, head hk.
template <int D>
__device__ inline auto key_rows(const int32_t* kpos, int Hkv, int hk) {
  return [kpos, Hkv, hk](int j) -> int64_t {
    const int32_t pos = kpos[j];
    return pos == kInvalidKey ? -1 : (int64_t(pos) * Hkv + hk) * D;
  };
}

// n rows of D bf16 from two tensors a and b gathered into shared memory by cp.async, 16 bytes a thread at a time:
// tile row j is element offset src(j) of both (negative: zero-filled padding), its 16-byte chunk c lands at byte
// dst(j, c) of da and of db (each kernel's layout: padded rows, or wgmma's swizzled panels). One commit group.
template <int D, class Src, class Dst>
__device__ inline void cp_rows_pair(int n, const bf16* a, const bf16* b, void* da, void* db, Src src, Dst dst,
                                    int tid, int nthr) {
  constexpr int DC = D / 8;
  for (int e = tid; e < n * DC; e += nthr) {
    const int j = e / DC, c = e % DC;
    const int64_t row = src(j);
    const bool ok = row >= 0;
    const int64_t off = ok ? row + c * 8 : 0;
    const uint32_t o = dst(j, c);
    cp_async16_zfill(static_cast<unsigned char*>(da) + o, a + off, ok);
    cp_async16_zfill(static_cast<unsigned char*>(db) + o, b + off, ok);
  }
  cp_async_commit();
}

// Four 8x8 b16 matrices; lane i gives the address of row i % 8 of matrix i / 8. Without .trans lane t receives
// (row t/4, cols 2(t%4), +1) of each matrix; with .trans (rows 2(t%4), +1 of col t/4).
__device__ inline void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
  const uint32_t sa = uint32_t(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(sa));
}
__device__ inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem) {
  const uint32_t sa = uint32_t(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(sa));
}

// c += a (16x16, row) * b (16x8, col), bf16 inputs, f32 accumulators. Fragment layouts (g = lane/4, c = lane%4):
// a: {(g, 2c..2c+1), (g+8, 2c..), (g, 2c+8..), (g+8, 2c+8..)}; b: {(k 2c..2c+1, n g), (k 2c+8.., n g)};
// c: {(g, 2c), (g, 2c+1), (g+8, 2c), (g+8, 2c+1)}.
__device__ inline void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// p[0..3] += x (16-byte aligned global f32), fire-and-forget (no return value to wait for; sm_90).
__device__ inline void red_add4(float* p, float4 x) {
  asm volatile("red.global.add.v4.f32 [%0], {%1,%2,%3,%4};\n" ::"l"(p), "f"(x.x), "f"(x.y), "f"(x.z), "f"(x.w)
               : "memory");
}

// The backward's dK / dV partials (attn_bwd_args::fixed): f32 atomics, or exact 64-bit fixed point. Integer
// addition is associative, so fixed-point sums are the same bits whatever order the CTAs add in: GPU training is
// reproducible run to run. A partial is rounded to a multiple of 2^-40 (below that it keeps f32's relative
// precision only when |x| >= 2^-16); a partial of magnitude kFixLimit or more (or not finite) sets *overflow, and
// the add kernel then writes NaN rather than a wrapped sum.
constexpr float kFixScale = 0x1p40f, kFixInvScale = 0x1p-40f, kFixLimit = 0x1p10f;

__device__ inline void red_add_u64(unsigned long long* p, long long x) {
  asm volatile("red.global.add.u64 [%0], %1;\n" ::"l"(p), "l"(x) : "memory");
}

// acc[i..i+3] += x, acc f32 (fixed = false) or fixed-point int64 (fixed = true).
__device__ inline void acc_add4(void* acc, int64_t i, float4 x, bool fixed, unsigned* overflow) {
  if (!fixed) {
    red_add4(static_cast<float*>(acc) + i, x);
    return;
  }
  unsigned long long* p = static_cast<unsigned long long*>(acc) + i;
  const bool ok = fabsf(x.x) < kFixLimit && fabsf(x.y) < kFixLimit && fabsf(x.z) < kFixLimit && fabsf(x.w) < kFixLimit;
  if (!ok) {
    atomicOr(overflow, 1u);
    return;
  }
  red_add_u64(p, __float2ll_rn(x.x * kFixScale));
  red_add_u64(p + 1, __float2ll_rn(x.y * kFixScale));
  red_add_u64(p + 2, __float2ll_rn(x.z * kFixScale));
  red_add_u64(p + 3, __float2ll_rn(x.w * kFixScale));
}

__device__ inline uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);  // .x = lo sits in the low half
  return *reinterpret_cast<const uint32_t*>(&h);
}

// ---- backward helpers (attention-bwd-mma.cu, attention-structured-bwd.cu) -----------------------------------

__device__ inline uint32_t add_bf16x2(uint32_t w, float lo, float hi) {
  return pack_bf16x2(__uint_as_float(w << 16) + lo, __uint_as_float(w & 0xffff0000u) + hi);
}

// acc + (a.lo * b.lo + a.hi * b.hi) for two packed bf16 pairs.
__device__ inline float dot_bf16x2(uint32_t a, uint32_t b, float acc) {
  acc = fmaf(__uint_as_float(a << 16), __uint_as_float(b << 16), acc);
  return fmaf(__uint_as_float(a & 0xffff0000u), __uint_as_float(b & 0xffff0000u), acc);
}

// One unit of a tile's dK or dV: out(keys kg*16 + [0,16), cols cg*64 + [0,64)) = sum over the M stacked rows of
// A[row][key] * B[row][col], with A = P or dS ([M][LP] bf16) and B = dO or Q ([M][LD] bf16); atomically added to
// acc (Tk, Hkv, D) at the keys' positions (padding slots skipped): f32, or fixed point (acc_add4).
template <int D, int LD, int LP>
__device__ inline void grad_unit(const bf16* A, const bf16* B, int M, int kg, int cg, const int32_t* kp, void* acc,
                                 bool fixed, unsigned* overflow, int hk, int Hkv, int lane) {
  float c[8][4];
#pragma unroll
  for (int nt = 0; nt < 8; nt++) c[nt][0] = c[nt][1] = c[nt][2] = c[nt][3] = 0.f;
  for (int kk = 0; kk < M / 16; kk++) {
    // A operand = (A^T) 16 keys x 16 rows. Matrix i of the x4 load: rows kk*16 + (i/2)*8, keys kg*16 + (i%2)*8;
    // .trans hands lane t the elements (row 2(t%4)+{0,1}, key t/4) = (A^T)(key t/4, row 2(t%4)+{0,1}): the a0..a3
    // fragment order {(m 0-7, k 0-7), (m 8-15, k 0-7), (m 0-7, k 8-15), (m 8-15, k 8-15)}.
    uint32_t af[4];
    ldmatrix_x4_trans(af, A + (kk * 16 + (lane & 7) + (lane >> 4) * 8) * LP + kg * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
    for (int dp = 0; dp < 4; dp++) {
      // B operand (k = row, n = col) from B[row][col], the forward's V pattern.
      uint32_t r[4];
      const int col = cg * 64 + dp * 16 + (lane >> 4) * 8;
      ldmatrix_x4_trans(r, B + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LD + col);
      mma_bf16(c[2 * dp], af, r[0], r[1]);
      mma_bf16(c[2 * dp + 1], af, r[2], r[3]);
    }
  }
  // Lane (g, q) holds keys g and g + 8, cols 2q, 2q+1 of each 8-col tile. Lanes q = 2j and 2j + 1 swap halves:
  // the even one gets key g, cols 4j..4j+3; the odd one key g + 8, the same cols.
  const int g = lane >> 2, q = lane & 3;
  const bool odd = q & 1;
  const int32_t pos = kp[kg * 16 + g + (odd ? 8 : 0)];
  const int64_t dst = pos != kInvalidKey ? (int64_t(pos) * Hkv + hk) * D + cg * 64 + (q & ~1) * 2 : -1;
#pragma unroll
  for (int nt = 0; nt < 8; nt++) {
    const float s0 = odd ? c[nt][0] : c[nt][2], s1 = odd ? c[nt][1] : c[nt][3];
    const float r0 = __shfl_xor_sync(0xffffffffu, s0, 1), r1 = __shfl_xor_sync(0xffffffffu, s1, 1);
    const float4 x = odd ? make_float4(r0, r1, c[nt][2], c[nt][3]) : make_float4(c[nt][0], c[nt][1], r0, r1);
    if (dst >= 0) acc_add4(acc, dst + nt * 8, x, fixed, overflow);
  }
}

// ---- work items and the key-tile builder ---------------------------------------------------------------------

// What CTA (blockIdx.x, blockIdx.y) serves: block b, KV head hk, its rows and its list.
struct work_item {
  int b, hk, G, R;    // R: rows of the block
  int row0;           // first query row of the block
  int64_t seg_begin, seg_end;
};

__device__ inline work_item get_work(const attn_plan_view& p, const attn_dims& d) {
  work_item w;
  w.b = blockIdx.x;
  w.hk = blockIdx.y;
  w.G = d.Hq / d.Hkv;
  w.row0 = p.block_q[w.b];
  w.R = p.block_q[w.b + 1] - w.row0;
  const int64_t list = int64_t(w.b) * p.heads + (p.heads == 1 ? 0 : w.hk);
  w.seg_begin = p.seg_ptr[list];
  w.seg_end = p.seg_ptr[list + 1];
  return w;
}

// Position in the list: segment index and keys of it already consumed.
struct key_cursor {
  int64_t seg;
  int32_t off;
};

// Run by all 32 lanes of one warp (uniform control flow). Packs the next keys of the list into kpos[0, KT),
// pads with kInvalidKey, advances c, returns how many keys it packed (0: the list is exhausted). key_end: one
// past the last key any row of the tile may see; ranges are cut there (gists are masked per key instead).
template <int KT>
__device__ inline int build_key_tile(key_cursor& c, int64_t seg_end, const attn_plan_view& p, int32_t key_end,
                                     int32_t* kpos, int lane) {
  int n = 0;
  while (n < KT && c.seg < seg_end) {
    const int4 s = __ldg(reinterpret_cast<const int4*>(p.segs) + c.seg);  // {level, begin, end, pad}
    const int g = p.gists_per_unit;
    int32_t nk;
    const int32_t* base = nullptr;
    if (s.x < 0) {
      nk = min(s.z, key_end) - s.y;
    } else {
      nk = (s.z - s.y) * g;
      base = p.gist_pos + __ldg(p.gist_ptr + s.x);
    }
    const int take = min(nk - c.off, KT - n);
    if (take > 0) {
      for (int l = lane; l < KT; l += 32)
        if (l >= n && l < n + take) {
          const int32_t o = c.off + (l - n);
          kpos[l] = s.x < 0 ? s.y + o : __ldg(base + s.y + o / g) + o % g;
        }
      n += take;
      c.off += take;
    }
    if (c.off >= nk) {
      c.seg++;
      c.off = 0;
    }
  }
  for (int l = lane; l < KT; l += 32)
    if (l >= n) kpos[l] = kInvalidKey;
  return n;
}

// Causal limit of stacked row s (tile-local stacked row index s_glob within the block): the last key position
// it may see, or -1 for a padding row past the block.
__device__ inline int32_t row_limit(const work_item& w, int q_offset, int s_glob) {
  const int r = s_glob / w.G;
  return r < w.R ? q_offset + w.row0 + r : -1;
}

// One past the last key any stacked row in [s0, s0 + M) of the block may see.
__device__ inline int32_t tile_key_end(const work_item& w, int q_offset, int s0, int M) {
  const int r_last = min(w.R - 1, (s0 + M - 1) / w.G);
  return q_offset + w.row0 + r_last + 1;
}

// ---- launch shapes (host) -----------------------------------------------------------------------------------

// Grid (n_blocks, Hkv, Z): Z row-tile strides per block, enough CTAs for ~4 per SM when blocks are few.
inline dim3 attention_grid(const attn_dims& d, const attn_plan_view& p, int rows_per_cta, int sm_count) {
  const int64_t stacked = int64_t(p.max_block_rows) * (d.Hq / d.Hkv);
  const int64_t tiles = (stacked + rows_per_cta - 1) / rows_per_cta;
  const int64_t ctas = int64_t(p.n_blocks) * d.Hkv;
  const int64_t want = (int64_t(4) * std::max(1, sm_count) + ctas - 1) / ctas;
  const int64_t z = std::clamp<int64_t>(std::min(tiles, want), 1, 65535);
  return dim3(unsigned(p.n_blocks), unsigned(d.Hkv), unsigned(z));
}

inline int warps_for(const attn_dims& d, const attn_plan_view& p, int rows_per_warp, int max_warps) {
  const int64_t stacked = int64_t(p.max_block_rows) * (d.Hq / d.Hkv);
  return int(std::clamp<int64_t>((stacked + rows_per_warp - 1) / rows_per_warp, 1, max_warps));
}

}  // namespace gsa::cuda::detail
