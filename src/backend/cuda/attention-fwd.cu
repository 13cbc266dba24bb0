// Forward kernels of plan-driven GSA attention (contract: attention.h; work decomposition and the key-tile builder:
// attention-kernels.cuh). Overwrites out (Tq, Hq, D) and lse (Tq, Hq, natural log); empty visibility -> 0 / -inf.
//
// bf16: fwd_mma_kernel. W = 1..4 warps (chosen per launch from the largest block: a 1-row block with G = 1 gets
// one warp), each owning 16 stacked rows of the row tile; key tiles of 64 keys are double-buffered in shared
// memory with cp.async (zero-filled for padding slots) while warp 0 builds the next tile's key positions.
// S = Q K^T and O += P V run on mma.sync m16n8k16 (bf16 in, f32 accumulate; Q fragments stay in registers,
// K through ldmatrix, V through ldmatrix.trans); causal/padding mask per key; one online softmax in the log2
// domain over all segments; P is rounded to bf16 for P V (as FlashAttention does).
// f32: fwd_simt_kernel, CUDA cores in f32 throughout (the path of the f32 whole-model check). W = 1..8 warps of 8
// stacked rows, key tiles of 32 keys (lane = key for scores, lane = feature for P V), converted to f32 in smem.
//
// Compiled variants: D {64, 128} x {fwd_mma_kernel (bf16), fwd_simt_kernel<float> (f32)}: 4 forward kernels.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "backend/cuda/attention-mma.cuh"

namespace gsa::cuda::detail {
namespace {

// ---- bf16 tensor-core kernel ---------------------------------------------------------------------------------

constexpr int kMmaKT = 64;      // keys per tile
constexpr int kMmaMaxWarps = 4;

template <int D>
__host__ __device__ constexpr int mma_ld() {
  return D + 8;  // bf16 per smem row: 16-byte rows for ldmatrix, 8 rows of a matrix hit distinct bank groups
}

template <int D>
size_t mma_smem_bytes(int warps) {
  constexpr int LD = mma_ld<D>();
  return (size_t(16 * warps) + 4 * kMmaKT) * LD * sizeof(bf16) + (2 * kMmaKT + 4) * sizeof(int32_t);
}

template <int D>
__global__ void __launch_bounds__(32 * kMmaMaxWarps) fwd_mma_kernel(const attn_fwd_args a) {
  constexpr int KT = kMmaKT, LD = mma_ld<D>(), DC = D / 8;  // DC: 16-byte chunks per row
  extern __shared__ __align__(16) unsigned char smem[];
  const int W = blockDim.x / 32, M = 16 * W, nthr = blockDim.x;
  bf16* Qs = reinterpret_cast<bf16*>(smem);  // [M][LD]
  bf16* Ks = Qs + M * LD;                    // [2][KT][LD]
  bf16* Vs = Ks + 2 * KT * LD;               // [2][KT][LD]
  int32_t* kpos = reinterpret_cast<int32_t*>(Vs + 2 * KT * LD);  // [2][KT]
  int32_t* s_n = kpos + 2 * KT;                                  // [2] keys in each buffer

  const work_item w = get_work(a.p, a.d);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int Hq = a.d.Hq, Hkv = a.d.Hkv, q_offset = a.d.q_offset;
  const bf16* q = static_cast<const bf16*>(a.q);
  const bf16* k = static_cast<const bf16*>(a.k);
  const bf16* v = static_cast<const bf16*>(a.v);
  bf16* out = static_cast<bf16*>(a.out);
  const float sl2 = rsqrtf(float(D)) * kLog2e;
  const int tiles = (w.R * w.G + M - 1) / M;

  for (int tile = blockIdx.z; tile < tiles; tile += gridDim.z) {
    const int s0 = tile * M;
    for (int e = tid; e < M * DC; e += nthr) {
      const int s = e / DC, c = e % DC, sg = s0 + s, r = sg / w.G, g = sg % w.G;
      uint4 val = make_uint4(0, 0, 0, 0);
      if (r < w.R)
        val = __ldg(reinterpret_cast<const uint4*>(q + ((int64_t(w.row0) + r) * Hq + w.hk * w.G + g) * D + c * 8));
      *reinterpret_cast<uint4*>(Qs + s * LD + c * 8) = val;
    }
    const int32_t key_end = tile_key_end(w, q_offset, s0, M);
    key_cursor cur{w.seg_begin, 0};
    if (warp == 0) s_n[0] = build_key_tile<KT>(cur, w.seg_end, a.p, key_end, kpos, lane);
    __syncthreads();

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
    if (s_n[0] > 0) issue(0);

    uint32_t qf[D / 16][4];
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++)
      ldmatrix_x4(qf[ks], Qs + (warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + ks * 16 + (lane >> 4) * 8);

    // This thread's two stacked rows: a = g, b = g + 8 of the warp's 16 (g = lane / 4).
    const int sa = s0 + warp * 16 + (lane >> 2), sb = sa + 8;
    const int32_t lim_a = row_limit(w, q_offset, sa), lim_b = row_limit(w, q_offset, sb);
    float o[D / 8][4];
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.f;
    float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.f, l_b = 0.f;

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
      float s[KT / 8][4];
      mma_scores<D, KT, LD>(s, qf, Kb, lane);
      float mx_a, mx_b;
      mask_scores<KT>(s, sl2, lane, [&](int j, int half) { return kp[j] <= (half ? lim_b : lim_a); }, mx_a, mx_b);
      online_softmax<D, KT>(s, o, mx_a, mx_b, m_a, m_b, l_a, l_b);
      mma_rows_times_keys<D, KT, LD>(o, s, Vb, lane);
      __syncthreads();  // buffer buf and kpos[buf] are rewritten next iteration
    }
    cp_async_wait<0>();

#pragma unroll
    for (int off = 1; off <= 2; off <<= 1) {
      l_a += __shfl_xor_sync(0xffffffffu, l_a, off);
      l_b += __shfl_xor_sync(0xffffffffu, l_b, off);
    }
#pragma unroll
    for (int half = 0; half < 2; half++) {
      const int sg = half ? sb : sa;
      const int r = sg / w.G, g = sg % w.G;
      if (r >= w.R) continue;
      const float l = half ? l_b : l_a, m = half ? m_b : m_a;
      const float inv = l > 0.f ? 1.f / l : 0.f;
      const int64_t row = (int64_t(w.row0) + r) * Hq + w.hk * w.G + g;
#pragma unroll
      for (int dt = 0; dt < D / 8; dt++) {
        const int col = dt * 8 + (lane & 3) * 2;
        *reinterpret_cast<uint32_t*>(out + row * D + col) =
            pack_bf16x2(o[dt][2 * half] * inv, o[dt][2 * half + 1] * inv);
      }
      if ((lane & 3) == 0) a.lse[row] = l > 0.f ? (m + log2f(l)) * kLn2 : -INFINITY;
    }
    __syncthreads();  // Qs, kpos[0] and s_n[0] are rewritten by the next row tile
  }
}

// ---- f32 CUDA-core kernel ------------------------------------------------------------------------------------

constexpr int kSimtKT = 32;  // keys per tile: lane = key
constexpr int kSimtRW = 8;   // stacked rows per warp
constexpr int kSimtMaxWarps = 8;

template <int D>
size_t simt_fwd_smem_bytes(int warps) {
  constexpr int LD = D + 4;  // floats per smem row: float4 rows, lane-per-row reads conflict-free
  return (size_t(kSimtRW * warps) + 2 * kSimtKT) * LD * 4 + size_t(warps) * kSimtRW * kSimtKT * 4 +
         (kSimtKT + 4) * 4;
}

template <typename T, int D>
__global__ void __launch_bounds__(32 * kSimtMaxWarps, 1) fwd_simt_kernel(const attn_fwd_args a) {
  constexpr int KT = kSimtKT, RW = kSimtRW, LD = D + 4, L4 = LD / 4, NI = D / 32;
  extern __shared__ float4 smem4[];
  const int W = blockDim.x / 32, M = RW * W, nthr = blockDim.x;
  float* Qs = reinterpret_cast<float*>(smem4);  // [M][LD], q * scale * log2(e)
  float* Ks = Qs + M * LD;                      // [KT][LD]
  float* Vs = Ks + KT * LD;                     // [KT][LD]
  float* Ps = Vs + KT * LD;                     // [W][RW][KT]
  int32_t* kpos = reinterpret_cast<int32_t*>(Ps + W * RW * KT);
  int32_t* s_n = kpos + KT;

  const work_item w = get_work(a.p, a.d);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int Hq = a.d.Hq, Hkv = a.d.Hkv, q_offset = a.d.q_offset;
  const T* q = static_cast<const T*>(a.q);
  const T* k = static_cast<const T*>(a.k);
  const T* v = static_cast<const T*>(a.v);
  T* out = static_cast<T*>(a.out);
  const float sl2 = rsqrtf(float(D)) * kLog2e;
  const int tiles = (w.R * w.G + M - 1) / M;
  float* Pw = Ps + warp * RW * KT;
  const float4* Q4 = reinterpret_cast<const float4*>(Qs) + warp * RW * L4;
  const float4* K4 = reinterpret_cast<const float4*>(Ks) + lane * L4;

  for (int tile = blockIdx.z; tile < tiles; tile += gridDim.z) {
    const int s0 = tile * M;
    for (int e = tid; e < M * (D / 4); e += nthr) {
      const int s = e / (D / 4), c = e % (D / 4), sg = s0 + s, r = sg / w.G, g = sg % w.G;
      float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
      if (r < w.R) {
        x = load4(q + ((int64_t(w.row0) + r) * Hq + w.hk * w.G + g) * D + c * 4);
        x = make_float4(x.x * sl2, x.y * sl2, x.z * sl2, x.w * sl2);
      }
      reinterpret_cast<float4*>(Qs + s * LD)[c] = x;
    }
    int32_t lim[RW];
    float m[RW], lp[RW], acc[RW][NI];
#pragma unroll
    for (int i = 0; i < RW; i++) {
      lim[i] = row_limit(w, q_offset, s0 + warp * RW + i);
      m[i] = -INFINITY;
      lp[i] = 0.f;
#pragma unroll
      for (int n = 0; n < NI; n++) acc[i][n] = 0.f;
    }
    const int32_t key_end = tile_key_end(w, q_offset, s0, M);
    key_cursor cur{w.seg_begin, 0};

    for (;;) {
      if (warp == 0) s_n[0] = build_key_tile<KT>(cur, w.seg_end, a.p, key_end, kpos, lane);
      __syncthreads();
      if (s_n[0] == 0) break;
      for (int e = tid; e < KT * (D / 4); e += nthr) {
        const int j = e / (D / 4), c = e % (D / 4);
        const int32_t pos = kpos[j];
        float4 kx = make_float4(0.f, 0.f, 0.f, 0.f), vx = kx;
        if (pos != kInvalidKey) {
          const int64_t off = (int64_t(pos) * Hkv + w.hk) * D + c * 4;
          kx = load4(k + off);
          vx = load4(v + off);
        }
        reinterpret_cast<float4*>(Ks + j * LD)[c] = kx;
        reinterpret_cast<float4*>(Vs + j * LD)[c] = vx;
      }
      __syncthreads();

      const int32_t pos = kpos[lane];
      float s[RW];
#pragma unroll
      for (int i = 0; i < RW; i++) s[i] = 0.f;
#pragma unroll 4
      for (int c = 0; c < D / 4; c++) {
        const float4 kx = K4[c];
#pragma unroll
        for (int i = 0; i < RW; i++) s[i] = dot4(Q4[i * L4 + c], kx, s[i]);
      }
#pragma unroll
      for (int i = 0; i < RW; i++) {
        const float x = pos <= lim[i] ? s[i] : -INFINITY;
        const float mn = fmaxf(m[i], warp_max(x));
        const float ref = mn == -INFINITY ? 0.f : mn;
        const float corr = exp2f(m[i] - ref);
        m[i] = mn;
        const float p = exp2f(x - ref);
        lp[i] = lp[i] * corr + p;
        Pw[i * KT + lane] = p;
#pragma unroll
        for (int n = 0; n < NI; n++) acc[i][n] *= corr;
      }
      __syncwarp();
#pragma unroll 4
      for (int j = 0; j < KT; j++) {
        float vv[NI];
#pragma unroll
        for (int n = 0; n < NI; n++) vv[n] = Vs[j * LD + lane + 32 * n];
#pragma unroll
        for (int i = 0; i < RW; i++) {
          const float p = Pw[i * KT + j];
#pragma unroll
          for (int n = 0; n < NI; n++) acc[i][n] = fmaf(p, vv[n], acc[i][n]);
        }
      }
      __syncthreads();  // Ks, Vs, Ps and kpos are rewritten next iteration
    }

#pragma unroll
    for (int i = 0; i < RW; i++) {
      const float l = warp_sum(lp[i]);
      const int sg = s0 + warp * RW + i, r = sg / w.G, g = sg % w.G;
      if (r >= w.R) continue;
      const float inv = l > 0.f ? 1.f / l : 0.f;
      const int64_t row = (int64_t(w.row0) + r) * Hq + w.hk * w.G + g;
#pragma unroll
      for (int n = 0; n < NI; n++) out[row * D + lane + 32 * n] = from_f32<T>(acc[i][n] * inv);
      if (lane == 0) a.lse[row] = l > 0.f ? (m[i] + log2f(l)) * kLn2 : -INFINITY;
    }
    __syncthreads();  // Qs, kpos and s_n are rewritten by the next row tile
  }
}

template <typename K>
cudaError_t launch(K kernel, dim3 grid, int warps, size_t smem, cudaStream_t st, const attn_fwd_args& a) {
  const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (e != cudaSuccess) return e;
  kernel<<<grid, 32 * warps, smem, st>>>(a);
  return cudaGetLastError();
}

template <int D>
cudaError_t launch_dim(const attn_fwd_args& a, int sm_count, cudaStream_t st) {
  if (a.d.bf16) {
    const int warps = warps_for(a.d, a.p, 16, kMmaMaxWarps);
    return launch(fwd_mma_kernel<D>, attention_grid(a.d, a.p, 16 * warps, sm_count), warps,
                  mma_smem_bytes<D>(warps), st, a);
  }
  const int warps = warps_for(a.d, a.p, kSimtRW, kSimtMaxWarps);
  return launch(fwd_simt_kernel<float, D>, attention_grid(a.d, a.p, kSimtRW * warps, sm_count), warps,
                simt_fwd_smem_bytes<D>(warps), st, a);
}

}  // namespace

int launch_attention_forward(const attn_fwd_args& a, int sm_count, void* stream) {
  if (a.p.n_blocks == 0 || a.p.max_block_rows == 0 || a.d.Hkv == 0) return 0;
  if (a.d.bf16 && a.p.sblocks) return launch_attention_forward_structured(a, sm_count, stream);
  const auto st = static_cast<cudaStream_t>(stream);
  switch (a.d.D) {
    case 32: return int(launch_dim<32>(a, sm_count, st));  // forward only (attention_supported)
    case 64: return int(launch_dim<64>(a, sm_count, st));
    case 128: return int(launch_dim<128>(a, sm_count, st));
  }
  return int(cudaErrorInvalidValue);
}

}  // namespace gsa::cuda::detail
