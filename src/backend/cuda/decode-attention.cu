// Kernels of the gathered-key decode attention (contract and layouts: decode-attention.h; workspace:
// decode-kernels.h).
//
// Split kernel: grid (B*Hkv lists, S splits), 128 threads. One block serves all G = Hq/Hkv query heads of its
// KV head, so each gathered K/V row is read from memory once for the whole group. A row of D elements is read
// by L = D*sizeof(T)/16 lanes with one 16-byte load each; a warp holds 32/L such lane groups, and each group
// keeps U keys' K and V loads in flight before using them (memory-level parallelism is what decode needs).
// Every lane group runs its own online softmax (in log2 units) over its keys; the groups of a block are merged
// through shared memory at the end. With S == 1 the block normalizes and writes out/lse itself; otherwise it
// writes an unnormalized partial and decode_combine_kernel merges the S partials of each (b, hq).
//
// Compiled variants: T in {float, bf16} x D in {32, 64, 128} x G in {1, 2, 3, 4, 6, 7, 8} x load path {cp.async
// ring, registers}; combine: D in {32, 64, 128}.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cmath>

#include "backend/cuda/attention-kernels.cuh"  // async copies, ldmatrix, mma.sync, kLog2e / kLn2
#include "backend/cuda/decode-kernels.h"

namespace gsa::cuda::detail {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;

struct split_args {
  decode_params p;
  int num_splits;
  int64_t keys_per_split;
  float* ws_acc;  // null when num_splits == 1
  float* ws_ml;
  bool async_copy;
};

// 16 bytes of T widened to f32.
template <typename T>
struct vec16;
template <>
struct vec16<float> {
  static constexpr int n = 4;
  __device__ static void widen(const uint4& w, float* f) {
    f[0] = __uint_as_float(w.x);
    f[1] = __uint_as_float(w.y);
    f[2] = __uint_as_float(w.z);
    f[3] = __uint_as_float(w.w);
  }
};
template <>
struct vec16<__nv_bfloat16> {
  static constexpr int n = 8;
  __device__ static void widen(const uint4& w, float* f) {
    const uint32_t u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {  // element 2i sits in the low half (little endian)
      f[2 * i] = __uint_as_float(u[i] << 16);
      f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
    }
  }
};

__device__ inline void store_out(void* out, int64_t off, float x, decode_dtype t) {
  if (t == decode_dtype::f32)
    static_cast<float*>(out)[off] = x;
  else
    static_cast<__nv_bfloat16*>(out)[off] = __float2bfloat16_rn(x);
}

// Where sequence b's query, output, K/V pool and lists are: its decode_seq, or the launch-wide fields at b's
// offsets.
__device__ inline decode_seq seq_of(const decode_params& p, int b) {
  if (p.seqs) return p.seqs[b];
  const size_t qe = p.kv_dtype == decode_dtype::f32 ? 4 : 2, oe = p.out_dtype == decode_dtype::f32 ? 4 : 2;
  return decode_seq{static_cast<const char*>(p.q) + int64_t(b) * p.q_stride_b * qe,
                    static_cast<char*>(p.out) + int64_t(b) * p.o_stride_b * oe,
                    p.k, p.v, p.indptr, p.indices, p.shared, p.n_shared, p.host_k};
}

// The list a split block serves (grid (B*Hkv lists, splits)): sequence b, KV head h, the sequence's pointers, and
// keys [s0, s1) of the list (the shared prefix's ns keys first, then indices[beg ..]).
struct split_span {
  int b, h;
  decode_seq sv;
  int64_t beg, ns, s0, s1;
};
__device__ inline split_span span_of(const split_args& a) {
  const decode_params& p = a.p;
  const int list = blockIdx.x;
  split_span r;
  r.b = list / p.n_kv_heads;
  r.h = list % p.n_kv_heads;
  r.sv = seq_of(p, r.b);
  const int at = p.seqs ? r.h : list;  // the list's index into its indptr
  r.beg = r.sv.indptr[at];
  r.ns = r.sv.n_shared;
  const int64_t len = r.ns + r.sv.indptr[at + 1] - r.beg;
  r.s0 = int64_t(blockIdx.y) * a.keys_per_split;
  r.s1 = min(len, r.s0 + a.keys_per_split);
  return r;
}

// The end of a split block: NG partial states (max and sum in log2 units, unnormalized acc) of each of its G
// query heads, in shared memory as m[r][g], l[r][g], acc[r][g][D] (r < NG), merged into the block's result:
// out / lse when the launch has one split, else the block's partial in the workspace. The caller has synchronized
// after writing them; w, fm, fl are scratch ([NG][G], [G], [G]).
template <int D>
__device__ void merge_write(const split_args& a, const decode_seq& sv, int b, int h, int G, int NG, int split,
                            const float* sm_m, const float* sm_l, const float* sm_acc, float* sm_w, float* sm_fm,
                            float* sm_fl) {
  const decode_params& p = a.p;
  if (threadIdx.x < G) {
    const int g = threadIdx.x;
    float mx = -INFINITY;
    for (int r = 0; r < NG; r++) mx = fmaxf(mx, sm_m[r * G + g]);
    const float mref = mx == -INFINITY ? 0.f : mx;
    float sum = 0.f;
    for (int r = 0; r < NG; r++) {
      const float w = exp2f(sm_m[r * G + g] - mref);  // 0 for a state that saw no key
      sm_w[r * G + g] = w;
      sum += w * sm_l[r * G + g];
    }
    sm_fm[g] = mx;
    sm_fl[g] = sum;
  }
  __syncthreads();

  const int Hq = p.n_q_heads;
  for (int e = threadIdx.x; e < G * D; e += blockDim.x) {
    const int g = e / D, d = e % D;
    float x = 0.f;
#pragma unroll 4
    for (int r = 0; r < NG; r++) x = fmaf(sm_w[r * G + g], sm_acc[(r * G + g) * D + d], x);
    const int hq = h * G + g;
    if (a.num_splits == 1) {
      const float sum = sm_fl[g];
      store_out(sv.out, int64_t(hq) * p.o_stride_h + d, sum > 0.f ? x / sum : 0.f, p.out_dtype);
      if (d == 0 && p.lse)
        p.lse[int64_t(b) * p.lse_stride_b + hq] = sum > 0.f ? (sm_fm[g] + log2f(sum)) * kLn2 : -INFINITY;
    } else {
      const int64_t row = (int64_t(b) * Hq + hq) * a.num_splits + split;
      a.ws_acc[row * D + d] = x;
      if (d == 0) {
        a.ws_ml[row * 2] = sm_fm[g];
        a.ws_ml[row * 2 + 1] = sm_fl[g];
      }
    }
  }
}

// ASYNC: K/V rows go through a ST-stage cp.async ring in shared memory instead of registers, so more keys are
// in flight per thread at lower register cost. Each lane copies and later reads only its own 16-byte slots, so
// the ring needs cp.async.wait_group but no barrier.
template <typename T, int D, int G, bool ASYNC>
__global__ void __launch_bounds__(kThreads) decode_split_kernel(const split_args a) {
  constexpr int VEC = vec16<T>::n;
  constexpr int L = D / VEC;        // lanes per key row
  constexpr int GPW = 32 / L;       // lane groups per warp
  constexpr int NG = kWarps * GPW;  // lane groups per block
  constexpr int U = ASYNC ? 2 : 4;  // keys per lane group per iteration
  constexpr int ST = 4;             // ring stages (ASYNC): ST*U keys in flight per lane group
  static_assert(L >= 1 && L <= 32 && 32 % L == 0, "row must split evenly over a warp");

  // The ring and the merge buffers are never live at once: one raw buffer, two views.
  struct merge_smem {
    float m[NG][G], l[NG][G], acc[NG][G][D], w[NG][G], fm[G], fl[G];
  };
  constexpr size_t ring_bytes = ASYNC ? size_t(ST) * U * kThreads * 16 * 2 : 16;
  constexpr size_t raw_bytes = sizeof(merge_smem) > ring_bytes ? sizeof(merge_smem) : ring_bytes;
  __shared__ __align__(16) unsigned char smem_raw[raw_bytes];
  merge_smem& ms = *reinterpret_cast<merge_smem*>(smem_raw);
  auto& sm_m = ms.m;
  auto& sm_l = ms.l;
  auto& sm_acc = ms.acc;
  auto& sm_w = ms.w;
  auto& sm_fm = ms.fm;
  auto& sm_fl = ms.fl;
  uint4* ring_k = reinterpret_cast<uint4*>(smem_raw);  // [ST][U][kThreads]
  uint4* ring_v = ring_k + ST * U * kThreads;

  const decode_params& p = a.p;
  const split_span sp = span_of(a);
  const int b = sp.b, h = sp.h, split = blockIdx.y;
  const decode_seq& sv = sp.sv;
  const int64_t beg = sp.beg, ns = sp.ns, s0 = sp.s0, s1 = sp.s1;

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int gl = lane % L;                       // lane within its group: which 16 bytes of the row
  const int grp = warp * GPW + lane / L;

  // q of the G heads, pre-scaled so that scores come out in log2 units.
  float qf[G][VEC];
  const T* q = static_cast<const T*>(sv.q) + gl * VEC;
  const float qs = p.scale * kLog2e;
#pragma unroll
  for (int g = 0; g < G; g++) {
    uint4 w = *reinterpret_cast<const uint4*>(q + int64_t(h * G + g) * p.q_stride_h);
    vec16<T>::widen(w, qf[g]);
#pragma unroll
    for (int i = 0; i < VEC; i++) qf[g][i] *= qs;
  }

  float m[G], l[G], acc[G][VEC];
#pragma unroll
  for (int g = 0; g < G; g++) {
    m[g] = -INFINITY;
    l[g] = 0.f;
#pragma unroll
    for (int i = 0; i < VEC; i++) acc[g][i] = 0.f;
  }

  const int64_t row0 = !p.seqs && p.kv_row_offset ? p.kv_row_offset[b] : 0;
  const int64_t head_off = row0 * p.kv_stride_t + int64_t(h) * p.kv_stride_h + gl * VEC;
  const T* kb = static_cast<const T*>(sv.k) + head_off;
  const T* vb = static_cast<const T*>(sv.v) + head_off;
  // Rows >= kv_host_row0 are off the device (host_k); the offsets below are from kb, V at vb - kb further.
  const int64_t host_off = sv.host_k ? (static_cast<const T*>(sv.host_k) + head_off) - kb : 0;
  const int64_t v_off = vb - kb;
  auto key_at = [&](int32_t row) -> const T* {
    return row >= kv_host_row0 ? kb + host_off + int64_t(row - kv_host_row0) * p.kv_stride_t
                            : kb + int64_t(row) * p.kv_stride_t;
  };
  const int32_t* idx = sv.indices + beg - ns;  // key j >= ns of the list; j < ns: the shared prefix
  const int32_t* shared = sv.shared;
  auto row_of = [&](int64_t j) { return j < ns ? __ldg(shared + j) : __ldg(idx + j); };

  // The loop bound is uniform across the warp (shuffles below need every lane); lane groups past the end
  // of the split see only invalid keys.
  const int64_t step = int64_t(NG) * U;
  const int64_t jw_first = s0 + int64_t(warp) * GPW * U;
  const int64_t my_off = int64_t(lane / L) * U;
  // ASYNC prologue: stages 0..ST-2 in flight; nidx holds the indices of the next batch to issue.
  int32_t nidx[U];
  auto load_idx = [&](int64_t jw) {
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int64_t j = jw + my_off + u;
      nidx[u] = j < s1 ? row_of(j) : 0;
    }
  };
  auto issue = [&](int64_t jw, int stage) {  // copies batch jw (indices already in nidx) into ring stage
#pragma unroll
    for (int u = 0; u < U; u++)
      if (jw + my_off + u < s1) {
        const T* kr = key_at(nidx[u]);
        cp_async16_zfill(ring_k + (stage * U + u) * kThreads + threadIdx.x, kr, true);
        cp_async16_zfill(ring_v + (stage * U + u) * kThreads + threadIdx.x, kr + v_off, true);
      }
    cp_async_commit();
  };
  if constexpr (ASYNC) {
#pragma unroll
    for (int st = 0; st < ST - 1; st++) {
      load_idx(jw_first + st * step);
      issue(jw_first + st * step, st);
    }
    load_idx(jw_first + (ST - 1) * step);
  }
  int it = 0;
  for (int64_t jw = jw_first; jw < s1; jw += step, it++) {
    const int64_t j0 = jw + my_off;
    uint4 kw[U], vw[U];
    bool valid[U];
    if constexpr (ASYNC) {
      issue(jw + (ST - 1) * step, (it + ST - 1) % ST);
      load_idx(jw + ST * step);
      cp_async_wait<ST - 1>();  // this iteration's group is complete
      const int stage = it % ST;
#pragma unroll
      for (int u = 0; u < U; u++) {
        valid[u] = j0 + u < s1;
        kw[u] = vw[u] = make_uint4(0, 0, 0, 0);
        if (valid[u]) {  // an invalid slot holds stale bytes: never read it
          kw[u] = ring_k[(stage * U + u) * kThreads + threadIdx.x];
          vw[u] = ring_v[(stage * U + u) * kThreads + threadIdx.x];
        }
      }
    } else {
#pragma unroll
      for (int u = 0; u < U; u++) {
        valid[u] = j0 + u < s1;
        kw[u] = vw[u] = make_uint4(0, 0, 0, 0);
        if (valid[u]) {
          const T* kr = key_at(row_of(j0 + u));
          kw[u] = __ldg(reinterpret_cast<const uint4*>(kr));
          vw[u] = __ldg(reinterpret_cast<const uint4*>(kr + v_off));
        }
      }
    }
    float s[U][G];
#pragma unroll
    for (int u = 0; u < U; u++) {
      float kf[VEC];
      vec16<T>::widen(kw[u], kf);
#pragma unroll
      for (int g = 0; g < G; g++) {
        float d = 0.f;
#pragma unroll
        for (int i = 0; i < VEC; i++) d = fmaf(qf[g][i], kf[i], d);
        s[u][g] = d;
      }
    }
#pragma unroll
    for (int off = L / 2; off > 0; off >>= 1)
#pragma unroll
      for (int u = 0; u < U; u++)
#pragma unroll
        for (int g = 0; g < G; g++) s[u][g] += __shfl_xor_sync(0xffffffffu, s[u][g], off);
#pragma unroll
    for (int u = 0; u < U; u++)
      if (!valid[u])
#pragma unroll
        for (int g = 0; g < G; g++) s[u][g] = -INFINITY;

    float pw[U][G];
#pragma unroll
    for (int g = 0; g < G; g++) {
      float mn = m[g];
#pragma unroll
      for (int u = 0; u < U; u++) mn = fmaxf(mn, s[u][g]);
      const float mref = mn == -INFINITY ? 0.f : mn;  // all invalid so far: keep the state at zero
      const float corr = exp2f(m[g] - mref);
      float ps = 0.f;
#pragma unroll
      for (int u = 0; u < U; u++) {
        pw[u][g] = exp2f(s[u][g] - mref);
        ps += pw[u][g];
      }
      l[g] = l[g] * corr + ps;
      m[g] = mn;
#pragma unroll
      for (int i = 0; i < VEC; i++) acc[g][i] *= corr;
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
      float vf[VEC];
      vec16<T>::widen(vw[u], vf);
#pragma unroll
      for (int g = 0; g < G; g++)
#pragma unroll
        for (int i = 0; i < VEC; i++) acc[g][i] = fmaf(pw[u][g], vf[i], acc[g][i]);
    }
  }

  if constexpr (ASYNC) cp_async_wait<0>();  // copies of batches past the end are empty groups
  __syncthreads();  // the merge view aliases the ring that other warps may still read
  // Hand the lane groups' states to the block merge.
#pragma unroll
  for (int g = 0; g < G; g++) {
    if (gl == 0) {
      sm_m[grp][g] = m[g];
      sm_l[grp][g] = l[g];
    }
#pragma unroll
    for (int i = 0; i < VEC; i++) sm_acc[grp][g][gl * VEC + i] = acc[g][i];
  }
  __syncthreads();
  merge_write<D>(a, sv, b, h, G, NG, split, &sm_m[0][0], &sm_l[0][0], &sm_acc[0][0][0], &sm_w[0][0], sm_fm, sm_fl);
}

// Tensor-core split kernel (bf16 K/V, D 64 or 128, any group G <= 8; the plan picks it, decode_plan::tensor_cores).
// Same grid, split and partial contract as decode_split_kernel; each of the 4 warps walks its own tiles of 16
// keys (warp w takes tiles w, w + 4, ... of the split), copied by cp.async into a per-warp ring of MMA_ST stages
// (16-byte chunks XOR-swizzled by row so that ldmatrix reads are conflict-free). Keys are the M dimension and the
// G query heads (padded to 8) the N dimension of mma.m16n8k16:
//   S^T (16 keys x 8 heads) = K (16 x D) . Q^T (D x 8)     K from ldmatrix, Q^T held in registers
//   O^T (D x 8 heads)     += V^T (D x 16) . P^T (16 x 8)    V^T from ldmatrix.trans, P^T from S^T by movmatrix
// P is split into three bf16 parts (p = p1 + p2 + p3 exactly) and multiplied three times, so the weights keep
// f32 precision (one bf16 P would cost ~1e-3 relative error); the products accumulate in f32. Each lane owns two
// heads (2 (lane % 4), + 1) of the online softmax; its running sum covers only its own keys and is reduced over
// the 8 lanes that share those heads at the end.
constexpr int kMmaKeys = 16;  // keys per warp tile
constexpr int kMmaStages = 3;

template <int D>
constexpr size_t mma_ring_bytes() {
  return size_t(kWarps) * kMmaStages * 2 * kMmaKeys * D * sizeof(__nv_bfloat16);
}
template <int D>
constexpr size_t mma_merge_bytes() {
  return sizeof(float) * (size_t(kWarps) * 8 * 3 + 16 + size_t(kWarps) * 8 * D);
}
template <int D>
constexpr size_t mma_smem_bytes() {
  return mma_ring_bytes<D>() > mma_merge_bytes<D>() ? mma_ring_bytes<D>() : mma_merge_bytes<D>();
}

// The 8x8 b16 matrix whose row lane/4, columns 2 (lane % 4) and + 1 this lane holds, transposed (same layout).
__device__ inline uint32_t transpose8x8(uint32_t x) {
  uint32_t y;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
  return y;
}
// Two floats rounded to bf16 (lo in the low half), and what the rounding left of each.
__device__ inline uint32_t split_bf16x2(float& lo, float& hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  lo -= __low2float(v);
  hi -= __high2float(v);
  return *reinterpret_cast<const uint32_t*>(&v);
}

template <int D>
__global__ void __launch_bounds__(kThreads) decode_mma_kernel(const split_args a) {
  using T = __nv_bfloat16;
  constexpr int CPR = D / 8;                   // 16-byte chunks per row
  constexpr int TILE = kMmaKeys * D;           // elements of one K (or V) tile
  constexpr int CPL = kMmaKeys * CPR / 32;     // chunks each lane copies per tile (and per K / V)
  constexpr int DT = D / 16;                   // k-steps of S, m-tiles of O
  extern __shared__ __align__(16) unsigned char smem_raw[];

  const decode_params& p = a.p;
  const int G = p.n_q_heads / p.n_kv_heads;
  const split_span sp = span_of(a);
  const int b = sp.b, h = sp.h, split = blockIdx.y;
  const decode_seq& sv = sp.sv;
  const int64_t beg = sp.beg, ns = sp.ns, s0 = sp.s0, s1 = sp.s1;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  T* ring = reinterpret_cast<T*>(smem_raw) + size_t(warp) * kMmaStages * 2 * TILE;  // [stage][K, V][16][D]

  // Q^T as the B operand: qb[t][0] = q[head lane/4][16 t + 2 (lane % 4) .. + 1], qb[t][1] the same 8 further;
  // heads past G are zero.
  uint32_t qb[DT][2];
  {
    const int qh = lane >> 2;
    const T* q = static_cast<const T*>(sv.q) + int64_t(h * G + min(qh, G - 1)) * p.q_stride_h + 2 * (lane & 3);
#pragma unroll
    for (int t = 0; t < DT; t++) {
      qb[t][0] = qh < G ? *reinterpret_cast<const uint32_t*>(q + 16 * t) : 0u;
      qb[t][1] = qh < G ? *reinterpret_cast<const uint32_t*>(q + 16 * t + 8) : 0u;
    }
  }

  const int64_t row0 = !p.seqs && p.kv_row_offset ? p.kv_row_offset[b] : 0;
  const int64_t head_off = row0 * p.kv_stride_t + int64_t(h) * p.kv_stride_h;
  const T* kb = static_cast<const T*>(sv.k) + head_off;
  const int64_t host_off = sv.host_k ? (static_cast<const T*>(sv.host_k) + head_off) - kb : 0;
  const int64_t v_off = (static_cast<const T*>(sv.v) + head_off) - kb;
  auto key_at = [&](int32_t row) -> const T* {
    return row >= kv_host_row0 ? kb + host_off + int64_t(row - kv_host_row0) * p.kv_stride_t
                               : kb + int64_t(row) * p.kv_stride_t;
  };
  const int32_t* idx = sv.indices + beg - ns;
  const int32_t* shared = sv.shared;
  auto row_of = [&](int64_t j) { return j < ns ? __ldg(shared + j) : __ldg(idx + j); };

  // Copies the tile of keys jt .. jt + 15 (those < s1; the others become zero rows) into ring stage `stage`.
  auto issue = [&](int64_t jt, int stage) {
    const int64_t jl = jt + (lane & 15);
    const int32_t my_row = jl < s1 ? row_of(jl) : 0;
    T* sk = ring + stage * 2 * TILE;
#pragma unroll
    for (int i = 0; i < CPL; i++) {
      const int c = lane + 32 * i, r = c / CPR, ch = c % CPR;
      const int32_t row = __shfl_sync(0xffffffffu, my_row, r);
      const bool valid = jt + r < s1;
      const T* kr = key_at(row) + ch * 8;
      const int at_s = r * D + ((ch ^ (r & 7)) * 8);
      cp_async16_zfill(sk + at_s, kr, valid);
      cp_async16_zfill(sk + TILE + at_s, kr + v_off, valid);
    }
  };

  const int64_t tstep = int64_t(kWarps) * kMmaKeys;
  const int64_t jt0 = s0 + int64_t(warp) * kMmaKeys;
#pragma unroll
  for (int st = 0; st < kMmaStages - 1; st++) {
    if (jt0 + st * tstep < s1) issue(jt0 + st * tstep, st);
    cp_async_commit();
  }

  float o[DT][4];  // O^T: o[t][0] = (d 16 t + lane/4, head 2 (lane % 4)), [1] head + 1, [2] / [3] d + 8
#pragma unroll
  for (int t = 0; t < DT; t++) o[t][0] = o[t][1] = o[t][2] = o[t][3] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;  // heads 2 (lane % 4) and + 1
  const float qs = p.scale * kLog2e;
  int it = 0;
  for (int64_t jt = jt0; jt < s1; jt += tstep, it++) {
    const int64_t jn = jt + (kMmaStages - 1) * tstep;
    if (jn < s1) issue(jn, (it + kMmaStages - 1) % kMmaStages);
    cp_async_commit();
    cp_async_wait<kMmaStages - 1>();  // this tile's copies (this lane's) are done
    __syncwarp();                     // and every lane's are visible
    const T* sk = ring + (it % kMmaStages) * 2 * TILE;
    const T* svv = sk + TILE;

    float s[4] = {0.f, 0.f, 0.f, 0.f};  // S^T: (key lane/4, heads 2 (lane % 4), + 1), [2] / [3] key + 8
    {
      const int r = (lane & 7) + ((lane >> 3) & 1) * 8;
#pragma unroll
      for (int t = 0; t < DT; t++) {
        const int ch = 2 * t + (lane >> 4);
        uint32_t ka[4];
        ldmatrix_x4(ka, sk + r * D + ((ch ^ (r & 7)) * 8));
        mma_bf16(s, ka, qb[t][0], qb[t][1]);
      }
    }
    const bool k0 = jt + (lane >> 2) < s1, k8 = jt + (lane >> 2) + 8 < s1;
    const float x0 = k0 ? s[0] * qs : -INFINITY, x1 = k0 ? s[1] * qs : -INFINITY;
    const float x2 = k8 ? s[2] * qs : -INFINITY, x3 = k8 ? s[3] * qs : -INFINITY;
    float tm0 = fmaxf(x0, x2), tm1 = fmaxf(x1, x3);
#pragma unroll
    for (int off = 4; off < 32; off <<= 1) {
      tm0 = fmaxf(tm0, __shfl_xor_sync(0xffffffffu, tm0, off));
      tm1 = fmaxf(tm1, __shfl_xor_sync(0xffffffffu, tm1, off));
    }
    const float mn0 = fmaxf(m0, tm0), mn1 = fmaxf(m1, tm1);
    const float r0 = mn0 == -INFINITY ? 0.f : mn0, r1 = mn1 == -INFINITY ? 0.f : mn1;
    const float c0 = exp2f(m0 - r0), c1 = exp2f(m1 - r1);
    float p0 = exp2f(x0 - r0), p1 = exp2f(x1 - r1), p2 = exp2f(x2 - r0), p3 = exp2f(x3 - r1);
    l0 = l0 * c0 + p0 + p2;
    l1 = l1 * c1 + p1 + p3;
    m0 = mn0;
    m1 = mn1;
#pragma unroll
    for (int t = 0; t < DT; t++) {
      o[t][0] *= c0;
      o[t][1] *= c1;
      o[t][2] *= c0;
      o[t][3] *= c1;
    }
    // P^T as B operands, three bf16 parts: pb[k][0] keys 0..7, pb[k][1] keys 8..15.
    uint32_t pb[3][2];
#pragma unroll
    for (int k = 0; k < 3; k++) {
      pb[k][0] = transpose8x8(split_bf16x2(p0, p1));
      pb[k][1] = transpose8x8(split_bf16x2(p2, p3));
    }
    {
      const int r = (lane & 7) + (lane >> 4) * 8;
#pragma unroll
      for (int t = 0; t < DT; t++) {
        const int ch = 2 * t + ((lane >> 3) & 1);
        uint32_t va[4];
        ldmatrix_x4_trans(va, svv + r * D + ((ch ^ (r & 7)) * 8));
#pragma unroll
        for (int k = 0; k < 3; k++) mma_bf16(o[t], va, pb[k][0], pb[k][1]);
      }
    }
    __syncwarp();  // every lane has read this stage before it is refilled
  }
  cp_async_wait<0>();
#pragma unroll
  for (int off = 4; off < 32; off <<= 1) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, off);
    l1 += __shfl_xor_sync(0xffffffffu, l1, off);
  }
  __syncthreads();  // the merge buffers alias every warp's ring

  float* sm_m = reinterpret_cast<float*>(smem_raw);  // [kWarps][G]
  float* sm_l = sm_m + kWarps * 8;
  float* sm_w = sm_l + kWarps * 8;
  float* sm_fm = sm_w + kWarps * 8;
  float* sm_fl = sm_fm + 8;
  float* sm_acc = sm_fl + 8;  // [kWarps][G][D]
  const int h0 = 2 * (lane & 3), d0 = lane >> 2;
  auto put = [&](int g, int d, float x) {
    if (g < G) sm_acc[(warp * G + g) * D + d] = x;
  };
  if (lane < 4) {
    if (h0 < G) sm_m[warp * G + h0] = m0, sm_l[warp * G + h0] = l0;
    if (h0 + 1 < G) sm_m[warp * G + h0 + 1] = m1, sm_l[warp * G + h0 + 1] = l1;
  }
#pragma unroll
  for (int t = 0; t < DT; t++) {
    put(h0, 16 * t + d0, o[t][0]);
    put(h0 + 1, 16 * t + d0, o[t][1]);
    put(h0, 16 * t + d0 + 8, o[t][2]);
    put(h0 + 1, 16 * t + d0 + 8, o[t][3]);
  }
  __syncthreads();
  merge_write<D>(a, sv, b, h, G, kWarps, split, sm_m, sm_l, sm_acc, sm_w, sm_fm, sm_fl);
}

// grid (B*Hq), D threads: merges the S partials of one (b, hq).
template <int D>
__global__ void __launch_bounds__(D) decode_combine_kernel(const split_args a) {
  const decode_params& p = a.p;
  const int bh = blockIdx.x, b = bh / p.n_q_heads, hq = bh % p.n_q_heads;
  const int d = threadIdx.x;
  const int S = a.num_splits;
  const float* ml = a.ws_ml + int64_t(bh) * S * 2;
  const float* acc = a.ws_acc + int64_t(bh) * S * D;
  float mx = -INFINITY;
  for (int s = 0; s < S; s++) mx = fmaxf(mx, ml[2 * s]);
  const float mref = mx == -INFINITY ? 0.f : mx;
  float sum = 0.f, x = 0.f;
  for (int s = 0; s < S; s++) {
    const float w = exp2f(ml[2 * s] - mref);
    sum = fmaf(w, ml[2 * s + 1], sum);
    x = fmaf(w, acc[int64_t(s) * D + d], x);
  }
  const decode_seq sv = seq_of(p, b);
  store_out(sv.out, int64_t(hq) * p.o_stride_h + d, sum > 0.f ? x / sum : 0.f, p.out_dtype);
  if (d == 0 && p.lse) p.lse[int64_t(b) * p.lse_stride_b + hq] = sum > 0.f ? (mx + log2f(sum)) * kLn2 : -INFINITY;
}

// The tensor-core kernel and, when num_splits > 1, the combine kernel. Its shared memory (up to 96 KB at D 128)
// is above the 48 KB default: the limit is raised once per device.
template <int D>
cudaError_t launch_mma(const split_args& a, cudaStream_t st) {
  constexpr size_t bytes = mma_smem_bytes<D>();
  static std::atomic<uint64_t> raised{0};  // bit d: done on device d (< 64)
  int dev = 0;
  if (cudaError_t e = cudaGetDevice(&dev); e != cudaSuccess) return e;
  const uint64_t bit = dev < 64 ? uint64_t(1) << dev : 0;
  if (!bit || !(raised.load() & bit)) {
    if (cudaError_t e = cudaFuncSetAttribute(decode_mma_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             int(bytes));
        e != cudaSuccess)
      return e;
    raised.fetch_or(bit);
  }
  const dim3 grid(a.p.batch * a.p.n_kv_heads, a.num_splits);
  decode_mma_kernel<D><<<grid, kThreads, bytes, st>>>(a);
  if (a.num_splits > 1) decode_combine_kernel<D><<<a.p.batch * a.p.n_q_heads, D, 0, st>>>(a);
  return cudaGetLastError();
}

template <typename T, int D, int G>
cudaError_t launch_variant(const split_args& a, cudaStream_t st) {
  const dim3 grid(a.p.batch * a.p.n_kv_heads, a.num_splits);
  if (a.async_copy)
    decode_split_kernel<T, D, G, true><<<grid, kThreads, 0, st>>>(a);
  else
    decode_split_kernel<T, D, G, false><<<grid, kThreads, 0, st>>>(a);
  if (a.num_splits > 1) decode_combine_kernel<D><<<a.p.batch * a.p.n_q_heads, D, 0, st>>>(a);
  return cudaGetLastError();
}

template <typename T, int D>
cudaError_t dispatch_group(const split_args& a, cudaStream_t st) {
  switch (a.p.n_q_heads / a.p.n_kv_heads) {
    case 1: return launch_variant<T, D, 1>(a, st);
    case 2: return launch_variant<T, D, 2>(a, st);
    case 3: return launch_variant<T, D, 3>(a, st);  // e.g. Llama-3.2-3B (24 / 8), our gpu20m / llama125m presets
    case 4: return launch_variant<T, D, 4>(a, st);
    case 6: return launch_variant<T, D, 6>(a, st);  // e.g. Qwen2.5-1.5B (12 / 2)
    case 7: return launch_variant<T, D, 7>(a, st);  // e.g. Qwen2-7B (28 / 4)
    case 8: return launch_variant<T, D, 8>(a, st);
  }
  return cudaErrorInvalidValue;
}

template <typename T>
cudaError_t dispatch_dim(const split_args& a, cudaStream_t st) {
  switch (a.p.head_dim) {
    case 32: return dispatch_group<T, 32>(a, st);  // the shipped demo models (mini preset)
    case 64: return dispatch_group<T, 64>(a, st);
    case 128: return dispatch_group<T, 128>(a, st);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

int launch_decode(const decode_params& p, int num_splits, int64_t keys_per_split, bool async_copy, bool tensor_cores,
                  void* workspace, void* stream) {
  split_args a{p, num_splits, keys_per_split, nullptr, nullptr, async_copy};
  if (num_splits > 1) {
    a.ws_acc = static_cast<float*>(workspace);
    a.ws_ml = a.ws_acc + int64_t(p.batch) * p.n_q_heads * num_splits * p.head_dim;
  }
  const auto st = static_cast<cudaStream_t>(stream);
  if (tensor_cores) {  // the plan allows it for bf16 and D 64 / 128 only
    if (p.kv_dtype != decode_dtype::bf16) return int(cudaErrorInvalidValue);
    if (p.head_dim == 64) return int(launch_mma<64>(a, st));
    if (p.head_dim == 128) return int(launch_mma<128>(a, st));
    return int(cudaErrorInvalidValue);
  }
  if (p.kv_dtype == decode_dtype::bf16) return int(dispatch_dim<__nv_bfloat16>(a, st));
  return int(dispatch_dim<float>(a, st));
}

}  // namespace gsa::cuda::detail
