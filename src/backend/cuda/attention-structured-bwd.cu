// bf16 tensor-core backward of plan-driven GSA attention for structured plans (contract: attention.h; row tiles,
// key tiles and masks: attention-structured.cuh). dq (Tq, Hq, D) += (may be null); dk, dv partials += into the f32
// scratch (Tk, Hkv, D) of attn_bwd_args (null when not wanted); attention-bwd.cu adds the scratch afterwards.
//
// The generic bf16 backward (attention-bwd-mma.cu) over the structured row tiles: CTA (row tile, KV head) of
// W = 8 warps (M = 128 stacked rows of consecutive query rows across blocks, or 256 with two m16 tiles per warp
// where the plan allows it: half the dK / dV atomics) walks the tile's key segments once (gist units of the tile's
// blocks per level, then their merged stream ranges), with the forward's pipeline (one barrier per key tile, the
// next tile's copies and masks and the one after's slots while a tile is computed). Per key tile (KT = 64 keys at
// D 64, 32 at D 128), per warp: S = Q K^T, dP = dO V^T, P = exp2(S scale log2e - lse log2e) under the row's block
// mask and causal limit, dS = P (dP - D_i) scale, dQ += dS K; then P and dS (bf16) go to shared memory and the CTA
// adds dV = P^T dO, dK = dS^T Q into the scratch (grad_unit, one unit of 16 keys x 64 columns of dV or dK per
// warp: red.global.add.v4.f32). Against the generic kernel a gist key is loaded and its dK / dV flushed once per
// 128 or 256 stacked rows instead of once per 64-row tile of every block (17 or 68 rows).
//
// With attn_bwd_args::keymajor the same kernel runs without the dK / dV half (dq and D_i only; dK / dV come from
// the key-major pass, attention-keymajor.cu).
//
// Compiled variants: D {64, 128} x {with dK / dV, dq only} x {128, 256 rows}: 8 kernels.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "backend/cuda/attention-mma.cuh"
#include "backend/cuda/attention-structured.cuh"

namespace gsa::cuda::detail {
namespace {

constexpr int kWarps = 8;  // 128 stacked rows: half the dK / dV flushes of 64-row tiles

template <int D>
struct cfg {
  static constexpr int KT = D == 128 ? 32 : 64;
  static constexpr int LD = D + 8;
  static constexpr int LP = KT + 8;
  static constexpr int NU = (KT / 16) * (D / 64);
};

// KEYS: dk / dv partials into the scratch (atomics per key tile); else dq only and D_i into a.di for the
// key-major pass (attention-keymajor.cu).

template <int D, bool KEYS, int MT>
size_t smem_bytes() {
  using C = cfg<D>;
  const size_t M = size_t(16) * MT * kWarps;
  return ((2 * M + 4 * C::KT) * C::LD + (KEYS ? 2 * M * C::LP : 0)) * sizeof(bf16) + stile_bytes<C::KT>();
}

// MT m16 row tiles per warp (M = 16 MT W stacked rows per CTA): MT = 2 halves the dK / dV atomics per key (one
// flush per 256 rows) and lets each K / V fragment feed two mma chains.
template <int D, bool KEYS, int MT>
__global__ void __launch_bounds__(32 * kWarps) bwd_structured_kernel(const attn_bwd_args a) {
  using C = cfg<D>;
  constexpr int KT = C::KT, LD = C::LD, LP = C::LP, DC = D / 8, M = 16 * MT * kWarps, W = kWarps;
  extern __shared__ __align__(16) unsigned char smem[];
  const int nthr = blockDim.x;
  stile<KT>& t = *reinterpret_cast<stile<KT>*>(smem);
  bf16* Qs = reinterpret_cast<bf16*>(smem + stile_bytes<KT>());  // [M][LD] q
  bf16* Os = Qs + M * LD;                                              // [M][LD] dout
  bf16* Ks = Os + M * LD;                                              // [2][KT][LD]
  bf16* Vs = Ks + 2 * KT * LD;                                         // [2][KT][LD]
  bf16* Ps = Vs + 2 * KT * LD;                                         // [M][LP] P (bf16)
  bf16* dSs = Ps + M * LP;                                             // [M][LP] dS (bf16, scale included)

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int Hq = a.d.Hq, Hkv = a.d.Hkv, q_offset = a.d.q_offset, G = Hq / Hkv, hk = blockIdx.y;
  // The last row tiles (the most gists) first, as the forward.
  const int RT = M / G, r0 = (gridDim.x - 1 - blockIdx.x) * RT, r1 = min(a.d.Tq, r0 + RT);
  const bf16* q = static_cast<const bf16*>(a.q);
  const bf16* k = static_cast<const bf16*>(a.k);
  const bf16* v = static_cast<const bf16*>(a.v);
  const bf16* dout = static_cast<const bf16*>(a.dout);
  const bf16* out = static_cast<const bf16*>(a.out);
  const float scale = rsqrtf(float(D)), sl2 = scale * kLog2e;
  const bool want_dq = a.dq != nullptr;
  const int g4 = lane >> 2, c4 = lane & 3;

  if (tid == 0) stile_setup(t, a.p, q_offset, r0, r1);
  for (int e = tid; e < M * DC; e += nthr) {
    const int s = e / DC, c = e % DC, r = r0 + s / G, g = s % G;
    uint4 qx = make_uint4(0, 0, 0, 0), ox = qx;
    if (r < r1) {
      const int64_t off = (int64_t(r) * Hq + hk * G + g) * D + c * 8;
      qx = __ldg(reinterpret_cast<const uint4*>(q + off));
      ox = __ldg(reinterpret_cast<const uint4*>(dout + off));
    }
    *reinterpret_cast<uint4*>(Qs + s * LD + c * 8) = qx;
    *reinterpret_cast<uint4*>(Os + s * LD + c * 8) = ox;
  }
  __syncthreads();  // the tile's segments, Qs and Os visible
  const int total = t.sofs[t.nseg], ntiles = (total + KT - 1) / KT;
  stile_pack_first(t, a.p, ntiles, tid);
  __syncthreads();

  const bool any_keys = ntiles > 0;
  if (any_keys) {
    stile_issue_kv<D, KT, LD>(t, 0, 0, Ks, Vs, k, v, Hkv, hk, tid, nthr);
    stile_masks(t, 0, warp, W, lane);
  }

  // Row statistics of the thread's rows: per m tile, a = g4 and b = g4 + 8 of its 16 (as in
  // attention-bwd-mma.cu): lse2 = +inf makes P = 0 for padding rows and rows that saw no key.
  srow x[MT][2];
  float lse2[MT][2], di[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int sl = warp * 16 * MT + mt * 16 + g4 + h * 8;
      x[mt][h] = stile_row(t, sl, G, q_offset);
      float d = 0.f, l2 = INFINITY;
      if (any_keys && x[mt][h].lim >= 0) {
        const int64_t row = int64_t(x[mt][h].r) * Hq + hk * G + x[mt][h].g;
        d = di_part<D>(out + row * D, Os + sl * LD, c4);
        const float l = __ldg(a.lse + row);
        l2 = l == -INFINITY ? INFINITY : l * kLog2e;
      }
      d = quad_sum(d);
      if (!KEYS && any_keys && x[mt][h].lim >= 0 && c4 == 0)
        a.di[int64_t(x[mt][h].r) * Hq + hk * G + x[mt][h].g] = d;
      di[mt][h] = d;
      lse2[mt][h] = l2;
    }

  float dq[MT][D / 8][4];
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) dq[mt][dt][0] = dq[mt][dt][1] = dq[mt][dt][2] = dq[mt][dt][3] = 0.f;
  const int wrow = warp * 16 * MT + (lane & 7) + ((lane >> 3) & 1) * 8;  // the lane's A-fragment row (m tile 0)
  const bf16* Qw = Qs + wrow * LD + (lane >> 4) * 8;
  const bf16* Ow = Os + wrow * LD + (lane >> 4) * 8;
  cp_async_wait<0>();

  // One barrier per key tile plus one before the dK / dV products (the forward's pipeline: tile it + 1's copies
  // and masks and tile it + 2's slots while tile it is computed).
  for (int it = 0; it < ntiles; it++) {
    __syncthreads();  // tile it's K/V and masks, tile it + 1's slots visible; tile it - 1 done by every warp
    const int vb = it & 1, kb = it % kSRing;
    bool packs;
    const pslot nxt = stile_next<D, KT, LD>(t, a.p, it, ntiles, packs, Ks, Vs, k, v, Hkv, hk, tid, nthr, warp, W, lane);

    const bf16* Kb = Ks + vb * KT * LD;
    const bf16* Vb = Vs + vb * KT * LD;
    const int32_t* kp = t.kpos[kb];
    // S = Q K^T and dP = dO V^T, each K / V fragment used by every m tile
    float s[MT][KT / 8][4], dp[MT][KT / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int nt = 0; nt < KT / 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) s[mt][nt][e] = dp[mt][nt][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++) {
      uint32_t qf[MT][4], of[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        ldmatrix_x4(qf[mt], Qw + mt * 16 * LD + ks * 16);
        ldmatrix_x4(of[mt], Ow + mt * 16 * LD + ks * 16);
      }
#pragma unroll
      for (int np = 0; np < KT / 16; np++) {
        const int off = (np * 16 + (lane >> 4) * 8 + (lane & 7)) * LD + ks * 16 + ((lane >> 3) & 1) * 8;
        uint32_t r[4];
        ldmatrix_x4(r, Kb + off);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          mma_bf16(s[mt][2 * np], qf[mt], r[0], r[1]);
          mma_bf16(s[mt][2 * np + 1], qf[mt], r[2], r[3]);
        }
        ldmatrix_x4(r, Vb + off);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          mma_bf16(dp[mt][2 * np], of[mt], r[0], r[1]);
          mma_bf16(dp[mt][2 * np + 1], of[mt], r[2], r[3]);
        }
      }
    }
    const int32_t kmax = stile_kmax(t, kb, it);
    uint64_t vis[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int h = 0; h < 2; h++) vis[mt][h] = stile_mask(t, kb, x[mt][h].bl);
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
      if (stile_full<KT>(kmax, vis[mt][0], vis[mt][1], x[mt][0], x[mt][1]))
        probs_and_ds<KT>(s[mt], dp[mt], sl2, scale, lse2[mt][0], lse2[mt][1], di[mt][0], di[mt][1], lane,
                         [](int, int) { return true; });
      else
        probs_and_ds<KT>(s[mt], dp[mt], sl2, scale, lse2[mt][0], lse2[mt][1], di[mt][0], di[mt][1], lane,
                         [&](int j, int h) { return kp[j] <= x[mt][h].lim && ((vis[mt][h] >> j) & 1); });
    }
    if (want_dq) mma_rows_times_keys<D, KT, LD, MT>(dq, dp, Kb, lane);  // dQ += dS K
    if (KEYS) {
      // P and dS (bf16) for the CTA-wide dK / dV products
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        const int row = warp * 16 * MT + mt * 16 + g4;
        stage_p_ds<KT, LP>(Ps + row * LP + c4 * 2, dSs + row * LP + c4 * 2, s[mt], dp[mt]);
      }
      __syncthreads();  // every warp's P / dS rows visible (rewritten after the next top barrier)
      for (int u = warp; u < 2 * C::NU; u += W) {  // dV units, then dK units: 8 units for 8 warps
        const int unit = u % C::NU, kg = unit % (KT / 16), cg = unit / (KT / 16);
        if (u < C::NU) {
          if (a.dv_acc) grad_unit<D, LD, LP>(Ps, Os, M, kg, cg, kp, a.dv_acc, a.fixed, a.overflow, hk, Hkv, lane);
        } else if (a.dk_acc) {
          grad_unit<D, LD, LP>(dSs, Qs, M, kg, cg, kp, a.dk_acc, a.fixed, a.overflow, hk, Hkv, lane);
        }
      }
    }
    if (packs) stile_pack_store(t, (it + 2) % kSRing, nxt, tid);
    cp_async_wait<0>();  // tile it + 1's copies of this thread
  }

  if (want_dq && any_keys) {
    bf16* dqp = static_cast<bf16*>(a.dq);
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        if (x[mt][h].lim < 0) continue;
        add_dq_row<D>(dqp + (int64_t(x[mt][h].r) * Hq + hk * G + x[mt][h].g) * D, dq[mt], h, c4);
      }
  }
}

template <int D, bool KEYS, int MT>
cudaError_t launch_dim(const attn_bwd_args& a, cudaStream_t st) {
  const int G = a.d.Hq / a.d.Hkv, RT = 16 * MT * kWarps / G;
  const int64_t tiles = (a.d.Tq + RT - 1) / RT;
  if (RT * G != 16 * MT * kWarps || tiles > INT32_MAX || a.d.Hkv > 65535) return cudaErrorInvalidConfiguration;
  const size_t smem = smem_bytes<D, KEYS, MT>();
  const cudaError_t e = cudaFuncSetAttribute(bwd_structured_kernel<D, KEYS, MT>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (e != cudaSuccess) return e;
  bwd_structured_kernel<D, KEYS, MT><<<dim3(unsigned(tiles), unsigned(a.d.Hkv)), 32 * kWarps, smem, st>>>(a);
  return cudaGetLastError();
}

template <int D, bool KEYS>
cudaError_t launch_rows(const attn_bwd_args& a, int sm_count, cudaStream_t st) {
  // 256-row tiles when the plan allows them (upload_plan's wide check) and they still fill every SM once;
  // a.rows forces one.
  const int G = a.d.Hq / a.d.Hkv;
  const int64_t tiles256 = (int64_t(a.d.Tq) * G + 255) / 256;
  const bool fills = tiles256 * a.d.Hkv >= int64_t(std::max(1, sm_count));
  const bool wide = a.p.wide && (a.rows == 256 || (a.rows == 0 && fills));
  return wide ? launch_dim<D, KEYS, 2>(a, st) : launch_dim<D, KEYS, 1>(a, st);
}

}  // namespace

int launch_attention_backward_structured(const attn_bwd_args& a, int sm_count, void* stream) {
  if (a.d.Tq == 0 || a.d.Hkv == 0) return 0;
  const auto st = static_cast<cudaStream_t>(stream);
  const bool rows_only = a.keymajor && a.di;  // dq and D_i; dk / dv by the key-major pass
  switch (a.d.D) {
    case 64: return int(rows_only ? launch_rows<64, false>(a, sm_count, st) : launch_rows<64, true>(a, sm_count, st));
    case 128:
      return int(rows_only ? launch_rows<128, false>(a, sm_count, st) : launch_rows<128, true>(a, sm_count, st));
  }
  return int(cudaErrorInvalidValue);
}

}  // namespace gsa::cuda::detail
