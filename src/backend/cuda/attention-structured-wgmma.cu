// Forward of plan-driven GSA attention for structured plans on Hopper's warpgroup MMA (wgmma; building blocks and
// layouts: wgmma.cuh). Same contract, row tiles, key tiles, masks and pipeline as the mma.sync kernel
// (attention-structured.cu): overwrites out (Tq, Hq, D) and lse (Tq, Hq, natural log); empty visibility -> 0 / -inf.
//
// Why: the mma.sync kernel runs at 255 registers with the tensor pipe ~31% busy (docs/cuda.md, "What the hardware
// counters say"): every K / V fragment passes through registers (ldmatrix) before each mma. Here the tensor core
// reads Q, K and V straight from shared memory and the accumulators live in the warpgroup's registers.
//
// A CTA is NWG warpgroups of 128 threads, each owning 64 stacked query rows (M = 64 NWG rows). Per key tile of
// KT = 64 keys (gathered by cp.async into 128-byte-swizzled panels of 64 columns, double-buffered):
//   S = Q K^T: D / 16 wgmma m64n64k16, Q (K-major, the CTA's panels) and K (K-major) from shared memory;
//   the mask and the log2-domain online softmax on S in registers (S's accumulator layout is mma.sync's per warp,
//   so the steps of attention-mma.cuh apply unchanged);
//   O += P V: P rounded to bf16 straight from S's registers as wgmma's A fragments, V (MN-major) from shared
//   memory, one m64n64k16 per 16 keys and 64-column panel of O.
// One barrier per key tile as in the mma.sync kernel; the generic-proxy writes (st.shared, cp.async) are made
// visible to wgmma's async proxy with fence.proxy.async before that barrier. Compiled variants: D {64, 128}.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "backend/cuda/attention-mma.cuh"
#include "backend/cuda/attention-structured.cuh"
#include "backend/cuda/wgmma.cuh"

namespace gsa::cuda::detail {
namespace {

constexpr int kNWG = 2;  // warpgroups per CTA: 128 stacked rows, as the mma.sync kernel's 4-warp tiles
constexpr int kKT = 64;
constexpr int kBufs = 3;  // K / V buffers: tile i computed, i + 1 resident (its S in flight), i + 2 landing
constexpr int kRing = 4;  // key-tile descriptors: tiles i .. i + 2 in use, tile i + 3 being packed
using wtile = stile<kKT, kRing>;

__host__ __device__ constexpr size_t round1024(size_t x) { return (x + 1023) & ~size_t(1023); }

// Dynamic shared memory: the tile descriptors, then Q [D / 64][M][128 B], K and V [kBufs][D / 64][KT][128 B], each
// panel 1024-byte aligned (the swizzle's period); + 1024 for aligning the base.
template <int D>
constexpr size_t wg_smem_bytes() {
  constexpr int P = D / 64, M = 64 * kNWG;
  return 1024 + round1024(sizeof(wtile)) + size_t(P) * M * 128 + 2 * kBufs * size_t(P) * kKT * 128;
}

// The K / V rows of ring slot kb's keys into the swizzled panels Kb / Vb ([D / 64][KT][128 B]) by cp.async,
// padding slots zero-filled; one commit group.
template <int D, class Tile>
__device__ inline void issue_kv_sw128(const Tile& t, int kb, unsigned char* Kb, unsigned char* Vb, const bf16* k,
                                      const bf16* v, int Hkv, int hk, int tid, int nthr) {
  cp_rows_pair<D>(kKT, k, v, Kb, Vb, key_rows<D>(t.kpos[kb], Hkv, hk), sw128_panels<kKT>{}, tid, nthr);
}

// The tile's M stacked query rows (rows [r0, r1), stacked s = (r - r0) G + g; zeros past r1) into Q's swizzled
// panels [D / 64][M][128 B].
template <int D, int M>
__device__ inline void stage_q_sw128(unsigned char* Qs, const bf16* q, int r0, int r1, int G, int Hq, int hk,
                                     int tid, int nthr) {
  constexpr int DC = D / 8;
  for (int e = tid; e < M * DC; e += nthr) {
    const int s = e / DC, c = e % DC, r = r0 + s / G, g = s % G;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (r < r1) val = __ldg(reinterpret_cast<const uint4*>(q + ((int64_t(r) * Hq + hk * G + g) * D + c * 8)));
    *reinterpret_cast<uint4*>(Qs + uint32_t(c >> 3) * (M * 128) + sw128_offset(s, (c & 7) * 8)) = val;
  }
}

// S = Q K^T of the warpgroup's 64 rows against one key tile (descriptors dq, dk of the first panels), issued and
// committed, not waited for.
template <int D>
__device__ inline void issue_scores(float (&sf)[kKT / 2], uint64_t dq, uint64_t dk) {
  constexpr uint32_t kPanelQ = 64 * kNWG * 128, kPanelK = kKT * 128;
#pragma unroll
  for (int i = 0; i < kKT / 2; i++) sf[i] = 0.f;
  wgmma_pin(sf);
  wgmma_fence();
#pragma unroll
  for (int ks = 0; ks < D / 16; ks++)  // descriptor units of 16 bytes: a panel on, or 32 bytes along the row
    wgmma_m64n64k16<0>(sf, dq + (((ks >> 2) * kPanelQ + (ks & 3) * 32) >> 4),
                       dk + (((ks >> 2) * kPanelK + (ks & 3) * 32) >> 4), ks > 0);
  wgmma_commit();
}

// A consumer warpgroup's rows: O (64 x D, wgmma's accumulator layout), the rows' log2-domain maxima, this
// lane's partial sums, and the thread's two rows (a = lane / 4 and b = a + 8 of its warp's 16).
template <int D>
struct wg_rows {
  float o[D / 8][4];
  float m_a, m_b, l_a, l_b;
  srow x[2];
};

template <int D, class Tile>
__device__ inline void wg_rows_init(wg_rows<D>& w, const Tile& t, int first_row, int G, int q_offset, int warp,
                                    int lane) {
#pragma unroll
  for (int h = 0; h < 2; h++) w.x[h] = stile_row(t, first_row + (warp & 3) * 16 + (lane >> 2) + 8 * h, G, q_offset);
#pragma unroll
  for (int dt = 0; dt < D / 8; dt++) w.o[dt][0] = w.o[dt][1] = w.o[dt][2] = w.o[dt][3] = 0.f;
  w.m_a = w.m_b = -INFINITY;
  w.l_a = w.l_b = 0.f;
}

template <int D>
__device__ inline float (&o_panel(wg_rows<D>& w, int p))[32] {  // O's columns [64 p, 64 p + 64) as wgmma's d
  return *reinterpret_cast<float(*)[32]>(&w.o[8 * p][0]);
}

// Key tile i (ring slot kb) on the warpgroup's scores s: the mask (skipped on a warp whose rows all see every
// slot: stile_full), the online softmax, then O += P V (P from registers, V's panels at descriptor dv). Waits for
// every wgmma the warpgroup has in flight (the next tile's S too, when one was issued).
template <int D, class Tile>
__device__ inline void wg_softmax_pv(wg_rows<D>& w, float (&s)[kKT / 8][4], const Tile& t, int kb, int i,
                                     uint64_t dv, float sl2, int lane) {
  constexpr int KT = kKT, P = D / 64;
  const int32_t* kp = t.kpos[kb];
  const int32_t kmax = stile_kmax(t, kb, i);
  const uint64_t vis_a = stile_mask(t, kb, w.x[0].bl), vis_b = stile_mask(t, kb, w.x[1].bl);
  float mx_a, mx_b;
  if (stile_full<KT>(kmax, vis_a, vis_b, w.x[0], w.x[1]))
    mask_scores<KT>(s, sl2, lane, [](int, int) { return true; }, mx_a, mx_b);
  else
    mask_scores<KT>(
        s, sl2, lane,
        [&](int j, int h) { return kp[j] <= w.x[h].lim && (((h ? vis_b : vis_a) >> j) & 1); }, mx_a, mx_b);
  online_softmax<D, KT>(s, w.o, mx_a, mx_b, w.m_a, w.m_b, w.l_a, w.l_b);

  uint32_t pf[KT / 16][4];
#pragma unroll
  for (int j = 0; j < KT / 16; j++) a_fragment<KT>(pf[j], s, j);
  auto pin = [&] {
#pragma unroll
    for (int p = 0; p < P; p++) wgmma_pin(o_panel(w, p));
#pragma unroll
    for (int j = 0; j < KT / 16; j++) wgmma_pin(pf[j]);
  };
  pin();
  wgmma_fence();
#pragma unroll
  for (int j = 0; j < KT / 16; j++)
#pragma unroll
    for (int p = 0; p < P; p++)  // V panel p, keys 16 j on: 16 rows of 128 bytes
      wgmma_m64n64k16_rs<1>(o_panel(w, p), pf[j], dv + ((p * KT * 128 + j * 2048) >> 4), true);
  wgmma_commit();
  wgmma_wait<0>();
  pin();
}

// The warpgroup's rows into out (bf16) and lse (natural log); a row without keys gets 0 / -inf.
template <int D>
__device__ inline void wg_store(const wg_rows<D>& w, const attn_fwd_args& a, int hk, int lane) {
  const int G = a.d.Hq / a.d.Hkv;
  bf16* out = static_cast<bf16*>(a.out);
  const float lh2[2] = {quad_sum(w.l_a), quad_sum(w.l_b)}, mh[2] = {w.m_a, w.m_b};
#pragma unroll
  for (int h = 0; h < 2; h++) {
    const srow& xr = w.x[h];
    if (xr.lim < 0) continue;
    const float lh = lh2[h], inv = lh > 0.f ? 1.f / lh : 0.f;
    const int64_t row = int64_t(xr.r) * a.d.Hq + hk * G + xr.g;
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) {
      const int col = dt * 8 + (lane & 3) * 2;
      *reinterpret_cast<uint32_t*>(out + row * D + col) =
          pack_bf16x2(w.o[dt][2 * h] * inv, w.o[dt][2 * h + 1] * inv);
    }
    if ((lane & 3) == 0) a.lse[row] = lh > 0.f ? (mh[h] + log2f(lh)) * kLn2 : -INFINITY;
  }
}

// Pipeline, one barrier per key tile. Before iteration i: tile i's scores S_i are in registers, tile i + 1's K / V
// have landed with its masks, tile i + 2's slots are packed. Iteration i: a barrier; tile i + 2's copies and masks
// (buffers last read by tile i - 1) and the load of tile i + 3's slot (ring slot of tile i - 1); S_{i+1} = Q K_{i+1}^T
// issued; the mask and softmax of S_i and O += P_i V_i while S_{i+1} runs on the tensor cores; tile i + 3's slot
// stored; this thread's copies of tile i + 2 waited for.
template <int D>
__global__ void __launch_bounds__(128 * kNWG, 1) fwd_structured_wgmma_kernel(const attn_fwd_args a) {
  constexpr int P = D / 64, M = 64 * kNWG, KT = kKT, W = 4 * kNWG, nthr = 128 * kNWG;
  constexpr uint32_t kPanelQ = M * 128, kBufKV = P * KT * 128;
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = smem_align1024(smem_raw);
  wtile& t = *reinterpret_cast<wtile*>(smem);
  unsigned char* Qs = smem + round1024(sizeof(wtile));
  unsigned char* Ks = Qs + P * kPanelQ;  // [kBufs][P][KT][128 B]
  unsigned char* Vs = Ks + kBufs * kBufKV;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = warp >> 2;
  const int Hq = a.d.Hq, Hkv = a.d.Hkv, q_offset = a.d.q_offset, G = Hq / Hkv, hk = blockIdx.y;
  // Later rows see more gists: the grid runs the last row tiles first, so the longest CTAs do not form the tail.
  const int RT = M / G, r0 = (gridDim.x - 1 - blockIdx.x) * RT, r1 = min(a.d.Tq, r0 + RT);
  const bf16* q = static_cast<const bf16*>(a.q);
  const bf16* k = static_cast<const bf16*>(a.k);
  const bf16* v = static_cast<const bf16*>(a.v);
  const float sl2 = rsqrtf(float(D)) * kLog2e;

  if (tid == 0) stile_setup(t, a.p, q_offset, r0, r1);
  stage_q_sw128<D, M>(Qs, q, r0, r1, G, Hq, hk, tid, nthr);
  fence_proxy_async();
  __syncthreads();  // the tile's segments and Qs visible
  const int total = t.sofs[t.nseg], ntiles = (total + KT - 1) / KT;
  stile_pack_first(t, a.p, ntiles, tid, 3);
  __syncthreads();

  auto issue = [&](int i) {  // tile i's copies and masks
    const int b = i % kBufs;
    issue_kv_sw128<D>(t, i % kRing, Ks + b * kBufKV, Vs + b * kBufKV, k, v, Hkv, hk, tid, nthr);
    stile_masks(t, i % kRing, warp, W, lane);
  };
  for (int i = 0; i < 2 && i < ntiles; i++) issue(i);

  wg_rows<D> w;
  wg_rows_init(w, t, wg * 64, G, q_offset, warp, lane);
  const uint64_t dq = smem_desc_sw128(Qs + wg * 64 * 128);
  cp_async_wait<0>();
  fence_proxy_async();
  __syncthreads();  // tiles 0 and 1: K / V and masks

  float s[KT / 8][4], sn[KT / 8][4];  // S_i, S_{i+1}
  float(&sf)[KT / 2] = *reinterpret_cast<float(*)[KT / 2]>(&s[0][0]);
  float(&snf)[KT / 2] = *reinterpret_cast<float(*)[KT / 2]>(&sn[0][0]);
  if (ntiles > 0) {
    issue_scores<D>(sf, dq, smem_desc_sw128(Ks));
    wgmma_wait<0>();
    wgmma_pin(sf);
  }

  for (int it = 0; it < ntiles; it++) {
    if (it > 0) __syncthreads();  // tile it + 1's K/V and masks, tile it + 2's slots visible; tile it - 1 done
    const int kb = it % kRing;
    if (it + 2 < ntiles) issue(it + 2);
    const bool packs = tid < KT && it + 3 < ntiles;
    pslot nxt{};
    if (packs) nxt = stile_pack_load(t, a.p, it + 3, tid);
    const bool ahead = it + 1 < ntiles;
    if (ahead) issue_scores<D>(snf, dq, smem_desc_sw128(Ks + ((it + 1) % kBufs) * kBufKV));

    wg_softmax_pv(w, s, t, kb, it, smem_desc_sw128(Vs + (it % kBufs) * kBufKV), sl2, lane);  // waits S_{i+1} too
    if (ahead) {
      wgmma_pin(snf);
#pragma unroll
      for (int i = 0; i < KT / 2; i++) sf[i] = snf[i];
    }

    if (packs) stile_pack_store(t, (it + 3) % kRing, nxt, tid);
    cp_async_wait<0>();  // tile it + 2's copies of this thread, then visible to the async proxy
    fence_proxy_async();
  }

  wg_store(w, a, hk, lane);
}

// ---- warp-specialized version (FlashAttention-3's split of roles; opt-in, GSA_CUDA_WGMMA=2) ----
// Warpgroup 0 produces: for key tile i it waits until stage i % kStages is free, packs the tile's slots, computes
// the per-block masks and gathers K / V into the stage by cp.async, then arrives on the stage's `full` barrier
// (once for its shared-memory writes, once through cp.async when its copies land). Warpgroups 1 and 2 consume
// (64 rows each): wait for `full`, S = Q K^T, mask and softmax, O += P V, then each warp arrives on `empty`.
// No CTA-wide barrier per tile: a consumer waits only for its tile, the producer only for a free stage, and the
// two consumers drift apart so that one's softmax runs under the other's products. Registers are moved from the
// producer (56 a thread) to the consumers (224).
constexpr int kStages = 3;
using wstile = stile<kKT, kStages>;
struct ws_bars {
  uint64_t full[kStages], empty[kStages];
};

template <int D>
constexpr size_t ws_smem_bytes() {
  constexpr int P = D / 64, M = 64 * kNWG;
  return 1024 + round1024(sizeof(wstile) + sizeof(ws_bars)) + size_t(P) * M * 128 +
         2 * kStages * size_t(P) * kKT * 128;
}

template <int D>
__global__ void __launch_bounds__(128 * (kNWG + 1), 1) fwd_structured_ws_kernel(const attn_fwd_args a) {
  constexpr int P = D / 64, M = 64 * kNWG, KT = kKT, nthr = 128 * (kNWG + 1);
  constexpr uint32_t kBufKV = P * KT * 128;
  static_assert(sizeof(wstile) % 16 == 0, "the barriers follow the tile descriptors");
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = smem_align1024(smem_raw);
  wstile& t = *reinterpret_cast<wstile*>(smem);
  ws_bars& bars = *reinterpret_cast<ws_bars*>(smem + sizeof(wstile));
  unsigned char* Qs = smem + round1024(sizeof(wstile) + sizeof(ws_bars));
  unsigned char* Ks = Qs + P * M * 128;  // [kStages][P][KT][128 B]
  unsigned char* Vs = Ks + kStages * kBufKV;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = warp >> 2;
  const int Hq = a.d.Hq, Hkv = a.d.Hkv, q_offset = a.d.q_offset, G = Hq / Hkv, hk = blockIdx.y;
  const int RT = M / G, r0 = (gridDim.x - 1 - blockIdx.x) * RT, r1 = min(a.d.Tq, r0 + RT);
  const bf16* q = static_cast<const bf16*>(a.q);
  const bf16* k = static_cast<const bf16*>(a.k);
  const bf16* v = static_cast<const bf16*>(a.v);

  if (tid == 0) {
    stile_setup(t, a.p, q_offset, r0, r1);
    for (int s = 0; s < kStages; s++) {
      mbar_init(&bars.full[s], 2 * 128);  // each producer thread: its slots / masks, then its copies
      mbar_init(&bars.empty[s], 4 * kNWG);  // each consumer warp
    }
  }
  stage_q_sw128<D, M>(Qs, q, r0, r1, G, Hq, hk, tid, nthr);
  fence_proxy_async();
  __syncthreads();  // segments, barriers and Q visible; the last CTA-wide barrier
  const int ntiles = (t.sofs[t.nseg] + KT - 1) / KT;

  if (wg == 0) {  // the producer
    regs_lower<56>();
    for (int i = 0; i < ntiles; i++) {
      const int s = i % kStages;
      mbar_wait(&bars.empty[s], ((i / kStages) & 1) ^ 1);  // the first lap passes: every stage starts free
      if (tid < KT) stile_pack_store(t, s, stile_pack_load(t, a.p, i, tid), tid);
      named_barrier(1, 128);  // the slots, for every producer warp's masks and copies
      stile_masks(t, s, warp, 4, lane);
      issue_kv_sw128<D>(t, s, Ks + s * kBufKV, Vs + s * kBufKV, k, v, Hkv, hk, tid, 128);
      mbar_arrive(&bars.full[s]);
      mbar_arrive_cp_async(&bars.full[s]);
    }
    cp_async_wait<0>();
    return;
  }

  regs_raise<224>();
  const int cw = wg - 1;  // consumer 0 or 1: rows [64 cw, 64 cw + 64) of the tile
  const float sl2 = rsqrtf(float(D)) * kLog2e;
  wg_rows<D> w;
  wg_rows_init(w, t, cw * 64, G, q_offset, warp, lane);
  const uint64_t dq = smem_desc_sw128(Qs + cw * 64 * 128);
  float s_[KT / 8][4];
  float(&sf)[KT / 2] = *reinterpret_cast<float(*)[KT / 2]>(&s_[0][0]);
  for (int i = 0; i < ntiles; i++) {
    const int s = i % kStages;
    mbar_wait(&bars.full[s], (i / kStages) & 1);
    fence_proxy_async();  // the stage's cp.async writes, acquired through the barrier, made visible to wgmma
    issue_scores<D>(sf, dq, smem_desc_sw128(Ks + s * kBufKV));
    wgmma_wait<0>();
    wgmma_pin(sf);
    wg_softmax_pv(w, s_, t, s, i, smem_desc_sw128(Vs + s * kBufKV), sl2, lane);
    __syncwarp();
    if (lane == 0) mbar_arrive(&bars.empty[s]);  // this warp is done with the stage
  }
  wg_store(w, a, hk, lane);
}

template <int D>
cudaError_t launch_ws(const attn_fwd_args& a, cudaStream_t st) {
  const int G = a.d.Hq / a.d.Hkv, RT = 64 * kNWG / G;
  const int64_t tiles = (a.d.Tq + RT - 1) / RT;
  if (tiles > INT32_MAX || a.d.Hkv > 65535) return cudaErrorInvalidConfiguration;
  constexpr size_t smem = ws_smem_bytes<D>();
  const cudaError_t e =
      cudaFuncSetAttribute(fwd_structured_ws_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (e != cudaSuccess) return e;
  fwd_structured_ws_kernel<D><<<dim3(unsigned(tiles), unsigned(a.d.Hkv)), 128 * (kNWG + 1), smem, st>>>(a);
  return cudaGetLastError();
}

template <int D>
cudaError_t launch_dim(const attn_fwd_args& a, cudaStream_t st) {
  const int G = a.d.Hq / a.d.Hkv, RT = 64 * kNWG / G;
  const int64_t tiles = (a.d.Tq + RT - 1) / RT;
  if (tiles > INT32_MAX || a.d.Hkv > 65535) return cudaErrorInvalidConfiguration;
  constexpr size_t smem = wg_smem_bytes<D>();
  const cudaError_t e = cudaFuncSetAttribute(fwd_structured_wgmma_kernel<D>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (e != cudaSuccess) return e;
  fwd_structured_wgmma_kernel<D><<<dim3(unsigned(tiles), unsigned(a.d.Hkv)), 128 * kNWG, smem, st>>>(a);
  return cudaGetLastError();
}

}  // namespace

bool structured_wgmma_applies(const attn_fwd_args& a) {
  const int G = a.d.Hq / a.d.Hkv;
  return (a.d.D == 64 || a.d.D == 128) && G >= 1 && (64 * kNWG) % G == 0;
}

int launch_attention_forward_structured_wgmma(const attn_fwd_args& a, void* stream) {
  if (a.d.Tq == 0 || a.d.Hkv == 0) return 0;
  if (!structured_wgmma_applies(a)) return int(cudaErrorInvalidValue);
  const auto st = static_cast<cudaStream_t>(stream);
  if (a.kernel == 2) return int(a.d.D == 64 ? launch_ws<64>(a, st) : launch_ws<128>(a, st));
  return int(a.d.D == 64 ? launch_dim<64>(a, st) : launch_dim<128>(a, st));
}

}  // namespace gsa::cuda::detail
