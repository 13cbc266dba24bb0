// Key-major dK / dV of plan-driven GSA attention for structured plans on Hopper's warpgroup MMA (wgmma; layouts:
// wgmma.cuh). The same pass as attention-keymajor.cu (a CTA per key tile of kKTile = 64 keys and KV head walks
// the row windows of the rows that see the tile, dK / dV in registers, one add per key at the end; the walk:
// attention-keymajor.cuh), with its four products on wgmma, the warpgroup's 64 keys as the rows (M) of each:
//   S^T = K Q^T and dP^T = V dO^T: m64n64k16 with K / V (K-major) and the window's Q / dO rows (K-major B) from
//   shared memory, D / 16 steps each;
//   P^T and dS^T in S^T's registers (accumulator layout = mma.sync's per warp: the element rule of the mma.sync
//   kernel applies unchanged), rounded to bf16 straight into wgmma's A fragments;
//   dV += P^T dO and dK += dS^T Q: A from registers, B = the window's dO / Q rows read MN-major (rows = the 64
//   window rows as the k dimension, one m64n64k16 per 16 rows and 64-column panel of D).
// K / V and the double-buffered Q / dO windows sit in 128-byte-swizzled panels of 64 columns; cp.async writes are
// made visible to wgmma's async proxy with fence.proxy.async before the barrier. One warpgroup a CTA, two CTAs
// per SM. Compiled variants: D {64, 128}.
#include <cuda_runtime.h>

#include <cmath>

#include "backend/cuda/attention-keymajor.cuh"
#include "backend/cuda/attention-mma.cuh"
#include "backend/cuda/wgmma.cuh"

namespace gsa::cuda::detail {
namespace {

constexpr int kMQ = 64;                // stacked rows per window: N of S^T, k of dV / dK
constexpr uint32_t kPanel = 64 * 128;  // one swizzled panel: 64 rows x 64 bf16

struct kwsmall {
  krow row[2][kMQ];
  int32_t kpos[kKTile], kunit[kKTile];
  int32_t bfirst[2], nbs[2];
  int32_t kmin;
};

// K, V: [D / 64] panels each; Q, dO: [2 windows][D / 64] panels each; then kwsmall; + 1024 to align the base.
template <int D>
constexpr size_t kw_smem_bytes() {
  return 1024 + 6 * size_t(D / 64) * kPanel + sizeof(kwsmall);
}

__device__ inline uint64_t kstep(int ks) {  // K-major k16 step ks of a [64][D] operand, in descriptor units
  return uint64_t(((ks >> 2) * kPanel + (ks & 3) * 32) >> 4);
}

template <int D>
__device__ inline float (&panel(float (&acc)[D / 8][4], int p))[32] {  // columns [64 p, 64 p + 64) as wgmma's d
  return *reinterpret_cast<float(*)[32]>(&acc[8 * p][0]);
}

template <int D>
__global__ void __launch_bounds__(128, 2) bwd_keymajor_wgmma_kernel(const attn_bwd_args a) {
  constexpr int P = D / 64, KT = kKTile, MQ = kMQ, nthr = 128;
  static_assert(KT == 64, "one warpgroup: 64 keys");
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = smem_align1024(smem_raw);
  unsigned char* Ks = smem;
  unsigned char* Vs = Ks + P * kPanel;
  unsigned char* Qs = Vs + P * kPanel;  // [2][P] panels
  unsigned char* Os = Qs + 2 * P * kPanel;
  kwsmall& sh = *reinterpret_cast<kwsmall*>(Os + 2 * P * kPanel);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int Hq = a.d.Hq, Hkv = a.d.Hkv, q_offset = a.d.q_offset, G = Hq / Hkv, hk = blockIdx.y, RQ = MQ / G;
  const ktile tile = a.p.ktiles[blockIdx.x];
  const int level = tile.level;
  const bf16* q = static_cast<const bf16*>(a.q);
  const bf16* k = static_cast<const bf16*>(a.k);
  const bf16* v = static_cast<const bf16*>(a.v);
  const bf16* dout = static_cast<const bf16*>(a.dout);
  const float scale = rsqrtf(float(D)), sl2 = scale * kLog2e;
  const int c4 = lane & 3;

  ktile_keys(a.p, tile, a.d.Tk, tid, warp, lane, sh.kpos, sh.kunit, sh.kmin);
  cp_rows_pair<D>(KT, k, v, Ks, Vs, key_rows<D>(sh.kpos, Hkv, hk), sw128_panels<KT>{}, tid, nthr);
  __syncthreads();  // kmin visible
  if (sh.kmin == kInvalidKey) {
    cp_async_wait<0>();
    return;
  }
  const int row_min = max(0, sh.kmin - q_offset);  // rows before the first key's position see none of the tile
  const int ka = warp * 16 + (lane >> 2), kb = ka + 8;  // the thread's keys (accumulator rows a and b)
  const int32_t pos_a = sh.kpos[ka], pos_b = sh.kpos[kb], unit_a = sh.kunit[ka], unit_b = sh.kunit[kb];

  // Window c into buffer buf: Q / dO rows by cp.async (one commit group), row statistics and blocks by plain loads.
  auto issue = [&](int buf, const kcursor& c) {
    cp_rows_pair<D>(MQ, q, dout, Qs + buf * P * kPanel, Os + buf * P * kPanel, window_rows<D>(c, G, Hq, hk),
                    sw128_panels<MQ>{}, tid, nthr);
    if (tid < MQ) sh.row[buf][tid] = window_row(a, c, tid, G, q_offset);
    if (tid == 0) window_blocks(a.p, c, RQ, sh.bfirst[buf], sh.nbs[buf]);
  };

  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int dt = 0; dt < D / 8; dt++)
#pragma unroll
    for (int e = 0; e < 4; e++) dk[dt][e] = dv[dt][e] = 0.f;
  const uint64_t dK = smem_desc_sw128(Ks), dV = smem_desc_sw128(Vs);

  kwalk<true>(tile, a.p, row_min, RQ, issue, [&](int buf) {
    const uint32_t vis_a = key_blocks(a.p, sh.bfirst[buf], sh.nbs[buf], level, pos_a, unit_a);
    const uint32_t vis_b = key_blocks(a.p, sh.bfirst[buf], sh.nbs[buf], level, pos_b, unit_b);
    if (__syncthreads_or((vis_a | vis_b) != 0)) {  // uniform over the warpgroup, as wgmma needs
      const uint64_t dQ = smem_desc_sw128(Qs + buf * P * kPanel), dO = smem_desc_sw128(Os + buf * P * kPanel);
      float s[MQ / 8][4], dp[MQ / 8][4];
      float(&sf)[MQ / 2] = *reinterpret_cast<float(*)[MQ / 2]>(&s[0][0]);
      float(&pf)[MQ / 2] = *reinterpret_cast<float(*)[MQ / 2]>(&dp[0][0]);
#pragma unroll
      for (int i = 0; i < MQ / 2; i++) sf[i] = pf[i] = 0.f;
      wgmma_pin(sf);
      wgmma_pin(pf);
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < D / 16; ks++) {
        wgmma_m64n64k16<0>(sf, dK + kstep(ks), dQ + kstep(ks), ks > 0);
        wgmma_m64n64k16<0>(pf, dV + kstep(ks), dO + kstep(ks), ks > 0);
      }
      wgmma_commit();
      wgmma_wait<0>();
      wgmma_pin(sf);
      wgmma_pin(pf);
      key_probs_ds<MQ>(s, dp, sh.row[buf], vis_a, vis_b, pos_a, pos_b, sl2, scale, c4);
      uint32_t fp[MQ / 16][4], fd[MQ / 16][4];  // P^T and dS^T as A fragments, 16 window rows a step
#pragma unroll
      for (int j = 0; j < MQ / 16; j++) {
        a_fragment<MQ>(fp[j], s, j);
        a_fragment<MQ>(fd[j], dp, j);
      }
      auto pin = [&] {  // dV, dK and the A fragments, before the fence and after the wait
#pragma unroll
        for (int p = 0; p < P; p++) {
          wgmma_pin(panel<D>(dv, p));
          wgmma_pin(panel<D>(dk, p));
        }
#pragma unroll
        for (int j = 0; j < MQ / 16; j++) {
          wgmma_pin(fp[j]);
          wgmma_pin(fd[j]);
        }
      };
      pin();
      wgmma_fence();
#pragma unroll
      for (int j = 0; j < MQ / 16; j++)
#pragma unroll
        for (int p = 0; p < P; p++) {  // panel p of dO / Q, window rows 16 j on: 16 rows of 128 bytes
          const uint64_t off = uint64_t((p * kPanel + j * 2048) >> 4);
          wgmma_m64n64k16_rs<1>(panel<D>(dv, p), fp[j], dO + off, true);
          wgmma_m64n64k16_rs<1>(panel<D>(dk, p), fd[j], dQ + off, true);
        }
      wgmma_commit();
      wgmma_wait<0>();
      pin();
    }
  });
  flush_key_rows<D>(a, a.dv_acc, dv, pos_a, pos_b, hk, lane);
  flush_key_rows<D>(a, a.dk_acc, dk, pos_a, pos_b, hk, lane);
}

template <int D>
cudaError_t launch_dim(const attn_bwd_args& a, cudaStream_t st) {
  const int G = a.d.Hq / a.d.Hkv;
  if (kMQ % G != 0 || a.d.Hkv > 65535) return cudaErrorInvalidConfiguration;
  constexpr size_t smem = kw_smem_bytes<D>();
  const cudaError_t e =
      cudaFuncSetAttribute(bwd_keymajor_wgmma_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (e != cudaSuccess) return e;
  bwd_keymajor_wgmma_kernel<D><<<dim3(unsigned(a.p.n_ktiles), unsigned(a.d.Hkv)), 128, smem, st>>>(a);
  return cudaGetLastError();
}

}  // namespace

int launch_keymajor_dkdv_wgmma(const attn_bwd_args& a, void* stream) {
  const auto st = static_cast<cudaStream_t>(stream);
  switch (a.d.D) {
    case 64: return int(launch_dim<64>(a, st));
    case 128: return int(launch_dim<128>(a, st));
  }
  return int(cudaErrorInvalidValue);
}

}  // namespace gsa::cuda::detail
