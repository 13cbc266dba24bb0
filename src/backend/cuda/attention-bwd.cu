// Backward of plan-driven GSA attention (contract: attention.h; work decomposition and the key-tile builder:
// attention-kernels.cuh). dq (Tq, Hq, D) +=, dk, dv (Tk, Hkv, D) += in type t; any may be null.
//
// Scheme: query-major, the forward's decomposition. A CTA (block, KV head, row tile) recomputes
// P = exp(q k^T / sqrt(D) - lse) for its stacked rows over the list's key tiles; D_i = rowsum(dout * out) once per
// row; dS = P * (dout v^T - D_i). dq of the CTA's rows is accumulated in registers and added to dq once (the rows
// belong to this CTA alone: deterministic). dk += scale * dS^T q and
// dv += P^T dout are added with atomics into scratch (Tk, Hkv, D), which attention.cpp zeroes before and
// bwd_add_kernel adds into dk / dv after. The scratch is f32 by default: the order of the atomics shows in the last
// bits. With attn_bwd_args::fixed (GSA_CUDA_DETERMINISTIC=1) it is int64 fixed point (acc_add4): integer sums do
// not depend on the order the CTAs add in, so dk / dv are the same bits on every run, at 4 scalar 64-bit atomics
// per 4 values instead of one vector f32 atomic. A key-major pass (an inverse plan: for each key tile the blocks
// that see it, dk / dv in registers, FlashAttention-2 style) would need
// neither; it is not built.
//
// bf16: the tensor-core kernel of attention-bwd-mma.cu. f32 (this file): CUDA cores in f32, W = 1..8 warps of 8
// stacked rows, key tiles of 32 keys, lane = key for scores and dk / dv, lane = feature for dq.
//
// Compiled variants here: D {64, 128} f32 backward (2 kernels) + 2 add kernels (bf16, f32).
#include <cuda_runtime.h>

#include <cmath>

#include "backend/cuda/attention-kernels.cuh"

namespace gsa::cuda::detail {
namespace {

constexpr int kKT = 32;  // keys per tile: lane = key
constexpr int kRW = 8;   // stacked rows per warp
constexpr int kMaxWarps = 8;

template <int D>
size_t bwd_smem_bytes(int warps) {
  constexpr int LD = D + 4;
  return (2 * size_t(kRW * warps) + 2 * kKT) * LD * 4 + size_t(warps) * kRW * kKT * 4 + (kKT + 4) * 4;
}

template <typename T, int D>
__global__ void __launch_bounds__(32 * kMaxWarps, 1) bwd_simt_kernel(const attn_bwd_args a) {
  constexpr int KT = kKT, RW = kRW, LD = D + 4, L4 = LD / 4, NI = D / 32;
  extern __shared__ float4 smem4[];
  const int W = blockDim.x / 32, M = RW * W, nthr = blockDim.x;
  float* Qs = reinterpret_cast<float*>(smem4);  // [M][LD] q
  float* Os = Qs + M * LD;                      // [M][LD] dout
  float* Ks = Os + M * LD;                      // [KT][LD]
  float* Vs = Ks + KT * LD;                     // [KT][LD]
  float* Ss = Vs + KT * LD;                     // [W][RW][KT] dS of each warp
  int32_t* kpos = reinterpret_cast<int32_t*>(Ss + W * RW * KT);
  int32_t* s_n = kpos + KT;

  const work_item w = get_work(a.p, a.d);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int Hq = a.d.Hq, Hkv = a.d.Hkv, q_offset = a.d.q_offset;
  const T* q = static_cast<const T*>(a.q);
  const T* k = static_cast<const T*>(a.k);
  const T* v = static_cast<const T*>(a.v);
  const T* dout = static_cast<const T*>(a.dout);
  const T* out = static_cast<const T*>(a.out);
  const float scale = rsqrtf(float(D)), sl2 = scale * kLog2e;
  const int tiles = (w.R * w.G + M - 1) / M;
  float* Sw = Ss + warp * RW * KT;
  const float4* Q4 = reinterpret_cast<const float4*>(Qs) + warp * RW * L4;
  const float4* O4 = reinterpret_cast<const float4*>(Os) + warp * RW * L4;
  const float4* K4 = reinterpret_cast<const float4*>(Ks) + lane * L4;
  const float4* V4 = reinterpret_cast<const float4*>(Vs) + lane * L4;

  for (int tile = blockIdx.z; tile < tiles; tile += gridDim.z) {
    const int s0 = tile * M;
    for (int e = tid; e < M * (D / 4); e += nthr) {
      const int s = e / (D / 4), c = e % (D / 4), sg = s0 + s, r = sg / w.G, g = sg % w.G;
      float4 qx = make_float4(0.f, 0.f, 0.f, 0.f), ox = qx;
      if (r < w.R) {
        const int64_t off = ((int64_t(w.row0) + r) * Hq + w.hk * w.G + g) * D + c * 4;
        qx = load4(q + off);
        ox = load4(dout + off);
      }
      reinterpret_cast<float4*>(Qs + s * LD)[c] = qx;
      reinterpret_cast<float4*>(Os + s * LD)[c] = ox;
    }
    __syncthreads();

    int32_t lim[RW];
    float lse2[RW], Di[RW], dq[RW][NI];
#pragma unroll
    for (int i = 0; i < RW; i++) {
      const int sg = s0 + warp * RW + i, r = sg / w.G, g = sg % w.G;
      lim[i] = row_limit(w, q_offset, sg);
      lse2[i] = INFINITY;  // p = exp2(x - inf) = 0: padding rows and rows that saw no key
      float di = 0.f;
      if (r < w.R) {
        const int64_t row = (int64_t(w.row0) + r) * Hq + w.hk * w.G + g;
        const float l = a.lse[row];
        if (l != -INFINITY) lse2[i] = l * kLog2e;
#pragma unroll
        for (int n = 0; n < NI; n++)
          di = fmaf(Os[(warp * RW + i) * LD + lane + 32 * n], to_f32(out[row * D + lane + 32 * n]), di);
      }
      Di[i] = warp_sum(di);
#pragma unroll
      for (int n = 0; n < NI; n++) dq[i][n] = 0.f;
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
      float p[RW], ds[RW];
#pragma unroll
      for (int i = 0; i < RW; i++) p[i] = ds[i] = 0.f;
#pragma unroll 2
      for (int c = 0; c < D / 4; c++) {
        const float4 kx = K4[c], vx = V4[c];
#pragma unroll
        for (int i = 0; i < RW; i++) {
          p[i] = dot4(Q4[i * L4 + c], kx, p[i]);
          ds[i] = dot4(O4[i * L4 + c], vx, ds[i]);
        }
      }
      bool any = false;
#pragma unroll
      for (int i = 0; i < RW; i++) {
        p[i] = pos <= lim[i] ? exp2f(p[i] * sl2 - lse2[i]) : 0.f;
        ds[i] = p[i] * (ds[i] - Di[i]);
        any |= p[i] != 0.f;
      }
      if (any && pos != kInvalidKey) {
        const int64_t kv_off = (int64_t(pos) * Hkv + w.hk) * D;
        if (a.dv_acc) {
          for (int c = 0; c < D / 4; c++) {
            float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
            for (int i = 0; i < RW; i++) {
              const float4 o = O4[i * L4 + c];
              x = make_float4(fmaf(p[i], o.x, x.x), fmaf(p[i], o.y, x.y), fmaf(p[i], o.z, x.z), fmaf(p[i], o.w, x.w));
            }
            acc_add4(a.dv_acc, kv_off + 4 * c, x, a.fixed, a.overflow);
          }
        }
        if (a.dk_acc) {
          for (int c = 0; c < D / 4; c++) {
            float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
            for (int i = 0; i < RW; i++) {
              const float4 qx = Q4[i * L4 + c];
              x = make_float4(fmaf(ds[i], qx.x, x.x), fmaf(ds[i], qx.y, x.y), fmaf(ds[i], qx.z, x.z),
                              fmaf(ds[i], qx.w, x.w));
            }
            acc_add4(a.dk_acc, kv_off + 4 * c, make_float4(x.x * scale, x.y * scale, x.z * scale, x.w * scale),
                     a.fixed, a.overflow);
          }
        }
      }
      if (a.dq) {
#pragma unroll
        for (int i = 0; i < RW; i++) Sw[i * KT + lane] = ds[i];
        __syncwarp();
#pragma unroll 4
        for (int j = 0; j < KT; j++) {
          float kk[NI];
#pragma unroll
          for (int n = 0; n < NI; n++) kk[n] = Ks[j * LD + lane + 32 * n];
#pragma unroll
          for (int i = 0; i < RW; i++) {
            const float x = Sw[i * KT + j];
#pragma unroll
            for (int n = 0; n < NI; n++) dq[i][n] = fmaf(x, kk[n], dq[i][n]);
          }
        }
      }
      __syncthreads();  // Ks, Vs, Ss and kpos are rewritten next iteration
    }

    if (a.dq) {
      T* dqp = static_cast<T*>(a.dq);
#pragma unroll
      for (int i = 0; i < RW; i++) {
        const int sg = s0 + warp * RW + i, r = sg / w.G, g = sg % w.G;
        if (r >= w.R) continue;
        const int64_t row = (int64_t(w.row0) + r) * Hq + w.hk * w.G + g;
#pragma unroll
        for (int n = 0; n < NI; n++) {
          T& x = dqp[row * D + lane + 32 * n];
          x = from_f32<T>(to_f32(x) + scale * dq[i][n]);
        }
      }
    }
    __syncthreads();  // Qs, Os, kpos and s_n are rewritten by the next row tile
  }
}

// dst[i] += src[i] (f32 scratch into type t).
template <typename T>
__global__ void bwd_add_kernel(T* dst, const float* src, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = from_f32<T>(to_f32(dst[i]) + src[i]);
}

// dst[i] += src[i] 2^-40 (fixed-point scratch into type t); NaN everywhere when a partial overflowed.
template <typename T>
__global__ void bwd_add_fixed_kernel(T* dst, const long long* src, int64_t n, const unsigned* overflow) {
  const bool bad = *overflow != 0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = from_f32<T>(bad ? NAN : to_f32(dst[i]) + __ll2float_rn(src[i]) * kFixInvScale);
}

template <typename T>
cudaError_t add_into(void* dst, const void* src, const attn_bwd_args& a, int64_t n, int sm_count, cudaStream_t st) {
  if (!dst || !src || n == 0) return cudaSuccess;
  const int64_t blocks = std::min<int64_t>((n + 255) / 256, int64_t(std::max(1, sm_count)) * 8);
  if (a.fixed)
    bwd_add_fixed_kernel<T><<<unsigned(blocks), 256, 0, st>>>(static_cast<T*>(dst),
                                                               static_cast<const long long*>(src), n, a.overflow);
  else
    bwd_add_kernel<T><<<unsigned(blocks), 256, 0, st>>>(static_cast<T*>(dst), static_cast<const float*>(src), n);
  return cudaGetLastError();
}

template <int D>
cudaError_t launch_simt(const attn_bwd_args& a, int sm_count, cudaStream_t st) {
  const int warps = warps_for(a.d, a.p, kRW, kMaxWarps);
  const size_t smem = bwd_smem_bytes<D>(warps);
  const cudaError_t e =
      cudaFuncSetAttribute(bwd_simt_kernel<float, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (e != cudaSuccess) return e;
  bwd_simt_kernel<float, D><<<attention_grid(a.d, a.p, kRW * warps, sm_count), 32 * warps, smem, st>>>(a);
  return cudaGetLastError();
}

template <typename T>
cudaError_t add_scratch(const attn_bwd_args& a, int sm_count, cudaStream_t st) {
  const int64_t n = int64_t(a.d.Tk) * a.d.Hkv * a.d.D;
  const cudaError_t e = add_into<T>(a.dk, a.dk_acc, a, n, sm_count, st);
  if (e != cudaSuccess) return e;
  return add_into<T>(a.dv, a.dv_acc, a, n, sm_count, st);
}

}  // namespace

int launch_attention_backward(const attn_bwd_args& a, int sm_count, void* stream) {
  if (a.p.n_blocks == 0 || a.p.max_block_rows == 0 || a.d.Hkv == 0) return 0;
  const auto st = static_cast<cudaStream_t>(stream);
  if (a.d.bf16) {
    int e = a.keymajor     ? launch_attention_backward_keymajor(a, sm_count, stream)
            : a.p.sblocks ? launch_attention_backward_structured(a, sm_count, stream)
                          : launch_attention_backward_mma(a, sm_count, stream);
    if (e == 0) e = launch_unfold_backward(a, sm_count, stream);  // the row unfold's keys, same scratch
    return e != 0 ? e : int(add_scratch<bf16>(a, sm_count, st));
  }
  cudaError_t e = cudaErrorInvalidValue;
  switch (a.d.D) {
    case 64: e = launch_simt<64>(a, sm_count, st); break;
    case 128: e = launch_simt<128>(a, sm_count, st); break;
  }
  return int(e != cudaSuccess ? e : add_scratch<float>(a, sm_count, st));
}

}  // namespace gsa::cuda::detail
