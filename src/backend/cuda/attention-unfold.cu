// The row-unfold overlay of plan-driven attention (backend/row-unfold.h), bf16 tensor cores: the keys each row
// unfolds on top of its plan list, attended without a per-row plan. The plan's kernels run first; these add the
// unfolded keys.
//
// Work decomposition: one warp owns 16 stacked rows of one KV head: RW = 16 / G query rows x their G heads
// (stacked row s = r G + g, as the plan kernels stack them; 16 - RW G padding rows stay masked). Warps are
// independent (a CTA only packs kUW of them): each walks the union of its RW rows' chunk lists, a warp-wide merge
// of sorted lists (lane r < RW holds row r's cursor; __reduce_min_sync picks the next chunk, a ballot says which
// rows hold it), packing the chunks' keys into tiles of KT keys with a per-key row mask. A row sees a key of the
// tile iff its bit is set: that is the only mask (every unfolded key precedes its row by the builder's contract).
// With several gist levels a chunk's level-0 gists follow its raw keys in the walk, with the bits of the rows whose
// lists lack them (unfold_view::gist_end / listed).
// Cost: the union of RW rows' selections, so rows that pick the same chunks share their K/V loads and mma work.
//
// Forward: S = Q K^T, online softmax, O += P V (the plan forward's fragment code), then the overlay's (O, lse_u)
// is merged into the plan's (out, lse): lse = log(e^lse_b + e^lse_u), out = out_b e^(lse_b - lse) + O e^(lse_u - lse).
// Backward (FlashAttention-2 style with the merged lse and D_i = rowsum(dO * out)): P, dS = P (dP - D_i) scale,
// dQ += dS K in registers (added to dq at the end: each (row, head) belongs to one warp), dV += P^T dO and
// dK += dS^T Q per 16-key x 64-column unit into the backward's scratch (grad_unit: f32 atomics or fixed point).
#include <cuda_runtime.h>

#include <cmath>

#include "backend/cuda/attention-mma.cuh"

namespace gsa::cuda::detail {
namespace {

constexpr int kUKT = 32;  // keys per tile (lane = key when packing)
constexpr int kUW = 4;    // warps per CTA (independent)

template <int D>
struct ucfg {
  static constexpr int LD = D + 8;     // bf16 per Q / dO / K / V smem row
  static constexpr int LP = kUKT + 8;  // bf16 per P / dS smem row
  // Per warp: Q, dO (16 rows), K, V (KT rows), P, dS (16 x LP), kpos, kmask.
  static constexpr size_t fwd_bytes = (size_t(16) + 2 * kUKT) * LD * 2 + kUKT * 8;
  static constexpr size_t bwd_bytes = (size_t(32) + 2 * kUKT) * LD * 2 + size_t(32) * LP * 2 + kUKT * 8;
};

// The union walk of one warp: the next tile's keys into kpos / kmask (row bits), kInvalidKey / 0 padding.
// Uniform control flow; returns the keys packed (0: every row's list is exhausted).
struct union_walk {
  int n = 0, i = 0;            // this lane's row: chunks, next index
  const int32_t* ids = nullptr;
  int32_t head = INT_MAX;      // this lane's next chunk (INT_MAX: none)
  int32_t lst0 = 0, lst1 = 0;  // this lane's row: the level-0 units its list holds (several gist levels)
  int32_t off = 0, end = 0;    // the chunk being packed (uniform): keys [off, end), its raw part up to raw_end
  int32_t raw_end = 0;
  uint32_t mask = 0, gmask = 0;  // rows that see the chunk's raw part / its level-0 gists (u.gist_end only)

  __device__ int next_tile(const unfold_view& u, int32_t* kpos, uint32_t* kmask, int lane) {
    int nk = 0;
    while (nk < kUKT) {
      if (off >= end) {
        const int32_t m = int32_t(__reduce_min_sync(0xffffffffu, unsigned(head)));
        if (m == INT_MAX) break;
        mask = __ballot_sync(0xffffffffu, head == m);
        gmask = u.gist_end ? __ballot_sync(0xffffffffu, head == m && !(m >= lst0 && m < lst1)) : 0u;
        if (head == m) {
          i++;
          head = i < n ? __ldg(ids + i) : INT_MAX;
        }
        off = __ldg(u.key_begin + m);
        raw_end = __ldg(u.key_end + m);
        end = gmask ? __ldg(u.gist_end + m) : raw_end;
        continue;
      }
      const int take = min(end - off, kUKT - nk);
      if (lane < take) {
        kpos[nk + lane] = off + lane;
        kmask[nk + lane] = off + lane < raw_end ? mask : gmask;
      }
      nk += take;
      off += take;
    }
    if (lane >= nk) {  // kUKT == 32: one slot per lane
      kpos[lane] = kInvalidKey;
      kmask[lane] = 0;
    }
    __syncwarp();
    return nk;
  }
};

static_assert(kUKT == 32, "the tile builder writes one key slot per lane");

// Warp setup shared by both kernels: the warp's rows, its cursor, and whether it has any unfolded key.
struct warp_rows {
  int G, RW, r0, hk;
  bool any;
};

__device__ inline warp_rows setup_rows(const attn_dims& d, const unfold_view& u, union_walk& wk, int lane) {
  warp_rows w;
  w.G = d.Hq / d.Hkv;
  w.RW = 16 / w.G;
  w.hk = blockIdx.y;
  w.r0 = (blockIdx.x * kUW + (threadIdx.x >> 5)) * w.RW;
  if (lane < w.RW && w.r0 + lane < d.Tq) {
    const int64_t li = int64_t(w.r0 + lane) * d.Hkv + w.hk;
    wk.n = __ldg(u.count + li);
    wk.ids = u.ids + li * u.cap;
    wk.head = wk.n > 0 ? __ldg(wk.ids) : INT_MAX;
    if (u.listed) {
      wk.lst0 = __ldg(u.listed + 2 * int64_t(w.r0 + lane));
      wk.lst1 = __ldg(u.listed + 2 * int64_t(w.r0 + lane) + 1);
    }
  }
  w.any = __ballot_sync(0xffffffffu, wk.n > 0) != 0;
  return w;
}

// Global index (row * Hq + head) of stacked row s, or -1 for a padding row.
__device__ inline int64_t stacked_index(const warp_rows& w, const attn_dims& d, int s) {
  const int r = s / w.G;
  if (r >= w.RW || w.r0 + r >= d.Tq) return -1;
  return int64_t(w.r0 + r) * d.Hq + w.hk * w.G + s % w.G;
}

// 16 stacked rows of x (Tq, Hq, D) into smem [16][LD] (zeros for padding rows).
template <int D, int LD>
__device__ inline void stage_rows(bf16* dst, const bf16* x, const warp_rows& w, const attn_dims& d, int lane) {
  for (int e = lane; e < 16 * (D / 8); e += 32) {
    const int s = e / (D / 8), c = e % (D / 8);
    const int64_t gi = stacked_index(w, d, s);
    uint4 val = make_uint4(0, 0, 0, 0);
    if (gi >= 0) val = __ldg(reinterpret_cast<const uint4*>(x + gi * D + c * 8));
    *reinterpret_cast<uint4*>(dst + s * LD + c * 8) = val;
  }
}

// K and V rows of the tile's keys (KV head hk) into smem, zero-filled padding; waits for them.
template <int D, int LD>
__device__ inline void load_kv(bf16* Ks, bf16* Vs, const bf16* k, const bf16* v, const int32_t* kpos, int hk,
                               int Hkv, int lane) {
  for (int e = lane; e < kUKT * (D / 8); e += 32) {
    const int j = e / (D / 8), c = e % (D / 8);
    const int32_t pos = kpos[j];
    const bool ok = pos != kInvalidKey;
    const int64_t off = ok ? (int64_t(pos) * Hkv + hk) * D + c * 8 : 0;
    cp_async16_zfill(Ks + j * LD + c * 8, k + off, ok);
    cp_async16_zfill(Vs + j * LD + c * 8, v + off, ok);
  }
  cp_async_commit();
  cp_async_wait<0>();
  __syncwarp();
}

// Row bit of stacked row s in the tile masks (0 for a padding row).
__device__ inline uint32_t row_bit(const warp_rows& w, const attn_dims& d, int s) {
  const int r = s / w.G;
  return r < w.RW && w.r0 + r < d.Tq ? 1u << r : 0u;
}

template <int D>
__global__ void __launch_bounds__(32 * kUW) unfold_fwd_kernel(const attn_fwd_args a) {
  using C = ucfg<D>;
  constexpr int KT = kUKT, LD = C::LD;
  extern __shared__ __align__(16) unsigned char smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  bf16* Qs = reinterpret_cast<bf16*>(smem + warp * C::fwd_bytes);  // [16][LD]
  bf16* Ks = Qs + 16 * LD;                                          // [KT][LD]
  bf16* Vs = Ks + KT * LD;                                          // [KT][LD]
  int32_t* kpos = reinterpret_cast<int32_t*>(Vs + KT * LD);         // [KT]
  uint32_t* kmask = reinterpret_cast<uint32_t*>(kpos + KT);         // [KT]

  union_walk wk;
  const warp_rows w = setup_rows(a.d, a.uf, wk, lane);
  if (!w.any) return;  // warps are independent: no CTA barrier below
  const bf16* k = static_cast<const bf16*>(a.k);
  const bf16* v = static_cast<const bf16*>(a.v);
  stage_rows<D, LD>(Qs, static_cast<const bf16*>(a.q), w, a.d, lane);
  __syncwarp();
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int ks = 0; ks < D / 16; ks++)
    ldmatrix_x4(qf[ks], Qs + ((lane & 7) + ((lane >> 3) & 1) * 8) * LD + ks * 16 + (lane >> 4) * 8);

  const int sa = lane >> 2, sb = sa + 8;
  const uint32_t bit_a = row_bit(w, a.d, sa), bit_b = row_bit(w, a.d, sb);
  const float sl2 = rsqrtf(float(D)) * kLog2e;
  float o[D / 8][4];
#pragma unroll
  for (int dt = 0; dt < D / 8; dt++) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.f;
  float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.f, l_b = 0.f;

  while (wk.next_tile(a.uf, kpos, kmask, lane) > 0) {
    load_kv<D, LD>(Ks, Vs, k, v, kpos, w.hk, a.d.Hkv, lane);
    float s[KT / 8][4];
    mma_scores<D, KT, LD>(s, qf, Ks, lane);
    float mx_a, mx_b;
    mask_scores<KT>(s, sl2, lane, [&](int j, int half) { return (kmask[j] & (half ? bit_b : bit_a)) != 0; }, mx_a,
                    mx_b);
    online_softmax<D, KT>(s, o, mx_a, mx_b, m_a, m_b, l_a, l_b);
    mma_rows_times_keys<D, KT, LD>(o, s, Vs, lane);
    __syncwarp();  // Ks, Vs, kpos and kmask are rewritten by the next tile
  }

#pragma unroll
  for (int off = 1; off <= 2; off <<= 1) {
    l_a += __shfl_xor_sync(0xffffffffu, l_a, off);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, off);
  }
  // Merge into the plan's result. The quad's lanes read the base lse before lane 0 of the quad rewrites it.
  bf16* out = static_cast<bf16*>(a.out);
  const int64_t gi_a = stacked_index(w, a.d, sa), gi_b = stacked_index(w, a.d, sb);
  const float lb_a = gi_a >= 0 ? a.lse[gi_a] : -INFINITY, lb_b = gi_b >= 0 ? a.lse[gi_b] : -INFINITY;
  __syncwarp();
#pragma unroll
  for (int half = 0; half < 2; half++) {
    const int64_t gi = half ? gi_b : gi_a;
    const float l = half ? l_b : l_a;
    if (gi < 0 || !(l > 0.f)) continue;  // padding row, or no unfolded key for this row
    const float lse_u = ((half ? m_b : m_a) + log2f(l)) * kLn2, lse_b = half ? lb_b : lb_a;
    const float mx = fmaxf(lse_b, lse_u);
    const float wb = expf(lse_b - mx), wu = expf(lse_u - mx), tot = wb + wu;
    const float fb = wb / tot, fu = wu / (tot * l);
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) {
      uint32_t* p = reinterpret_cast<uint32_t*>(out + gi * D + dt * 8 + (lane & 3) * 2);
      const uint32_t ob = *p;
      *p = pack_bf16x2(__uint_as_float(ob << 16) * fb + o[dt][2 * half] * fu,
                       __uint_as_float(ob & 0xffff0000u) * fb + o[dt][2 * half + 1] * fu);
    }
    if ((lane & 3) == 0) a.lse[gi] = mx + logf(tot);
  }
}

template <int D>
__global__ void __launch_bounds__(32 * kUW) unfold_bwd_kernel(const attn_bwd_args a) {
  using C = ucfg<D>;
  constexpr int KT = kUKT, LD = C::LD, LP = C::LP;
  extern __shared__ __align__(16) unsigned char smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  bf16* Qs = reinterpret_cast<bf16*>(smem + warp * C::bwd_bytes);  // [16][LD]
  bf16* Os = Qs + 16 * LD;                                          // [16][LD] dout
  bf16* Ks = Os + 16 * LD;                                          // [KT][LD]
  bf16* Vs = Ks + KT * LD;                                          // [KT][LD]
  bf16* Ps = Vs + KT * LD;                                          // [16][LP]
  bf16* dSs = Ps + 16 * LP;                                         // [16][LP]
  int32_t* kpos = reinterpret_cast<int32_t*>(dSs + 16 * LP);        // [KT]
  uint32_t* kmask = reinterpret_cast<uint32_t*>(kpos + KT);         // [KT]

  union_walk wk;
  const warp_rows w = setup_rows(a.d, a.uf, wk, lane);
  if (!w.any) return;
  const int Hkv = a.d.Hkv, g4 = lane >> 2, c4 = lane & 3;
  const bf16* k = static_cast<const bf16*>(a.k);
  const bf16* v = static_cast<const bf16*>(a.v);
  const bf16* out = static_cast<const bf16*>(a.out);
  stage_rows<D, LD>(Qs, static_cast<const bf16*>(a.q), w, a.d, lane);
  stage_rows<D, LD>(Os, static_cast<const bf16*>(a.dout), w, a.d, lane);
  __syncwarp();

  const int sa = g4, sb = g4 + 8;
  const uint32_t bit_a = row_bit(w, a.d, sa), bit_b = row_bit(w, a.d, sb);
  const float scale = rsqrtf(float(D)), sl2 = scale * kLog2e;
  float lse_a = INFINITY, lse_b = INFINITY, di_a = 0.f, di_b = 0.f;
#pragma unroll
  for (int half = 0; half < 2; half++) {
    const int sg = half ? sb : sa;
    const int64_t gi = stacked_index(w, a.d, sg);
    float di = 0.f, l2 = INFINITY;
    if (gi >= 0) {
      di = di_part<D>(out + gi * D, Os + sg * LD, c4);
      const float l = __ldg(a.lse + gi);
      l2 = l == -INFINITY ? INFINITY : l * kLog2e;
    }
    (half ? di_b : di_a) = quad_sum(di);
    (half ? lse_b : lse_a) = l2;
  }

  float dq[D / 8][4];
#pragma unroll
  for (int dt = 0; dt < D / 8; dt++) dq[dt][0] = dq[dt][1] = dq[dt][2] = dq[dt][3] = 0.f;
  const bf16* Qw = Qs + ((lane & 7) + ((lane >> 3) & 1) * 8) * LD + (lane >> 4) * 8;  // A fragments
  const bf16* Ow = Os + ((lane & 7) + ((lane >> 3) & 1) * 8) * LD + (lane >> 4) * 8;

  while (wk.next_tile(a.uf, kpos, kmask, lane) > 0) {
    load_kv<D, LD>(Ks, Vs, k, v, kpos, w.hk, Hkv, lane);
    float s[KT / 8][4], dp[KT / 8][4];
    mma_scores_dp<D, KT, LD>(s, dp, Qw, Ow, Ks, Vs, lane);
    probs_and_ds<KT>(s, dp, sl2, scale, lse_a, lse_b, di_a, di_b, lane,
                     [&](int j, int half) { return (kmask[j] & (half ? bit_b : bit_a)) != 0; });
    if (a.dq) mma_rows_times_keys<D, KT, LD>(dq, dp, Ks, lane);
    stage_p_ds<KT, LP>(Ps + g4 * LP + c4 * 2, dSs + g4 * LP + c4 * 2, s, dp);
    __syncwarp();
    for (int u = 0; u < (KT / 16) * (D / 64); u++) {
      const int kg = u % (KT / 16), cg = u / (KT / 16);
      if (a.dv_acc) grad_unit<D, LD, LP>(Ps, Os, 16, kg, cg, kpos, a.dv_acc, a.fixed, a.overflow, w.hk, Hkv, lane);
      if (a.dk_acc) grad_unit<D, LD, LP>(dSs, Qs, 16, kg, cg, kpos, a.dk_acc, a.fixed, a.overflow, w.hk, Hkv, lane);
    }
    __syncwarp();  // Ks, Vs, Ps, dSs, kpos and kmask are rewritten by the next tile
  }

  if (a.dq) {
    bf16* dqp = static_cast<bf16*>(a.dq);
#pragma unroll
    for (int half = 0; half < 2; half++) {
      const int64_t gi = stacked_index(w, a.d, half ? sb : sa);
      if (gi >= 0) add_dq_row<D>(dqp + gi * D, dq, half, c4);
    }
  }
}

template <class K, class A>
cudaError_t launch_overlay(K kernel, size_t warp_bytes, const A& a, cudaStream_t st) {
  const int G = a.d.Hq / a.d.Hkv, RW = 16 / G;
  const int64_t warps = (int64_t(a.d.Tq) + RW - 1) / RW;
  const int64_t ctas = (warps + kUW - 1) / kUW;
  if (ctas == 0) return cudaSuccess;
  const size_t smem = warp_bytes * kUW;
  const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (e != cudaSuccess) return e;
  kernel<<<dim3(unsigned(ctas), unsigned(a.d.Hkv)), 32 * kUW, smem, st>>>(a);
  return cudaGetLastError();
}

}  // namespace

int launch_unfold_forward(const attn_fwd_args& a, int, void* stream) {
  if (a.uf.cap <= 0 || a.d.Tq == 0) return 0;
  const auto st = static_cast<cudaStream_t>(stream);
  switch (a.d.D) {
    case 32: return int(launch_overlay(unfold_fwd_kernel<32>, ucfg<32>::fwd_bytes, a, st));  // forward only
    case 64: return int(launch_overlay(unfold_fwd_kernel<64>, ucfg<64>::fwd_bytes, a, st));
    case 128: return int(launch_overlay(unfold_fwd_kernel<128>, ucfg<128>::fwd_bytes, a, st));
  }
  return int(cudaErrorInvalidValue);
}

int launch_unfold_backward(const attn_bwd_args& a, int, void* stream) {
  if (a.uf.cap <= 0 || a.d.Tq == 0) return 0;
  const auto st = static_cast<cudaStream_t>(stream);
  switch (a.d.D) {
    case 64: return int(launch_overlay(unfold_bwd_kernel<64>, ucfg<64>::bwd_bytes, a, st));
    case 128: return int(launch_overlay(unfold_bwd_kernel<128>, ucfg<128>::bwd_bytes, a, st));
  }
  return int(cudaErrorInvalidValue);
}

}  // namespace gsa::cuda::detail
