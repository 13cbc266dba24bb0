// bf16 tensor-core backward of plan-driven GSA attention for structured plans (contract: attention.h; row tiles,
// key tiles and masks: attention-structured.cuh). dq (Tq, Hq, D) += (may be null); dk, dv partials += into the f32
// scratch (Tk, Hkv, D) of attn_bwd_args (null when not wanted); attention-bwd.cu adds the scratch afterwards.
//
// The generic bf16 backward (attention-bwd-mma.cu) over the structured row tiles: CTA (row tile, KV head) of
// W = 8 warps (M = 128 stacked rows of consecutive query rows across blocks) walks the tile's key segments once
// (gist units of the tile's blocks per level, then their merged stream ranges). Per key tile (KT = 64 keys at
// D 64, 32 at D 128), per warp: S = Q K^T, dP = dO V^T, P = exp2(S scale log2e - lse log2e) under the row's block
// mask and causal limit, dS = P (dP - D_i) scale, dQ += dS K; then P and dS (bf16) go to shared memory and the CTA
// adds dV = P^T dO, dK = dS^T Q into the scratch (grad_unit, one unit of 16 keys x 64 columns of dV or dK per
// warp: red.global.add.v4.f32). Against the generic kernel a gist key is loaded and its dK / dV flushed once per
// 128 stacked rows instead of once per 64-row tile of every block (17 or 68 rows).
//
// With attn_bwd_args::keymajor the same kernel runs without the dK / dV half (dq and D_i only; dK / dV come from
// the key-major pass, attention-keymajor.cu).
//
// Compiled variants: D {64, 128} x {with dK / dV, dq only}: 4 kernels.
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
template <int D, bool KEYS>
size_t smem_bytes() {
  using C = cfg<D>;
  const size_t M = size_t(16) * kWarps;
  return ((2 * M + 4 * C::KT) * C::LD + (KEYS ? 2 * M * C::LP : 0)) * sizeof(bf16) + stile_bytes<C::KT>();
}

template <int D, bool KEYS>
__global__ void __launch_bounds__(32 * kWarps) bwd_structured_kernel(const attn_bwd_args a) {
  using C = cfg<D>;
  constexpr int KT = C::KT, LD = C::LD, LP = C::LP, DC = D / 8, M = 16 * kWarps, W = kWarps;
  extern __shared__ __align__(16) unsigned char smem[];
  const int nthr = blockDim.x;
  stile<KT>& t = *reinterpret_cast<stile<KT>*>(smem);
  bf16* Qs = reinterpret_cast<bf16*>(smem + stile_bytes<KT>());  // [M][LD] q
  bf16* Os = Qs + M * LD;                                          // [M][LD] dout
  bf16* Ks = Os + M * LD;                                          // [2][KT][LD]
  bf16* Vs = Ks + 2 * KT * LD;                                     // [2][KT][LD]
  bf16* Ps = Vs + 2 * KT * LD;                                     // [M][LP] P (bf16)
  bf16* dSs = Ps + M * LP;                                         // [M][LP] dS (bf16, scale included)

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
  key_cursor cur{0, 0};
  if (warp == 0) t.n[0] = stile_pack(t, cur, a.p, 0, lane);
  __syncthreads();
  stile_masks(t, 0, warp, W, lane);  // visible after the first iteration's barriers

  auto issue = [&](int buf) {  // K/V rows of buffer buf's keys, then one commit group
    for (int e = tid; e < KT * DC; e += nthr) {
      const int j = e / DC, c = e % DC;
      const int32_t pos = t.kpos[buf][j];
      const bool ok = pos != kInvalidKey;
      const int64_t off = ok ? (int64_t(pos) * Hkv + hk) * D + c * 8 : 0;
      cp_async16_zfill(Ks + (buf * KT + j) * LD + c * 8, k + off, ok);
      cp_async16_zfill(Vs + (buf * KT + j) * LD + c * 8, v + off, ok);
    }
    cp_async_commit();
  };
  const bool any_keys = t.n[0] > 0;
  if (any_keys) issue(0);

  // Row statistics of the thread's rows a = g4, b = g4 + 8 of the warp's 16 (as in attention-bwd-mma.cu):
  // lse2 = +inf makes P = 0 for padding rows and rows that saw no key.
  const srow ra = stile_row(t, warp * 16 + g4, G, q_offset);
  const srow rb = stile_row(t, warp * 16 + g4 + 8, G, q_offset);
  float lse_a = INFINITY, lse_b = INFINITY, di_a = 0.f, di_b = 0.f;
  if (any_keys) {
#pragma unroll
    for (int half = 0; half < 2; half++) {
      const srow& x = half ? rb : ra;
      const int sl = warp * 16 + g4 + half * 8;
      float di = 0.f, l2 = INFINITY;
      if (x.lim >= 0) {
        const int64_t row = int64_t(x.r) * Hq + hk * G + x.g;
        di = di_part<D>(out + row * D, Os + sl * LD, c4);
        const float l = __ldg(a.lse + row);
        l2 = l == -INFINITY ? INFINITY : l * kLog2e;
      }
      di = quad_sum(di);
      if (!KEYS && x.lim >= 0 && c4 == 0) a.di[int64_t(x.r) * Hq + hk * G + x.g] = di;
      (half ? di_b : di_a) = di;
      (half ? lse_b : lse_a) = l2;
    }
  }

  float dq[D / 8][4];
#pragma unroll
  for (int dt = 0; dt < D / 8; dt++) dq[dt][0] = dq[dt][1] = dq[dt][2] = dq[dt][3] = 0.f;
  const bf16* Qw = Qs + (warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + (lane >> 4) * 8;  // A fragments
  const bf16* Ow = Os + (warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + (lane >> 4) * 8;

  for (int it = 0;; it++) {
    const int buf = it & 1;
    if (t.n[buf] == 0) break;
    if (warp == 0) t.n[buf ^ 1] = stile_pack(t, cur, a.p, buf ^ 1, lane);
    __syncthreads();  // next tile's kpos visible
    if (t.n[buf ^ 1] > 0) {
      issue(buf ^ 1);
      stile_masks(t, buf ^ 1, warp, W, lane);  // read after the next iteration's barriers
    }
    else
      cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();  // this tile's K/V visible to every warp

    const bf16* Kb = Ks + buf * KT * LD;
    const bf16* Vb = Vs + buf * KT * LD;
    const int32_t* kp = t.kpos[buf];
    const uint64_t vis_a = stile_mask(t, buf, ra.bl), vis_b = stile_mask(t, buf, rb.bl);

    float s[KT / 8][4], dp[KT / 8][4];
    mma_scores_dp<D, KT, LD>(s, dp, Qw, Ow, Kb, Vb, lane);
    if (stile_full(t, buf, vis_a, vis_b, ra, rb))
      probs_and_ds<KT>(s, dp, sl2, scale, lse_a, lse_b, di_a, di_b, lane, [](int, int) { return true; });
    else
      probs_and_ds<KT>(
          s, dp, sl2, scale, lse_a, lse_b, di_a, di_b, lane,
          [&](int j, int half) { return kp[j] <= (half ? rb.lim : ra.lim) && (((half ? vis_b : vis_a) >> j) & 1); });
    if (want_dq) mma_rows_times_keys<D, KT, LD>(dq, dp, Kb, lane);
    if (!KEYS) {
      __syncthreads();  // buffer buf and its kpos / masks are rewritten next iteration
      continue;
    }
    // P and dS (bf16) for the CTA-wide dK / dV products
    stage_p_ds<KT, LP>(Ps + (warp * 16 + g4) * LP + c4 * 2, dSs + (warp * 16 + g4) * LP + c4 * 2, s, dp);
    __syncthreads();  // every warp's P / dS rows visible

    for (int u = warp; u < 2 * C::NU; u += W) {  // dV units, then dK units: 8 units for 8 warps
      const int unit = u % C::NU, kg = unit % (KT / 16), cg = unit / (KT / 16);
      if (u < C::NU) {
        if (a.dv_acc) grad_unit<D, LD, LP>(Ps, Os, M, kg, cg, kp, a.dv_acc, a.fixed, a.overflow, hk, Hkv, lane);
      } else if (a.dk_acc) {
        grad_unit<D, LD, LP>(dSs, Qs, M, kg, cg, kp, a.dk_acc, a.fixed, a.overflow, hk, Hkv, lane);
      }
    }
    __syncthreads();  // buffer buf, its kpos / masks, Ps and dSs are rewritten next iteration
  }
  cp_async_wait<0>();

  if (want_dq && any_keys) {
    bf16* dqp = static_cast<bf16*>(a.dq);
#pragma unroll
    for (int half = 0; half < 2; half++) {
      const srow& x = half ? rb : ra;
      if (x.lim < 0) continue;
      add_dq_row<D>(dqp + (int64_t(x.r) * Hq + hk * G + x.g) * D, dq, half, c4);
    }
  }
}

template <int D, bool KEYS>
cudaError_t launch_dim(const attn_bwd_args& a, cudaStream_t st) {
  const int G = a.d.Hq / a.d.Hkv, RT = 16 * kWarps / G;
  const int64_t tiles = (a.d.Tq + RT - 1) / RT;
  if (RT * G != 16 * kWarps || tiles > INT32_MAX || a.d.Hkv > 65535) return cudaErrorInvalidConfiguration;
  const size_t smem = smem_bytes<D, KEYS>();
  const cudaError_t e =
      cudaFuncSetAttribute(bwd_structured_kernel<D, KEYS>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (e != cudaSuccess) return e;
  bwd_structured_kernel<D, KEYS><<<dim3(unsigned(tiles), unsigned(a.d.Hkv)), 32 * kWarps, smem, st>>>(a);
  return cudaGetLastError();
}

}  // namespace

int launch_attention_backward_structured(const attn_bwd_args& a, int, void* stream) {
  if (a.d.Tq == 0 || a.d.Hkv == 0) return 0;
  const auto st = static_cast<cudaStream_t>(stream);
  const bool rows_only = a.keymajor && a.di;  // dq and D_i; dk / dv by the key-major pass
  switch (a.d.D) {
    case 64: return int(rows_only ? launch_dim<64, false>(a, st) : launch_dim<64, true>(a, st));
    case 128: return int(rows_only ? launch_dim<128, false>(a, st) : launch_dim<128, true>(a, st));
  }
  return int(cudaErrorInvalidValue);
}

}  // namespace gsa::cuda::detail
