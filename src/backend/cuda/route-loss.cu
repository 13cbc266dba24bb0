// The routing distillation loss on CUDA (contract and host reference: backend/route-loss.h / .cpp).
// No atomics, so a run replays bit for bit. Per group of rows (the group's logits within route_score_budget()):
//  0. gather: qg (Hkv, rows, G, D) = the group's query rows, each KV head's G query heads together;
//  1. per KV head hk one cuBLASLt GEMM (f32 accumulation and output): s (Hkv, rows, G, T) = qg_hk k_hk^T, every
//     row's logit against every key (raw and gist), the keys read in place (row stride Hkv D);
//  2. one block per (row r, query head h): each warp takes candidates u = warp, warp + warps, ...; its lanes take
//     the logits of the raw keys of the candidate's span level-0 chunks (the teacher: the max logit and the sum
//     of exp below it) and of its g gists (the student: the best score and its gist). Then the block forms p,
//     the log-softmax of the scores, the (r, h) KL, ds_u = grad_scale scale (softmax_u - p_u) into plane j*_u
//     of ds (g planes of (Hkv, R, G, n_max), zero elsewhere), and adds dq[t, h] = sum_u ds_u k_gist(u) (the
//     warps' partial sums added in order).
// After every group:
//  3. per gist j and KV head hk one f32 GEMM: dkg (n_max, D) = ds_j,hk^T qf_hk (qf: every row's q in f32), then
//     one kernel adds each candidate's dkg row into its gist key's gradient;
//  4. one block: kl[layer] += the mean of the (r, h) KLs, in order.
// The logits and dk come from GEMMs because per-thread loops over the keys and the rows (the first version) took
// most of a training step: at 4k tokens and 256 rows the teacher reads ~1.5 M keys per head and layer.
#include "backend/cuda/ops-device.cuh"
#include "backend/cuda/ops-internal.h"
#include "backend/cuda/route-loss.h"
#include "backend/cuda/runtime.h"

namespace gsa::cuda {

int64_t& route_score_budget() {
  static int64_t bytes = int64_t(256) << 20;
  return bytes;
}

namespace {

using dev::bf16;

constexpr int kThreads = 128;
constexpr int kMaxD = 256;  // head dims up to 256 (route_loss checks)

template <class T, class O>
__global__ void route_gather_kernel(O* qg, const T* q, const int32_t* rows, int r0, int Rg, route_args a) {
  const int G = a.Hq / a.Hkv;
  const int64_t n = int64_t(Rg) * a.Hq * a.D;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int d = int(i % a.D);
    const int64_t m = i / a.D;  // (hk, rr, gi)
    const int gi = int(m % G), rr = int(m / G % Rg), hk = int(m / G / Rg);
    qg[i] = dev::from_f<O>(dev::to_f(q[(int64_t(rows[r0 + rr]) * a.Hq + hk * G + gi) * a.D + d]));
  }
}

// Shared memory: per candidate m, z, s (floats) and best (ints): 4 n_max words.
template <class T>
__global__ void route_rows_kernel(T* dq, const T* k, const float* s, int r0, int Rg, int Tn, const int32_t* table,
                                  route_args a, float* ds, float* kl_rows) {
  extern __shared__ float sm[];
  const int rr = blockIdx.x, r = r0 + rr, h = blockIdx.y, G = a.Hq / a.Hkv, hk = h / G, D = a.D;
  const int32_t* rows = table;
  const int32_t* n_cand = table + a.R;
  const int32_t* raw_begin = table + 2 * a.R;
  const int32_t* raw_end = raw_begin + a.n_max * a.span;
  const int32_t* gist_begin = raw_end + a.n_max * a.span;
  const int t = rows[r], n = n_cand[r];
  float* m = sm;
  float* z = m + a.n_max;
  float* sc = z + a.n_max;
  int* best = reinterpret_cast<int*>(sc + a.n_max);
  __shared__ float red[32];
  const float* srow = s + ((int64_t(hk) * Rg + rr) * G + (h - hk * G)) * Tn;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int64_t kst = int64_t(a.Hkv) * D;
  const T* kh = k + int64_t(hk) * D;
  for (int u = warp; u < n; u += warps) {
    // Teacher: lanes over the raw keys of the candidate's level-0 chunks.
    float mu = -INFINITY, zu = 0;
    for (int c = u * a.span; c < (u + 1) * a.span; c++)
      for (int i = raw_begin[c] + lane; i < raw_end[c]; i += 32) {
        const float x = a.scale * srow[i];
        if (x > mu) {
          zu = zu * expf(mu - x) + 1.0f;
          mu = x;
        } else {
          zu += expf(x - mu);
        }
      }
    const float mw = dev::warp_max(mu);
    zu = mu == -INFINITY ? 0.0f : zu * expf(mu - mw);
    zu = dev::warp_sum(zu);
    // Student: lanes over the g gists; the best (lowest j on ties).
    float sv = -INFINITY;
    int sj = 0x7fffffff;
    for (int j = lane; j < a.g; j += 32) {
      const float v = a.scale * srow[gist_begin[u] + j];
      if (v > sv) sv = v, sj = j;
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, sv, o);
      const int oj = __shfl_xor_sync(0xffffffffu, sj, o);
      if (ov > sv || (ov == sv && oj < sj)) sv = ov, sj = oj;
    }
    if (lane == 0) {
      m[u] = mw;
      z[u] = zu;
      sc[u] = sv;
      best[u] = sj == 0x7fffffff ? 0 : sj;
    }
  }
  __syncthreads();
  // The teacher's normaliser and the student's log-sum-exp.
  float lm = -INFINITY, smax = -INFINITY;
  for (int u = threadIdx.x; u < n; u += blockDim.x) {
    if (z[u] > 0) lm = fmaxf(lm, m[u]);
    smax = fmaxf(smax, sc[u]);
  }
  lm = dev::block_max(lm, red);
  smax = dev::block_max(smax, red);
  float tot = 0, ssum = 0;
  for (int u = threadIdx.x; u < n; u += blockDim.x) {
    if (z[u] > 0) tot += z[u] * expf(m[u] - lm);
    ssum += expf(sc[u] - smax);
  }
  tot = dev::block_sum(tot, red);
  ssum = dev::block_sum(ssum, red);
  const float slse = smax + logf(ssum);
  float klv = 0;
  // ds plane j: row (hk, r, h - hk G), the candidates' ds where gist j was the best, else 0 (u >= n too).
  const int64_t plane = int64_t(a.R) * a.Hq * a.n_max;
  const int64_t base = ((int64_t(hk) * a.R + r) * G + (h - hk * G)) * a.n_max;
  for (int u = threadIdx.x; u < a.n_max; u += blockDim.x) {
    float dsu = 0;
    if (u < n) {
      const float pu = tot > 0 && z[u] > 0 ? z[u] * expf(m[u] - lm) / tot : 0.0f;
      const float lq = sc[u] - slse;
      if (pu > 0) klv += pu * (logf(pu) - lq);
      dsu = a.grad_scale * (expf(lq) - pu) * a.scale;
      sc[u] = dsu;  // (this thread's own u: the score is not read again)
    }
    for (int j = 0; j < a.g; j++) ds[j * plane + base + u] = u < n && best[u] == j ? dsu : 0.0f;
  }
  klv = dev::block_sum(klv, red);  // (its barriers also publish sc[] to the block)
  if (threadIdx.x == 0) kl_rows[int64_t(r) * a.Hq + h] = klv;
  // dq[t, h] += sum_u ds_u k_gist(u): each warp its chunks u = warp, warp + warps, ... with lanes over d, then
  // the warps' sums in order (a fixed order: no atomics).
  __shared__ float part[kThreads / 32][kMaxD];
  float acc[kMaxD / 32] = {};
  for (int u = warp; u < n; u += warps) {
    const float w = sc[u];
    const T* kg = kh + int64_t(gist_begin[u] + best[u]) * kst;
#pragma unroll
    for (int e = 0; e < kMaxD / 32; e++)
      if (lane + 32 * e < D) acc[e] += w * dev::to_f(kg[lane + 32 * e]);
  }
#pragma unroll
  for (int e = 0; e < kMaxD / 32; e++)
    if (lane + 32 * e < D) part[warp][lane + 32 * e] = acc[e];
  __syncthreads();
  T* dqh = dq + (int64_t(t) * a.Hq + h) * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float sum = 0;
    for (int w = 0; w < warps; w++) sum += part[w][d];
    dqh[d] = dev::from_f<T>(dev::to_f(dqh[d]) + sum);
  }
}

// dk[gist(u) + j, hk] += dkg[j, hk, u] (the GEMMs' sums; each (u, j) is its own key row: no two writers).
template <class T>
__global__ void route_scatter_kernel(T* dk, const float* dkg, const int32_t* gist_begin, route_args a) {
  const int64_t n = int64_t(a.g) * a.Hkv * a.n_max * a.D;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int d = int(i % a.D);
    const int64_t m = i / a.D;  // (j, hk, u)
    const int u = int(m % a.n_max), hk = int(m / a.n_max % a.Hkv), j = int(m / a.n_max / a.Hkv);
    T* x = dk + (int64_t(gist_begin[u] + j) * a.Hkv + hk) * a.D + d;
    *x = dev::from_f<T>(dev::to_f(*x) + dkg[i]);
  }
}

__global__ void route_kl_kernel(float* kl, const float* kl_rows, int n, float inv) {
  __shared__ float red[32];
  float v = 0;
  // Each thread sums a contiguous run, then the block sums the threads in order: fixed for a given n.
  const int per = (n + blockDim.x - 1) / blockDim.x;
  for (int i = threadIdx.x * per; i < min(n, (threadIdx.x + 1) * per); i++) v += kl_rows[i];
  v = dev::block_sum(v, red);
  if (threadIdx.x == 0) *kl += v * inv;
}

template <class T, class O>
void gather(O* qg, const void* q, const int32_t* rows, int r0, int n, const route_args& a, cudaStream_t st) {
  const int64_t cells = int64_t(n) * a.Hq * a.D;
  route_gather_kernel<T, O><<<unsigned(std::min<int64_t>(1024, (cells + 255) / 256)), 256, 0, st>>>(
      qg, static_cast<const T*>(q), rows, r0, n, a);
  check_launch("route_loss (gather)", __FILE__, __LINE__);
}

template <class T>
void launch(void* dq, void* dk, const void* q, const void* k, int T_len, const int32_t* table, const route_args& a,
            dtype t, float* ds, float* kl_rows, cudaStream_t st) {
  const int G = a.Hq / a.Hkv;
  // Rows per group: the group's logits (rows x Hq x T f32) within the budget, at least one row.
  const int64_t per_row = int64_t(a.Hq) * T_len * int64_t(sizeof(float));
  const int Rg = int(std::max<int64_t>(1, std::min<int64_t>(a.R, route_score_budget() / per_row)));
  T* qg = static_cast<T*>(alloc(size_t(Rg) * a.Hq * a.D * sizeof(T)));
  float* s = static_cast<float*>(alloc(size_t(Rg) * per_row));
  const size_t smem = size_t(4 * a.n_max) * sizeof(float);
  auto rows = route_rows_kernel<T>;
  if (smem > 48 * 1024) cudaFuncSetAttribute(rows, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  const int32_t* row_ids = table;
  for (int r0 = 0; r0 < a.R; r0 += Rg) {
    const int n = std::min(Rg, a.R - r0);
    gather<T, T>(qg, q, row_ids, r0, n, a, st);
    for (int hk = 0; hk < a.Hkv; hk++)
      detail::gemm_xwT(s + int64_t(hk) * n * G * T_len, dtype::f32, qg + int64_t(hk) * n * G * a.D,
                       static_cast<const T*>(k) + int64_t(hk) * a.D, t, n * G, a.D, T_len, 0.0f, nullptr,
                       int64_t(a.Hkv) * a.D);
    rows<<<dim3(unsigned(n), unsigned(a.Hq)), kThreads, smem, st>>>(static_cast<T*>(dq), static_cast<const T*>(k),
                                                                    s, r0, n, T_len, table, a, ds, kl_rows);
    check_launch("route_loss (rows)", __FILE__, __LINE__);
  }
  release(qg);
  release(s);
  // dk: per gist j and KV head hk, dkg (n_max, D) = ds_j,hk (R G, n_max)^T qf_hk (R G, D) in f32, then added to
  // each candidate's gist key row.
  float* qf = static_cast<float*>(alloc(size_t(a.R) * a.Hq * a.D * sizeof(float)));
  float* dkg = static_cast<float*>(alloc(size_t(a.g) * a.Hkv * a.n_max * a.D * sizeof(float)));
  gather<T, float>(qf, q, row_ids, 0, a.R, a, st);
  const int64_t plane = int64_t(a.R) * a.Hq * a.n_max;
  for (int j = 0; j < a.g; j++)
    for (int hk = 0; hk < a.Hkv; hk++)
      detail::gemm_dyTx(dkg + (int64_t(j) * a.Hkv + hk) * a.n_max * a.D, dtype::f32,
                        ds + j * plane + int64_t(hk) * a.R * G * a.n_max, qf + int64_t(hk) * a.R * G * a.D,
                        dtype::f32, a.R * G, a.D, a.n_max, 0.0f);
  const int64_t cells = int64_t(a.g) * a.Hkv * a.n_max * a.D;
  route_scatter_kernel<T><<<unsigned(std::min<int64_t>(1024, (cells + 255) / 256)), 256, 0, st>>>(
      static_cast<T*>(dk), dkg, table + 2 * a.R + 2 * a.n_max * a.span, a);
  check_launch("route_loss (scatter)", __FILE__, __LINE__);
  release(qf);
  release(dkg);
}

}  // namespace

void route_loss(void* dq, void* dk, const void* q, const void* k, int T_len, const int32_t* table, float* kl,
                const route_args& a, dtype t) {
  detail::check_activation_type(t, "route_loss");
  if (a.R <= 0 || a.n_max <= 0) return;
  if (a.D <= 0 || a.D > 256 || a.Hkv <= 0 || a.Hq % a.Hkv != 0 || a.g < 1)
    fail_msg("cuda route_loss: bad shape (Hq " + std::to_string(a.Hq) + ", Hkv " + std::to_string(a.Hkv) + ", D " +
             std::to_string(a.D) + ", g " + std::to_string(a.g) + ")");
  const size_t smem = size_t(4 * a.n_max) * sizeof(float);
  if (smem > 200 * 1024)
    fail_msg("cuda route_loss: " + std::to_string(a.n_max) + " candidate chunks need " + std::to_string(smem) +
             " bytes of shared memory; use longer chunks or shorter sequences with route_loss");
  const int64_t cells = int64_t(a.g) * a.R * a.Hq * a.n_max;  // the g ds planes
  float* ds = static_cast<float*>(alloc(size_t(cells) * sizeof(float)));
  float* kl_rows = static_cast<float*>(alloc(size_t(a.R) * a.Hq * sizeof(float)));
  cudaStream_t st = ctx().stream;
  if (t == dtype::f32) {
    launch<float>(dq, dk, q, k, T_len, table, a, t, ds, kl_rows, st);
  } else {
    launch<bf16>(dq, dk, q, k, T_len, table, a, t, ds, kl_rows, st);
  }
  route_kl_kernel<<<1, 256, 0, st>>>(kl, kl_rows, a.R * a.Hq, 1.0f / float(int64_t(a.R) * a.Hq));
  check_launch("route_loss (kl)", __FILE__, __LINE__);
  release(ds);
  release(kl_rows);
}

}  // namespace gsa::cuda
