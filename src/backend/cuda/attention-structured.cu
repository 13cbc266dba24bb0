// Forward of plan-driven GSA attention for structured plans (bf16; contract: attention.h; row tiles, key tiles and
// masks: attention-structured.cuh). Overwrites out (Tq, Hq, D) and lse (Tq, Hq, natural log); empty visibility ->
// 0 / -inf, as the generic kernel (attention-fwd.cu).
//
// Why a second kernel: the generic one gives each block (17 or 68 rows at c = 16 / 64) its own CTA, so the gist
// keys that every block sees are loaded and multiplied once per block with mostly empty row tiles. Here a CTA
// takes M = 32 W stacked rows (W = 2 or 4 warps, 32 rows each as two m16 tiles, two CTAs per SM) of consecutive
// query rows across blocks and walks the tile's key segments once: per gist level the union of the blocks' unit
// ranges (a causal-by-chunk problem: only the last key tiles are masked for some rows), then the union of the
// blocks' short stream ranges (sink, local window, own chunk), all in one online softmax. Inner loop: key tiles
// of KT keys double-buffered with cp.async, S = Q K^T and O += P V on mma.sync m16n8k16 (Q fragments re-read from
// shared memory, each K fragment (ldmatrix) and V fragment (ldmatrix.trans) feeding both m tiles), log2-domain
// online softmax, P rounded to bf16. The mask of an element is the row's block bit of the slot (stile_masks) and
// the causal limit.
//
// Key tiles of 64 keys at both head dims (at D 128: 255 registers, 40 bytes spilled; 32-key tiles, which do not
// spill, measured 9% slower at 32k on the H200). Compiled variants: D {32 (inference of head-dim-32 models), 64,
// 128}: 3 kernels.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "backend/cuda/attention-mma.cuh"
#include "backend/cuda/attention-structured.cuh"

namespace gsa::cuda::detail {
namespace {

constexpr int kMT = 2;  // m16 row tiles per warp: 32 stacked rows, each K / V fragment feeds two mma chains
constexpr int kMaxWarps = 4;

template <int D>
__host__ __device__ constexpr int ld() {
  return D + 8;
}

template <int D, int KT>
size_t smem_bytes(int warps) {
  return (size_t(16 * kMT * warps) + 4 * KT) * ld<D>() * sizeof(bf16) + stile_bytes<KT>();
}

// One barrier per key tile: at the top of iteration i, tile i's K / V have landed (each thread waited for its own
// copies at the end of i - 1), its masks are written and tile i + 1's slots are packed; during i the CTA issues
// tile i + 1's copies and masks (buffers last read by tile i - 1) and packs tile i + 2 (ring slot last read by
// tile i - 1), while computing tile i.
template <int D, int KT>
__global__ void __launch_bounds__(32 * kMaxWarps, 2) fwd_structured_kernel(const attn_fwd_args a) {
  constexpr int LD = ld<D>(), DC = D / 8, MT = kMT;
  extern __shared__ __align__(16) unsigned char smem[];
  const int W = blockDim.x / 32, M = 16 * MT * W, nthr = blockDim.x;
  stile<KT>& t = *reinterpret_cast<stile<KT>*>(smem);
  bf16* Qs = reinterpret_cast<bf16*>(smem + stile_bytes<KT>());  // [M][LD]
  bf16* Ks = Qs + M * LD;                                              // [2][KT][LD]
  bf16* Vs = Ks + 2 * KT * LD;                                         // [2][KT][LD]

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int Hq = a.d.Hq, Hkv = a.d.Hkv, q_offset = a.d.q_offset, G = Hq / Hkv, hk = blockIdx.y;
  // Later rows see more gists: the grid runs the last row tiles first, so the longest CTAs do not form the tail.
  const int RT = M / G, r0 = (gridDim.x - 1 - blockIdx.x) * RT, r1 = min(a.d.Tq, r0 + RT);
  const bf16* q = static_cast<const bf16*>(a.q);
  const bf16* k = static_cast<const bf16*>(a.k);
  const bf16* v = static_cast<const bf16*>(a.v);
  bf16* out = static_cast<bf16*>(a.out);
  const float sl2 = rsqrtf(float(D)) * kLog2e;

  if (tid == 0) stile_setup(t, a.p, q_offset, r0, r1);
  for (int e = tid; e < M * DC; e += nthr) {
    const int s = e / DC, c = e % DC, r = r0 + s / G, g = s % G;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (r < r1) val = __ldg(reinterpret_cast<const uint4*>(q + ((int64_t(r) * Hq + hk * G + g) * D + c * 8)));
    *reinterpret_cast<uint4*>(Qs + s * LD + c * 8) = val;
  }
  __syncthreads();  // the tile's segments and Qs visible
  const int total = t.sofs[t.nseg], ntiles = (total + KT - 1) / KT;
  stile_pack_first(t, a.p, ntiles, tid);
  __syncthreads();

  if (ntiles > 0) {
    stile_issue_kv<D, KT, LD>(t, 0, 0, Ks, Vs, k, v, Hkv, hk, tid, nthr);
    stile_masks(t, 0, warp, W, lane);
  }

  // This thread's rows: per m tile, a = lane / 4 and b = a + 8 of the tile's 16.
  srow x[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int h = 0; h < 2; h++) x[mt][h] = stile_row(t, warp * 16 * MT + mt * 16 + (lane >> 2) + 8 * h, G, q_offset);
  float o[MT][D / 8][4];
  float m[MT][2], l[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; mt++) {
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) o[mt][dt][0] = o[mt][dt][1] = o[mt][dt][2] = o[mt][dt][3] = 0.f;
    m[mt][0] = m[mt][1] = -INFINITY;
    l[mt][0] = l[mt][1] = 0.f;
  }
  const bf16* Qw = Qs + (warp * 16 * MT + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + (lane >> 4) * 8;
  cp_async_wait<0>();

  for (int it = 0; it < ntiles; it++) {
    __syncthreads();  // tile it's K/V and masks, tile it + 1's slots visible; tile it - 1 done by every warp
    const int vb = it & 1, kb = it % kSRing;
    bool packs;
    const pslot nxt = stile_next<D, KT, LD>(t, a.p, it, ntiles, packs, Ks, Vs, k, v, Hkv, hk, tid, nthr, warp, W, lane);

    const bf16* Kb = Ks + vb * KT * LD;
    const bf16* Vb = Vs + vb * KT * LD;
    const int32_t* kp = t.kpos[kb];
    float s[MT][KT / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int nt = 0; nt < KT / 8; nt++) s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++) {
      uint32_t qf[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; mt++) ldmatrix_x4(qf[mt], Qw + mt * 16 * LD + ks * 16);
#pragma unroll
      for (int np = 0; np < KT / 16; np++) {
        uint32_t r[4];
        ldmatrix_x4(r, Kb + (np * 16 + (lane >> 4) * 8 + (lane & 7)) * LD + ks * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          mma_bf16(s[mt][2 * np], qf[mt], r[0], r[1]);
          mma_bf16(s[mt][2 * np + 1], qf[mt], r[2], r[3]);
        }
      }
    }
    // The per-element mask is skipped on an m tile whose rows all see every slot (stile_full).
    const int32_t kmax = stile_kmax(t, kb, it);
    uint64_t vis[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int h = 0; h < 2; h++) vis[mt][h] = stile_mask(t, kb, x[mt][h].bl);
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
      float mx_a, mx_b;
      if (stile_full<KT>(kmax, vis[mt][0], vis[mt][1], x[mt][0], x[mt][1]))
        mask_scores<KT>(s[mt], sl2, lane, [](int, int) { return true; }, mx_a, mx_b);
      else
        mask_scores<KT>(
            s[mt], sl2, lane,
            [&](int j, int h) { return kp[j] <= x[mt][h].lim && ((vis[mt][h] >> j) & 1); }, mx_a, mx_b);
      online_softmax<D, KT>(s[mt], o[mt], mx_a, mx_b, m[mt][0], m[mt][1], l[mt][0], l[mt][1]);
    }
    mma_rows_times_keys<D, KT, LD, MT>(o, s, Vb, lane);  // O += P V
    if (packs) stile_pack_store(t, (it + 2) % kSRing, nxt, tid);
    cp_async_wait<0>();  // tile it + 1's copies of this thread
  }

#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      float lh = l[mt][h];
      lh += __shfl_xor_sync(0xffffffffu, lh, 1);
      lh += __shfl_xor_sync(0xffffffffu, lh, 2);
      const srow& xr = x[mt][h];
      if (xr.lim < 0) continue;
      const float inv = lh > 0.f ? 1.f / lh : 0.f;
      const int64_t row = int64_t(xr.r) * Hq + hk * G + xr.g;
#pragma unroll
      for (int dt = 0; dt < D / 8; dt++) {
        const int col = dt * 8 + (lane & 3) * 2;
        *reinterpret_cast<uint32_t*>(out + row * D + col) =
            pack_bf16x2(o[mt][dt][2 * h] * inv, o[mt][dt][2 * h + 1] * inv);
      }
      if ((lane & 3) == 0) a.lse[row] = lh > 0.f ? (m[mt][h] + log2f(lh)) * kLn2 : -INFINITY;
    }
}

template <int D, int KT>
cudaError_t launch_dim(const attn_fwd_args& a, int sm_count, cudaStream_t st) {
  const int G = a.d.Hq / a.d.Hkv;
  // 4 warps (128 stacked rows: K/V loaded once per 128 rows) when that still fills two CTAs per SM and the row
  // tiles stay inside upload_plan's aligned windows of kSWindow rows (at most kSMaxB blocks each).
  // a.rows forces one.
  const int64_t tiles4 = (int64_t(a.d.Tq) * G + 127) / 128;
  const bool fills = tiles4 * a.d.Hkv >= 2 * int64_t(std::max(1, sm_count));
  const int warps = 128 % G == 0 && (a.rows == 128 || (a.rows == 0 && fills)) ? 4 : 2;
  const int RT = 16 * kMT * warps / G;
  if (RT < 1) return cudaErrorInvalidConfiguration;
  const int64_t tiles = (a.d.Tq + RT - 1) / RT;
  if (tiles > INT32_MAX || a.d.Hkv > 65535) return cudaErrorInvalidConfiguration;
  const size_t smem = smem_bytes<D, KT>(warps);
  const cudaError_t e =
      cudaFuncSetAttribute(fwd_structured_kernel<D, KT>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (e != cudaSuccess) return e;
  fwd_structured_kernel<D, KT><<<dim3(unsigned(tiles), unsigned(a.d.Hkv)), 32 * warps, smem, st>>>(a);
  return cudaGetLastError();
}

}  // namespace

int launch_attention_forward_structured(const attn_fwd_args& a, int sm_count, void* stream) {
  if (a.d.Tq == 0 || a.d.Hkv == 0) return 0;
  // The wgmma kernel (128-row tiles, one CTA per SM) when asked for: not the default, it measured 2.14 against
  // 1.88 ms at 32k (docs/cuda.md).
  if (a.kernel >= 1 && a.rows != 64 && structured_wgmma_applies(a))
    return launch_attention_forward_structured_wgmma(a, stream);
  const auto st = static_cast<cudaStream_t>(stream);
  switch (a.d.D) {
    case 32: return int(launch_dim<32, 64>(a, sm_count, st));  // forward only (attention_supported)
    case 64: return int(launch_dim<64, 64>(a, sm_count, st));
    case 128: return int(launch_dim<128, 64>(a, sm_count, st));
  }
  return int(cudaErrorInvalidValue);
}

}  // namespace gsa::cuda::detail
