// Warp-level steps shared by the bf16 tensor-core attention kernels (attention-fwd.cu, attention-bwd-mma.cu,
// attention-structured*.cu, attention-unfold.cu). A warp owns 16 stacked query rows; the thread's two rows are
// a = lane / 4 and b = a + 8 (the m16n8 accumulator rows). A key tile of KT keys gives score tiles s[KT / 8][4] in
// the accumulator layout: s[nt][e] (e < 2) is row a, key nt * 8 + (lane % 4) * 2 + e; s[nt][2 + e] is row b.
// K and V tiles are [KT][LD] bf16 in shared memory. Masking stays in the kernels (each has its own rule).
#pragma once
#include "backend/cuda/attention-kernels.cuh"

namespace gsa::cuda::detail {

// s = Q K^T for the warp's 16 rows (Q as A fragments qf, K rows through ldmatrix).
template <int D, int KT, int LD>
__device__ inline void mma_scores(float (&s)[KT / 8][4], const uint32_t (&qf)[D / 16][4], const bf16* Kb, int lane) {
#pragma unroll
  for (int nt = 0; nt < KT / 8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
  for (int ks = 0; ks < D / 16; ks++)
#pragma unroll
    for (int np = 0; np < KT / 16; np++) {
      uint32_t r[4];
      ldmatrix_x4(r, Kb + (np * 16 + (lane >> 4) * 8 + (lane & 7)) * LD + ks * 16 + ((lane >> 3) & 1) * 8);
      mma_bf16(s[2 * np], qf[ks], r[0], r[1]);
      mma_bf16(s[2 * np + 1], qf[ks], r[2], r[3]);
    }
}

// The tile's scores scaled by sl2 (1 / sqrt(D) in the log2 domain), -inf where vis(j, half) is false (key j of
// the tile for row a (half 0) or b (half 1)); the rows' maxima over the tile (this lane's columns, then the quad).
template <int KT, class Vis>
__device__ inline void mask_scores(float (&s)[KT / 8][4], float sl2, int lane, Vis vis, float& mx_a, float& mx_b) {
  mx_a = mx_b = -INFINITY;
#pragma unroll
  for (int nt = 0; nt < KT / 8; nt++)
#pragma unroll
    for (int e = 0; e < 2; e++) {
      const int j = nt * 8 + (lane & 3) * 2 + e;
      s[nt][e] = vis(j, 0) ? s[nt][e] * sl2 : -INFINITY;
      s[nt][2 + e] = vis(j, 1) ? s[nt][2 + e] * sl2 : -INFINITY;
      mx_a = fmaxf(mx_a, s[nt][e]);
      mx_b = fmaxf(mx_b, s[nt][2 + e]);
    }
#pragma unroll
  for (int off = 1; off <= 2; off <<= 1) {  // the 4 lanes of a quad hold one row
    mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, off));
    mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, off));
  }
}

// One online-softmax step in the log2 domain after mask_scores (mx_*: its maxima): the scores become exp2(s - m)
// with m the rows' running maxima; l_* (this lane's partial row sums) and o are rescaled to the new maxima. A row
// with no visible key so far keeps m = -inf and adds nothing.
template <int D, int KT>
__device__ inline void online_softmax(float (&s)[KT / 8][4], float (&o)[D / 8][4], float mx_a, float mx_b,
                                      float& m_a, float& m_b, float& l_a, float& l_b) {
  const float mn_a = fmaxf(m_a, mx_a), mn_b = fmaxf(m_b, mx_b);
  const float ref_a = mn_a == -INFINITY ? 0.f : mn_a, ref_b = mn_b == -INFINITY ? 0.f : mn_b;
  const float corr_a = exp2f(m_a - ref_a), corr_b = exp2f(m_b - ref_b);
  m_a = mn_a;
  m_b = mn_b;
  float sum_a = 0.f, sum_b = 0.f;
#pragma unroll
  for (int nt = 0; nt < KT / 8; nt++) {
    s[nt][0] = exp2f(s[nt][0] - ref_a);
    s[nt][1] = exp2f(s[nt][1] - ref_a);
    s[nt][2] = exp2f(s[nt][2] - ref_b);
    s[nt][3] = exp2f(s[nt][3] - ref_b);
    sum_a += s[nt][0] + s[nt][1];
    sum_b += s[nt][2] + s[nt][3];
  }
  l_a = l_a * corr_a + sum_a;
  l_b = l_b * corr_b + sum_b;
#pragma unroll
  for (int dt = 0; dt < D / 8; dt++) {
    o[dt][0] *= corr_a;
    o[dt][1] *= corr_a;
    o[dt][2] *= corr_b;
    o[dt][3] *= corr_b;
  }
}

// Backward: P = exp2(s sl2 - lse2) where vis(j, half), else 0, in place of s; dS = P (dP - D_i) scale in place of dp.
// lse2_* = lse log2(e) of rows a / b (+inf for a row without keys), di_*: D_i of the rows.
template <int KT, class Vis>
__device__ inline void probs_and_ds(float (&s)[KT / 8][4], float (&dp)[KT / 8][4], float sl2, float scale,
                                    float lse2_a, float lse2_b, float di_a, float di_b, int lane, Vis vis) {
#pragma unroll
  for (int nt = 0; nt < KT / 8; nt++)
#pragma unroll
    for (int e = 0; e < 2; e++) {
      const int j = nt * 8 + (lane & 3) * 2 + e;
      const float pa = vis(j, 0) ? exp2f(s[nt][e] * sl2 - lse2_a) : 0.f;
      const float pb = vis(j, 1) ? exp2f(s[nt][2 + e] * sl2 - lse2_b) : 0.f;
      s[nt][e] = pa;
      s[nt][2 + e] = pb;
      dp[nt][e] = pa * (dp[nt][e] - di_a) * scale;
      dp[nt][2 + e] = pb * (dp[nt][2 + e] - di_b) * scale;
    }
}

// The accumulator layout of two adjacent 8-key tiles is the A layout of one 16-key step: x rounded to bf16.
template <int KT>
__device__ inline void a_fragment(uint32_t (&f)[4], const float (&x)[KT / 8][4], int j) {
  f[0] = pack_bf16x2(x[2 * j][0], x[2 * j][1]);
  f[1] = pack_bf16x2(x[2 * j][2], x[2 * j][3]);
  f[2] = pack_bf16x2(x[2 * j + 1][0], x[2 * j + 1][1]);
  f[3] = pack_bf16x2(x[2 * j + 1][2], x[2 * j + 1][3]);
}

// acc (MT m16 tiles: 16 MT rows x D) += x (the same rows x KT keys, rounded to bf16) times the tile's rows of B
// ([KT][LD], through ldmatrix.trans; each B fragment feeds every m tile): O += P V in the forward, dQ += dS K in
// the backward.
template <int D, int KT, int LD, int MT>
__device__ inline void mma_rows_times_keys(float (&acc)[MT][D / 8][4], const float (&x)[MT][KT / 8][4],
                                           const bf16* B, int lane) {
#pragma unroll
  for (int j = 0; j < KT / 16; j++) {
    uint32_t f[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) a_fragment<KT>(f[mt], x[mt], j);
#pragma unroll
    for (int dp = 0; dp < D / 16; dp++) {
      uint32_t r[4];
      ldmatrix_x4_trans(r, B + (j * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LD + dp * 16 + (lane >> 4) * 8);
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        mma_bf16(acc[mt][2 * dp], f[mt], r[0], r[1]);
        mma_bf16(acc[mt][2 * dp + 1], f[mt], r[2], r[3]);
      }
    }
  }
}

// The same for one m16 tile (acc[D / 8][4], x[KT / 8][4]).
template <int D, int KT, int LD>
__device__ inline void mma_rows_times_keys(float (&acc)[D / 8][4], const float (&x)[KT / 8][4], const bf16* B,
                                           int lane) {
  using acc1 = float[1][D / 8][4];
  using x1 = const float[1][KT / 8][4];
  mma_rows_times_keys<D, KT, LD, 1>(*reinterpret_cast<acc1*>(&acc), *reinterpret_cast<x1*>(&x), B, lane);
}

// Backward: s = Q K^T and dp = dO V^T for the warp's 16 rows; Qw / Ow point at the lane's A-fragment addresses of
// the warp's Q and dO rows in shared memory.
template <int D, int KT, int LD>
__device__ inline void mma_scores_dp(float (&s)[KT / 8][4], float (&dp)[KT / 8][4], const bf16* Qw, const bf16* Ow,
                                     const bf16* Kb, const bf16* Vb, int lane) {
#pragma unroll
  for (int nt = 0; nt < KT / 8; nt++)
#pragma unroll
    for (int e = 0; e < 4; e++) s[nt][e] = dp[nt][e] = 0.f;
#pragma unroll
  for (int ks = 0; ks < D / 16; ks++) {
    uint32_t qf[4], of[4];
    ldmatrix_x4(qf, Qw + ks * 16);
    ldmatrix_x4(of, Ow + ks * 16);
#pragma unroll
    for (int np = 0; np < KT / 16; np++) {
      const int off = (np * 16 + (lane >> 4) * 8 + (lane & 7)) * LD + ks * 16 + ((lane >> 3) & 1) * 8;
      uint32_t r[4];
      ldmatrix_x4(r, Kb + off);
      mma_bf16(s[2 * np], qf, r[0], r[1]);
      mma_bf16(s[2 * np + 1], qf, r[2], r[3]);
      ldmatrix_x4(r, Vb + off);
      mma_bf16(dp[2 * np], of, r[0], r[1]);
      mma_bf16(dp[2 * np + 1], of, r[2], r[3]);
    }
  }
}

// P and dS of the thread's two rows into shared memory (bf16), for the dK / dV products (grad_unit). Pw / Sw point
// at row a, column (lane % 4) * 2 of [rows][LP] buffers; row b is 8 rows below.
template <int KT, int LP>
__device__ inline void stage_p_ds(bf16* Pw, bf16* Sw, const float (&p)[KT / 8][4], const float (&ds)[KT / 8][4]) {
#pragma unroll
  for (int nt = 0; nt < KT / 8; nt++) {
    *reinterpret_cast<uint32_t*>(Pw + nt * 8) = pack_bf16x2(p[nt][0], p[nt][1]);
    *reinterpret_cast<uint32_t*>(Pw + 8 * LP + nt * 8) = pack_bf16x2(p[nt][2], p[nt][3]);
    *reinterpret_cast<uint32_t*>(Sw + nt * 8) = pack_bf16x2(ds[nt][0], ds[nt][1]);
    *reinterpret_cast<uint32_t*>(Sw + 8 * LP + nt * 8) = pack_bf16x2(ds[nt][2], ds[nt][3]);
  }
}

// This lane's share of D_i = rowsum(dO * O) for one row: out_row (global) and do_row (shared), features split over
// the quad's 4 lanes in 16-byte pieces; the caller sums the quad (quad_sum).
template <int D>
__device__ inline float di_part(const bf16* out_row, const bf16* do_row, int c4) {
  float di = 0.f;
#pragma unroll
  for (int e = 0; e < D / 32; e++) {
    const int col = (c4 + 4 * e) * 8;
    const uint4 ow = __ldg(reinterpret_cast<const uint4*>(out_row + col));
    const uint4 gw = *reinterpret_cast<const uint4*>(do_row + col);
    di = dot_bf16x2(ow.x, gw.x, di);
    di = dot_bf16x2(ow.y, gw.y, di);
    di = dot_bf16x2(ow.z, gw.z, di);
    di = dot_bf16x2(ow.w, gw.w, di);
  }
  return di;
}

__device__ inline float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// dq (global, bf16, +=) of one row: the thread's columns dt * 8 + (lane % 4) * 2, +1 from acc rows `half`.
template <int D>
__device__ inline void add_dq_row(bf16* dq_row, const float (&acc)[D / 8][4], int half, int c4) {
#pragma unroll
  for (int dt = 0; dt < D / 8; dt++) {
    uint32_t* p = reinterpret_cast<uint32_t*>(dq_row + dt * 8 + c4 * 2);
    *p = add_bf16x2(*p, acc[dt][2 * half], acc[dt][2 * half + 1]);
  }
}

}  // namespace gsa::cuda::detail
