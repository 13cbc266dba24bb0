// Key-major dK / dV of plan-driven GSA attention for structured plans (bf16), the second half of the structured
// backward when attn_bwd_args::keymajor is set (contract: attention.h; plans: attention-kernels.h).
//
// The row pass (attention-structured-bwd.cu without its dK / dV half) adds dq and writes D_i per row. This pass
// turns the problem around, as FlashAttention-2's backward does: CTA (key tile, KV head) owns kKTile = 64 keys of
// the plan's inverse (attn_plan_view::ktiles: 64 consecutive stream positions, or 64 consecutive gist indices of
// one level) and walks the rows of the blocks that see them (the tile's runs, or a piece of them), in row windows of MQ stacked rows
// (consecutive query rows x the G heads of the KV head, aligned to MQ / G rows). Each of the 4 warps owns 16 keys
// and, per window, computes with the keys as the rows of the products:
//   S^T = K Q^T and dP^T = V dO^T (16 keys x MQ rows), P^T = exp2(S^T scale log2e - lse log2e) under the rows'
//   block masks and causal limits, dS^T = P^T (dP^T - D_i) scale, then dV += P^T dO and dK += dS^T Q
// with P^T and dS^T going from the accumulators straight into the A operands (no shared-memory staging, no
// barrier between warps). dK and dV stay in registers for the whole walk and are added once at the end: one add
// per key and feature instead of one per (row tile, key tile) pair. A key's rows are the rows whose block lists
// it (stream range for a stream tile, unit range of the level for a gist tile) and whose causal limit reaches it:
// the rule of the row pass, so the two passes see the same (row, key) pairs.
//
// Adds go through the backward's scratch (f32 atomics, or fixed point in deterministic mode): a tile seen by more
// than ~1024 rows is cut into pieces of rows, one CTA each (attention.cpp, inverse_of), and a position can be both a
// stream key (of a block's range) and a gist key (of another block's unit range). The row unfold's overlay, when
// present, adds into the same scratch afterwards.
//
// Compiled variants: D {64, 128}: 2 kernels.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "backend/cuda/attention-keymajor.cuh"
#include "backend/cuda/attention-mma.cuh"

namespace gsa::cuda::detail {
namespace {

constexpr int kW = kKTile / 16;  // warps: 16 keys each

template <int D>
constexpr int kLD = D + 8;

template <int D, int MQ>
struct kshared {
  static constexpr int LD = kLD<D>;
  bf16 K[kKTile][LD], V[kKTile][LD];
  bf16 Q[2][MQ][LD], O[2][MQ][LD];
  krow row[2][MQ];
  int32_t kpos[kKTile], kunit[kKTile];
  int32_t bfirst[2], nbs[2];
  int32_t kmin;
};

template <int D, int MQ>
__global__ void __launch_bounds__(32 * kW) bwd_keymajor_kernel(const attn_bwd_args a) {
  using S = kshared<D, MQ>;
  constexpr int LD = S::LD, DC = D / 8, KT = kKTile;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  S& sh = *reinterpret_cast<S*>(smem_raw);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nthr = 32 * kW;
  const int Hq = a.d.Hq, Hkv = a.d.Hkv, q_offset = a.d.q_offset, G = Hq / Hkv, hk = blockIdx.y, RQ = MQ / G;
  const ktile tile = a.p.ktiles[blockIdx.x];
  const int level = tile.level;
  const bf16* q = static_cast<const bf16*>(a.q);
  const bf16* k = static_cast<const bf16*>(a.k);
  const bf16* v = static_cast<const bf16*>(a.v);
  const bf16* dout = static_cast<const bf16*>(a.dout);
  const float scale = rsqrtf(float(D)), sl2 = scale * kLog2e;
  const int g4 = lane >> 2, c4 = lane & 3;

  // The tile's keys: positions and gist units (kInvalidKey past the end).
  ktile_keys(a.p, tile, a.d.Tk, tid, warp, lane, sh.kpos, sh.kunit, sh.kmin);
  for (int e = tid; e < KT * DC; e += nthr) {
    const int j = e / DC, c = e % DC;
    const int32_t pos = sh.kpos[j];
    const bool ok = pos != kInvalidKey;
    const int64_t off = ok ? (int64_t(pos) * Hkv + hk) * D + c * 8 : 0;
    cp_async16_zfill(&sh.K[j][c * 8], k + off, ok);
    cp_async16_zfill(&sh.V[j][c * 8], v + off, ok);
  }
  cp_async_commit();
  __syncthreads();  // kmin visible
  if (sh.kmin == kInvalidKey) {
    cp_async_wait<0>();
    return;
  }
  // Rows before the first key's position see none of the tile.
  const int row_min = max(0, sh.kmin - q_offset);
  const int ka = warp * 16 + g4, kb = ka + 8;  // the thread's keys (accumulator rows a and b)
  const int32_t pos_a = sh.kpos[ka], pos_b = sh.kpos[kb], unit_a = sh.kunit[ka], unit_b = sh.kunit[kb];

  // Stage window c into buffer buf: Q / dO rows by cp.async (one commit group), row statistics and block
  // indices by plain loads. Uniform control flow.
  auto issue = [&](int buf, const kcursor& c) {
    for (int e = tid; e < MQ * DC; e += nthr) {
      const int s = e / DC, ch = e % DC, r = c.w0 + s / G, g = s % G;
      const bool ok = r >= c.lo && r < c.hi;
      const int64_t off = ok ? (int64_t(r) * Hq + hk * G + g) * D + ch * 8 : 0;
      cp_async16_zfill(&sh.Q[buf][s][ch * 8], q + off, ok);
      cp_async16_zfill(&sh.O[buf][s][ch * 8], dout + off, ok);
    }
    cp_async_commit();
    if (tid < MQ) sh.row[buf][tid] = window_row(a, c, tid, G, q_offset);
    if (tid == 0) window_blocks(a.p, c, RQ, sh.bfirst[buf], sh.nbs[buf]);
  };

  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int dt = 0; dt < D / 8; dt++)
#pragma unroll
    for (int e = 0; e < 4; e++) dk[dt][e] = dv[dt][e] = 0.f;

  // A-fragment addresses of the warp's 16 keys (the rows of S^T and dP^T).
  const int frag_row = warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, frag_col = (lane >> 4) * 8;
  const bf16* Kw = &sh.K[frag_row][frag_col];
  const bf16* Vw = &sh.V[frag_row][frag_col];

  kwalk<false>(tile, a.p, row_min, RQ, issue, [&](int buf) {
    // The thread's two keys against each block of the window: bit i of vis_a / vis_b = block bfirst + i lists it.
    const uint32_t vis_a = key_blocks(a.p, sh.bfirst[buf], sh.nbs[buf], level, pos_a, unit_a);
    const uint32_t vis_b = key_blocks(a.p, sh.bfirst[buf], sh.nbs[buf], level, pos_b, unit_b);
    if (__any_sync(0xffffffffu, (vis_a | vis_b) != 0)) {
      const bf16* Qb = &sh.Q[buf][0][0];
      const bf16* Ob = &sh.O[buf][0][0];
      float s[MQ / 8][4], dp[MQ / 8][4];
      mma_scores_dp<D, MQ, LD>(s, dp, Kw, Vw, Qb, Ob, lane);
      key_probs_ds<MQ>(s, dp, sh.row[buf], vis_a, vis_b, pos_a, pos_b, sl2, scale, c4);
      mma_rows_times_keys<D, MQ, LD>(dv, s, Ob, lane);
      mma_rows_times_keys<D, MQ, LD>(dk, dp, Qb, lane);
    }
  });

  flush_key_rows<D>(a, a.dv_acc, dv, pos_a, pos_b, hk, lane);
  flush_key_rows<D>(a, a.dk_acc, dk, pos_a, pos_b, hk, lane);
}

template <int D, int MQ>
cudaError_t launch_mq(const attn_bwd_args& a, cudaStream_t st) {
  const int G = a.d.Hq / a.d.Hkv;
  if (MQ % G != 0 || a.d.Hkv > 65535) return cudaErrorInvalidConfiguration;
  const size_t smem = sizeof(kshared<D, MQ>);
  const cudaError_t e =
      cudaFuncSetAttribute(bwd_keymajor_kernel<D, MQ>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (e != cudaSuccess) return e;
  bwd_keymajor_kernel<D, MQ><<<dim3(unsigned(a.p.n_ktiles), unsigned(a.d.Hkv)), 32 * kW, smem, st>>>(a);
  return cudaGetLastError();
}

// 64 stacked rows per window. At D 128 this spills 128 bytes at 255 registers; 32-row windows spill less but were
// slower on the H200 (unpieced version, c64g4 32k 16 / 16 heads: 12.8 against 11.6 ms).
template <int D>
cudaError_t launch_dim(const attn_bwd_args& a, cudaStream_t st) {
  return launch_mq<D, 64>(a, st);
}

}  // namespace

int launch_attention_backward_keymajor(const attn_bwd_args& a, int sm_count, void* stream) {
  if (a.d.Tq == 0 || a.d.Hkv == 0) return 0;
  int e = launch_attention_backward_structured(a, sm_count, stream);  // dq and D_i
  if (e != 0 || a.p.n_ktiles == 0 || (!a.dk_acc && !a.dv_acc)) return e;
  if (a.wgmma) return launch_keymajor_dkdv_wgmma(a, stream);
  const auto st = static_cast<cudaStream_t>(stream);
  switch (a.d.D) {
    case 64: return int(launch_dim<64>(a, st));
    case 128: return int(launch_dim<128>(a, st));
  }
  return int(cudaErrorInvalidValue);
}

}  // namespace gsa::cuda::detail
