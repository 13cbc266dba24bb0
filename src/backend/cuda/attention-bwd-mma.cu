// bf16 tensor-core backward of plan-driven GSA attention (contract: attention.h; work decomposition and the key-tile
// builder: attention-kernels.cuh). dq (Tq, Hq, D) += (bf16, may be null); dk, dv partials += into the f32 scratch
// (Tk, Hkv, D) of attn_bwd_args (null when not wanted); attention-bwd.cu adds the scratch into dk / dv afterwards.
//
// FlashAttention-2 style, query-major (the forward's decomposition): CTA (block, KV head, row tile) of W = 1..4
// warps, each warp owning 16 stacked rows (M = 16 W). Q and dO of the row tile sit in shared memory (bf16, read as
// ldmatrix fragments), lse and D_i = rowsum(dO * O) of the thread's two rows in registers (computed in the CTA).
// The list's key tiles (KT keys: 64 at D 64, 32 at D 128 so that two CTAs fit an SM) are built by warp 0 with the
// forward's builder and double-buffered with cp.async. Per key tile, per warp (all on mma.sync m16n8k16, bf16 in,
// f32 accumulate):
//   S = Q K^T, dP = dO V^T                        (K, V through ldmatrix, like K in the forward)
//   P = exp2(S scale log2e - lse log2e), masked (causal, padding slot, padding row, empty row) -> 0
//   dS = P (dP - D_i) scale
//   dQ += dS K                                    (dS from the accumulators as A fragments, K via ldmatrix.trans)
// then P and dS go to shared memory (bf16) and, after one barrier, the CTA computes the tile's
//   dV = P^T dO, dK = dS^T Q                      (A = P^T / dS^T via ldmatrix.trans, B = dO / Q via .trans)
// over all M rows in units of 16 keys x 64 columns (one unit per warp at W = 4) and flushes each unit into the
// scratch with red.global.add.v4.f32 (lane pairs exchange halves so that every lane owns 4 consecutive columns).
// Atomics per tile: KT * D / 4 per gradient, independent of W (the f32 kernel adds per warp of 8 rows).
// The index maps of every fragment (ldmatrix / .trans / accumulator-to-A / the flush swap) were checked by a CPU
// emulation of the PTX fragment layouts (not on a GPU).
// P and dS are rounded to bf16 for the mma operands, as in FlashAttention.
//
// Compiled variants: D {64, 128}: 2 kernels.
#include <cuda_runtime.h>

#include <cmath>

#include "backend/cuda/attention-mma.cuh"

namespace gsa::cuda::detail {
namespace {

constexpr int kMaxWarps = 4;

template <int D>
struct bwd_cfg {
  static constexpr int KT = D == 128 ? 32 : 64;  // keys per tile
  static constexpr int LD = D + 8;   // bf16 per Q / dO / K / V smem row (16-byte rows, conflict-free ldmatrix)
  static constexpr int LP = KT + 8;  // bf16 per P / dS smem row
  static constexpr int NU = (KT / 16) * (D / 64);  // dK / dV units of 16 keys x 64 columns per tile
};

template <int D>
size_t bwd_mma_smem_bytes(int warps) {
  using C = bwd_cfg<D>;
  const size_t M = size_t(16) * warps;
  return ((2 * M + 4 * C::KT) * C::LD + 2 * M * C::LP) * sizeof(bf16) + (2 * C::KT + 4) * sizeof(int32_t);
}

template <int D>
__global__ void __launch_bounds__(32 * kMaxWarps) bwd_mma_kernel(const attn_bwd_args a) {
  using C = bwd_cfg<D>;
  constexpr int KT = C::KT, LD = C::LD, LP = C::LP, DC = D / 8;
  extern __shared__ __align__(16) unsigned char smem[];
  const int W = blockDim.x / 32, M = 16 * W, nthr = blockDim.x;
  bf16* Qs = reinterpret_cast<bf16*>(smem);  // [M][LD] q
  bf16* Os = Qs + M * LD;                    // [M][LD] dout
  bf16* Ks = Os + M * LD;                    // [2][KT][LD]
  bf16* Vs = Ks + 2 * KT * LD;               // [2][KT][LD]
  bf16* Ps = Vs + 2 * KT * LD;               // [M][LP] P (bf16)
  bf16* dSs = Ps + M * LP;                   // [M][LP] dS (bf16, scale included)
  int32_t* kpos = reinterpret_cast<int32_t*>(dSs + M * LP);  // [2][KT]
  int32_t* s_n = kpos + 2 * KT;                               // [2] keys in each buffer

  const work_item w = get_work(a.p, a.d);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int Hq = a.d.Hq, Hkv = a.d.Hkv, q_offset = a.d.q_offset;
  const bf16* q = static_cast<const bf16*>(a.q);
  const bf16* k = static_cast<const bf16*>(a.k);
  const bf16* v = static_cast<const bf16*>(a.v);
  const bf16* dout = static_cast<const bf16*>(a.dout);
  const bf16* out = static_cast<const bf16*>(a.out);
  const float scale = rsqrtf(float(D)), sl2 = scale * kLog2e;
  const int tiles = (w.R * w.G + M - 1) / M;
  const bool want_dq = a.dq != nullptr;
  const int g4 = lane >> 2, c4 = lane & 3;

  for (int tile = blockIdx.z; tile < tiles; tile += gridDim.z) {
    const int s0 = tile * M;
    for (int e = tid; e < M * DC; e += nthr) {
      const int s = e / DC, c = e % DC, sg = s0 + s, r = sg / w.G, g = sg % w.G;
      uint4 qx = make_uint4(0, 0, 0, 0), ox = qx;
      if (r < w.R) {
        const int64_t off = ((int64_t(w.row0) + r) * Hq + w.hk * w.G + g) * D + c * 8;
        qx = __ldg(reinterpret_cast<const uint4*>(q + off));
        ox = __ldg(reinterpret_cast<const uint4*>(dout + off));
      }
      *reinterpret_cast<uint4*>(Qs + s * LD + c * 8) = qx;
      *reinterpret_cast<uint4*>(Os + s * LD + c * 8) = ox;
    }
    const int32_t key_end = tile_key_end(w, q_offset, s0, M);
    key_cursor cur{w.seg_begin, 0};
    if (warp == 0) s_n[0] = build_key_tile<KT>(cur, w.seg_end, a.p, key_end, kpos, lane);
    __syncthreads();  // Qs, Os, kpos[0], s_n[0] visible

    auto issue = [&](int buf) {  // K/V rows of buffer buf's keys, then one commit group
      for (int e = tid; e < KT * DC; e += nthr) {
        const int j = e / DC, c = e % DC;
        const int32_t pos = kpos[buf * KT + j];
        const bool ok = pos != kInvalidKey;
        const int64_t off = ok ? (int64_t(pos) * Hkv + w.hk) * D + c * 8 : 0;
        cp_async16_zfill(Ks + (buf * KT + j) * LD + c * 8, k + off, ok);
        cp_async16_zfill(Vs + (buf * KT + j) * LD + c * 8, v + off, ok);
      }
      cp_async_commit();
    };
    const bool any_keys = s_n[0] > 0;
    if (any_keys) issue(0);

    // Row statistics of this thread's rows a = g4, b = g4 + 8 of the warp's 16 (the C-fragment rows), while the
    // first K/V tile is in flight: the 4 lanes of a quad split D_i's features (16-byte loads) and sum by shuffles.
    // lse2 = +inf makes P = 0 for padding rows and rows that saw no key.
    const int sa = s0 + warp * 16 + g4, sb = sa + 8;
    const int32_t lim_a = row_limit(w, q_offset, sa), lim_b = row_limit(w, q_offset, sb);
    float lse_a = INFINITY, lse_b = INFINITY, di_a = 0.f, di_b = 0.f;
    if (any_keys) {
#pragma unroll
      for (int half = 0; half < 2; half++) {
        const int sg = half ? sb : sa, r = sg / w.G, g = sg % w.G;
        float di = 0.f, l2 = INFINITY;
        if (r < w.R) {
          const int64_t row = (int64_t(w.row0) + r) * Hq + w.hk * w.G + g;
          di = di_part<D>(out + row * D, Os + (sg - s0) * LD, c4);
          const float l = __ldg(a.lse + row);
          l2 = l == -INFINITY ? INFINITY : l * kLog2e;
        }
        (half ? di_b : di_a) = quad_sum(di);
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
      if (s_n[buf] == 0) break;
      if (warp == 0) s_n[buf ^ 1] = build_key_tile<KT>(cur, w.seg_end, a.p, key_end, kpos + (buf ^ 1) * KT, lane);
      __syncthreads();  // next tile's kpos visible
      if (s_n[buf ^ 1] > 0)
        issue(buf ^ 1);
      else
        cp_async_commit();  // keep one group per iteration so that wait<1> below means "this tile"
      cp_async_wait<1>();
      __syncthreads();  // this tile's K/V visible to every warp

      const bf16* Kb = Ks + buf * KT * LD;
      const bf16* Vb = Vs + buf * KT * LD;
      const int32_t* kp = kpos + buf * KT;

      // S = Q K^T and dP = dO V^T (16 rows x KT keys per warp), then P and dS in their place.
      float s[KT / 8][4], dp[KT / 8][4];
      mma_scores_dp<D, KT, LD>(s, dp, Qw, Ow, Kb, Vb, lane);
      probs_and_ds<KT>(s, dp, sl2, scale, lse_a, lse_b, di_a, di_b, lane,
                       [&](int j, int half) { return kp[j] <= (half ? lim_b : lim_a); });
      if (want_dq) mma_rows_times_keys<D, KT, LD>(dq, dp, Kb, lane);
      // P and dS (bf16) for the CTA-wide dK / dV products
      stage_p_ds<KT, LP>(Ps + (warp * 16 + g4) * LP + c4 * 2, dSs + (warp * 16 + g4) * LP + c4 * 2, s, dp);
      __syncthreads();  // every warp's P / dS rows visible

      for (int u = warp; u < C::NU; u += W) {
        const int kg = u % (KT / 16), cg = u / (KT / 16);
        if (a.dv_acc) grad_unit<D, LD, LP>(Ps, Os, M, kg, cg, kp, a.dv_acc, a.fixed, a.overflow, w.hk, Hkv, lane);
        if (a.dk_acc) grad_unit<D, LD, LP>(dSs, Qs, M, kg, cg, kp, a.dk_acc, a.fixed, a.overflow, w.hk, Hkv, lane);
      }
      __syncthreads();  // buffer buf, kpos[buf], Ps and dSs are rewritten next iteration
    }
    cp_async_wait<0>();

    if (want_dq && any_keys) {
      bf16* dqp = static_cast<bf16*>(a.dq);
#pragma unroll
      for (int half = 0; half < 2; half++) {
        const int sg = half ? sb : sa;
        const int r = sg / w.G, g = sg % w.G;
        if (r >= w.R) continue;
        add_dq_row<D>(dqp + ((int64_t(w.row0) + r) * Hq + w.hk * w.G + g) * D, dq, half, c4);
      }
    }
    __syncthreads();  // Qs, Os, kpos[0] and s_n[0] are rewritten by the next row tile
  }
}

template <int D>
cudaError_t launch_dim(const attn_bwd_args& a, int sm_count, cudaStream_t st) {
  const int warps = warps_for(a.d, a.p, 16, kMaxWarps);
  const size_t smem = bwd_mma_smem_bytes<D>(warps);
  const cudaError_t e = cudaFuncSetAttribute(bwd_mma_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (e != cudaSuccess) return e;
  bwd_mma_kernel<D><<<attention_grid(a.d, a.p, 16 * warps, sm_count), 32 * warps, smem, st>>>(a);
  return cudaGetLastError();
}

}  // namespace

int launch_attention_backward_mma(const attn_bwd_args& a, int sm_count, void* stream) {
  const auto st = static_cast<cudaStream_t>(stream);
  switch (a.d.D) {
    case 64: return int(launch_dim<64>(a, sm_count, st));
    case 128: return int(launch_dim<128>(a, sm_count, st));
  }
  return int(cudaErrorInvalidValue);
}

}  // namespace gsa::cuda::detail
