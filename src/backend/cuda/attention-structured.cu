// Forward of plan-driven GSA attention for structured plans (bf16; contract: attention.h; row tiles, key tiles and
// masks: attention-structured.cuh). Overwrites out (Tq, Hq, D) and lse (Tq, Hq, natural log); empty visibility ->
// 0 / -inf, as the generic kernel (attention-fwd.cu).
//
// Why a second kernel: the generic one gives each block (17 or 68 rows at c = 16 / 64) its own CTA, so the gist
// keys that every block sees are loaded and multiplied once per block with mostly empty row tiles. Here a CTA
// takes M = 16 W stacked rows (W = 4 or 8 warps) of consecutive query rows across blocks and walks the tile's key
// segments once: per gist level the union of the blocks' unit ranges (a causal-by-chunk problem: only the last
// key tiles are masked for some rows), then the union of the blocks' short stream ranges (sink, local window, own
// chunk), all in one online softmax. Inner loop = the generic kernel's: key tiles of 64 keys double-buffered with
// cp.async, S = Q K^T and O += P V on mma.sync m16n8k16 (Q fragments in registers, K via ldmatrix, V via
// ldmatrix.trans), log2-domain online softmax, P rounded to bf16. The mask of an element is the row's block bit of
// the slot (stile_masks) and the causal limit.
//
// Compiled variants: D {64, 128}: 2 kernels.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "backend/cuda/attention-mma.cuh"
#include "backend/cuda/attention-structured.cuh"

namespace gsa::cuda::detail {
namespace {

constexpr int kKT = 64;
constexpr int kMaxWarps = 8;

template <int D>
__host__ __device__ constexpr int ld() {
  return D + 8;
}

template <int D>
size_t smem_bytes(int warps) {
  return (size_t(16 * warps) + 4 * kKT) * ld<D>() * sizeof(bf16) + stile_bytes<kKT>();
}

template <int D>
__global__ void __launch_bounds__(32 * kMaxWarps) fwd_structured_kernel(const attn_fwd_args a) {
  constexpr int KT = kKT, LD = ld<D>(), DC = D / 8;
  extern __shared__ __align__(16) unsigned char smem[];
  const int W = blockDim.x / 32, M = 16 * W, nthr = blockDim.x;
  stile<KT>& t = *reinterpret_cast<stile<KT>*>(smem);
  bf16* Qs = reinterpret_cast<bf16*>(smem + stile_bytes<KT>());  // [M][LD]
  bf16* Ks = Qs + M * LD;                                          // [2][KT][LD]
  bf16* Vs = Ks + 2 * KT * LD;                                     // [2][KT][LD]

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
  if (t.n[0] > 0) issue(0);

  uint32_t qf[D / 16][4];
#pragma unroll
  for (int ks = 0; ks < D / 16; ks++)
    ldmatrix_x4(qf[ks], Qs + (warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + ks * 16 + (lane >> 4) * 8);

  // This thread's two stacked rows: a = g, b = g + 8 of the warp's 16 (g = lane / 4).
  const srow ra = stile_row(t, warp * 16 + (lane >> 2), G, q_offset);
  const srow rb = stile_row(t, warp * 16 + (lane >> 2) + 8, G, q_offset);
  float o[D / 8][4];
#pragma unroll
  for (int dt = 0; dt < D / 8; dt++) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.f;
  float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.f, l_b = 0.f;

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
      cp_async_commit();  // keep one group per iteration so that wait<1> below means "this tile"
    cp_async_wait<1>();
    __syncthreads();  // this tile's K/V visible to every warp

    const bf16* Kb = Ks + buf * KT * LD;
    const bf16* Vb = Vs + buf * KT * LD;
    const int32_t* kp = t.kpos[buf];
    const uint64_t vis_a = stile_mask(t, buf, ra.bl), vis_b = stile_mask(t, buf, rb.bl);
    float s[KT / 8][4];
    mma_scores<D, KT, LD>(s, qf, Kb, lane);
    float mx_a, mx_b;
    if (stile_full(t, buf, vis_a, vis_b, ra, rb))
      mask_scores<KT>(s, sl2, lane, [](int, int) { return true; }, mx_a, mx_b);
    else
      mask_scores<KT>(
          s, sl2, lane,
          [&](int j, int half) { return kp[j] <= (half ? rb.lim : ra.lim) && (((half ? vis_b : vis_a) >> j) & 1); },
          mx_a, mx_b);
    online_softmax<D, KT>(s, o, mx_a, mx_b, m_a, m_b, l_a, l_b);
    mma_rows_times_keys<D, KT, LD>(o, s, Vb, lane);
    __syncthreads();  // buffer buf and its kpos / masks are rewritten next iteration
  }
  cp_async_wait<0>();

#pragma unroll
  for (int off = 1; off <= 2; off <<= 1) {
    l_a += __shfl_xor_sync(0xffffffffu, l_a, off);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, off);
  }
#pragma unroll
  for (int half = 0; half < 2; half++) {
    const srow& x = half ? rb : ra;
    if (x.lim < 0) continue;
    const float l = half ? l_b : l_a, m = half ? m_b : m_a;
    const float inv = l > 0.f ? 1.f / l : 0.f;
    const int64_t row = int64_t(x.r) * Hq + hk * G + x.g;
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) {
      const int col = dt * 8 + (lane & 3) * 2;
      *reinterpret_cast<uint32_t*>(out + row * D + col) =
          pack_bf16x2(o[dt][2 * half] * inv, o[dt][2 * half + 1] * inv);
    }
    if ((lane & 3) == 0) a.lse[row] = l > 0.f ? (m + log2f(l)) * kLn2 : -INFINITY;
  }
}

template <int D>
cudaError_t launch_dim(const attn_fwd_args& a, int sm_count, cudaStream_t st) {
  const int G = a.d.Hq / a.d.Hkv;
  // 8 warps (128 stacked rows: K/V loaded once per 128 rows) when that still gives two waves of CTAs.
  const int64_t tiles8 = (int64_t(a.d.Tq) * G + 127) / 128;
  const int warps = (128 % G == 0 && tiles8 * a.d.Hkv >= 2 * int64_t(std::max(1, sm_count))) ? 8 : 4;
  const int RT = 16 * warps / G;
  const int64_t tiles = (a.d.Tq + RT - 1) / RT;
  if (tiles > INT32_MAX || a.d.Hkv > 65535) return cudaErrorInvalidConfiguration;
  const size_t smem = smem_bytes<D>(warps);
  const cudaError_t e =
      cudaFuncSetAttribute(fwd_structured_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (e != cudaSuccess) return e;
  fwd_structured_kernel<D><<<dim3(unsigned(tiles), unsigned(a.d.Hkv)), 32 * warps, smem, st>>>(a);
  return cudaGetLastError();
}

}  // namespace

int launch_attention_forward_structured(const attn_fwd_args& a, int sm_count, void* stream) {
  if (a.d.Tq == 0 || a.d.Hkv == 0) return 0;
  const auto st = static_cast<cudaStream_t>(stream);
  switch (a.d.D) {
    case 64: return int(launch_dim<64>(a, sm_count, st));
    case 128: return int(launch_dim<128>(a, sm_count, st));
  }
  return int(cudaErrorInvalidValue);
}

}  // namespace gsa::cuda::detail
