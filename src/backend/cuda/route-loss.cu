// The routing distillation loss on CUDA (contract and host reference: backend/route-loss.h / .cpp).
// Three launches, no atomics, so a run replays bit for bit:
//  1. one block per (row r, query head h): each warp takes chunks u = warp, warp + warps, ...; its lanes take the
//     chunk's raw keys (the teacher: per chunk the max logit and the sum of exp below it) and its g gists (the
//     student: the best score and its gist). Then the block forms p, the log-softmax of the scores, the (r, h)
//     KL, ds_u = grad_scale scale (softmax_u - p_u) into scratch, and adds dq[t, h] = sum_u ds_u k_gist(u).
//  2. one block per (chunk u, KV head hk): dk[gist(u) + j] += sum over rows r with u < n_cand[r] and query heads
//     h of hk whose best gist was j of ds * q[t, h], rows and heads in order.
//  3. one block: kl[layer] += the mean of the (r, h) KLs, in order.
#include "backend/cuda/ops-device.cuh"
#include "backend/cuda/route-loss.h"
#include "backend/cuda/runtime.h"

namespace gsa::cuda {

namespace {

using dev::bf16;

constexpr int kThreads = 128;

template <class T>
__device__ float dot_row(const float* q, const T* k, int D) {
  float v = 0;
  for (int d = 0; d < D; d++) v += q[d] * dev::to_f(k[d]);
  return v;
}

// Shared memory: q row (D floats), then per candidate m, z, s (floats) and best (ints): 4 n_max + D words.
template <class T>
__global__ void route_rows_kernel(T* dq, const T* q, const T* k, const int32_t* table, route_args a, float* ds,
                                  int32_t* best_out, float* kl_rows) {
  extern __shared__ float sm[];
  const int r = blockIdx.x, h = blockIdx.y, G = a.Hq / a.Hkv, hk = h / G, D = a.D;
  const int32_t* rows = table;
  const int32_t* n_cand = table + a.R;
  const int32_t* raw_begin = table + 2 * a.R;
  const int32_t* raw_end = raw_begin + a.n_max;
  const int32_t* gist_begin = raw_end + a.n_max;
  const int t = rows[r], n = n_cand[r];
  float* qs = sm;
  float* m = qs + D;
  float* z = m + a.n_max;
  float* sc = z + a.n_max;
  int* best = reinterpret_cast<int*>(sc + a.n_max);
  __shared__ float red[32];
  for (int d = threadIdx.x; d < D; d += blockDim.x) qs[d] = dev::to_f(q[(int64_t(t) * a.Hq + h) * D + d]);
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int64_t kst = int64_t(a.Hkv) * D;
  const T* kh = k + int64_t(hk) * D;
  for (int u = warp; u < n; u += warps) {
    // Teacher: lanes over the chunk's raw keys.
    float mu = -INFINITY, zu = 0;
    for (int i = raw_begin[u] + lane; i < raw_end[u]; i += 32) {
      const float x = a.scale * dot_row(qs, kh + int64_t(i) * kst, D);
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
      const float v = a.scale * dot_row(qs, kh + int64_t(gist_begin[u] + j) * kst, D);
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
  const int64_t base = (int64_t(r) * a.Hq + h) * a.n_max;
  for (int u = threadIdx.x; u < n; u += blockDim.x) {
    const float pu = tot > 0 && z[u] > 0 ? z[u] * expf(m[u] - lm) / tot : 0.0f;
    const float lq = sc[u] - slse;
    if (pu > 0) klv += pu * (logf(pu) - lq);
    ds[base + u] = a.grad_scale * (expf(lq) - pu) * a.scale;
    best_out[base + u] = best[u];
  }
  klv = dev::block_sum(klv, red);
  if (threadIdx.x == 0) kl_rows[int64_t(r) * a.Hq + h] = klv;
  __syncthreads();  // ds of this block written (read below by the same block)
  // dq[t, h] += sum_u ds_u k_gist(u): threads over d, chunks in order.
  T* dqh = dq + (int64_t(t) * a.Hq + h) * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0;
    for (int u = 0; u < n; u++) acc += ds[base + u] * dev::to_f(kh[int64_t(gist_begin[u] + best[u]) * kst + d]);
    dqh[d] = dev::from_f<T>(dev::to_f(dqh[d]) + acc);
  }
}

template <class T>
__global__ void route_keys_kernel(T* dk, const T* q, const int32_t* table, route_args a, const float* ds,
                                  const int32_t* best) {
  const int u = blockIdx.x, hk = blockIdx.y, G = a.Hq / a.Hkv, D = a.D;
  const int32_t* rows = table;
  const int32_t* n_cand = table + a.R;
  const int32_t* gist_begin = table + 2 * a.R + 2 * a.n_max;
  for (int j = 0; j < a.g; j++) {
    T* dkj = dk + (int64_t(gist_begin[u] + j) * a.Hkv + hk) * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
      float acc = 0;
      bool any = false;
      for (int r = 0; r < a.R; r++) {
        if (u >= n_cand[r]) continue;
        for (int h = hk * G; h < (hk + 1) * G; h++) {
          const int64_t i = (int64_t(r) * a.Hq + h) * a.n_max + u;
          if (best[i] != j) continue;
          acc += ds[i] * dev::to_f(q[(int64_t(rows[r]) * a.Hq + h) * D + d]);
          any = true;
        }
      }
      if (any) dkj[d] = dev::from_f<T>(dev::to_f(dkj[d]) + acc);
    }
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

template <class T>
void launch(void* dq, void* dk, const void* q, const void* k, const int32_t* table, const route_args& a, float* ds,
            int32_t* best, float* kl_rows, size_t smem, cudaStream_t st) {
  auto rows = route_rows_kernel<T>;
  if (smem > 48 * 1024) cudaFuncSetAttribute(rows, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  rows<<<dim3(unsigned(a.R), unsigned(a.Hq)), kThreads, smem, st>>>(
      static_cast<T*>(dq), static_cast<const T*>(q), static_cast<const T*>(k), table, a, ds, best, kl_rows);
  check_launch("route_loss (rows)", __FILE__, __LINE__);
  route_keys_kernel<T><<<dim3(unsigned(a.n_max), unsigned(a.Hkv)), kThreads, 0, st>>>(
      static_cast<T*>(dk), static_cast<const T*>(q), table, a, ds, best);
  check_launch("route_loss (keys)", __FILE__, __LINE__);
}

}  // namespace

void route_loss(void* dq, void* dk, const void* q, const void* k, const int32_t* table, float* kl,
                const route_args& a, dtype t) {
  detail::check_activation_type(t, "route_loss");
  if (a.R <= 0 || a.n_max <= 0) return;
  if (a.D <= 0 || a.D > 256 || a.Hkv <= 0 || a.Hq % a.Hkv != 0 || a.g < 1)
    fail_msg("cuda route_loss: bad shape (Hq " + std::to_string(a.Hq) + ", Hkv " + std::to_string(a.Hkv) + ", D " +
             std::to_string(a.D) + ", g " + std::to_string(a.g) + ")");
  const size_t smem = size_t(a.D + 4 * a.n_max) * sizeof(float);
  if (smem > 200 * 1024)
    fail_msg("cuda route_loss: " + std::to_string(a.n_max) + " candidate chunks need " + std::to_string(smem) +
             " bytes of shared memory; use longer chunks or shorter sequences with route_loss");
  const int64_t cells = int64_t(a.R) * a.Hq * a.n_max;
  float* ds = static_cast<float*>(alloc(size_t(cells) * sizeof(float)));
  int32_t* best = static_cast<int32_t*>(alloc(size_t(cells) * sizeof(int32_t)));
  float* kl_rows = static_cast<float*>(alloc(size_t(a.R) * a.Hq * sizeof(float)));
  cudaStream_t st = ctx().stream;
  if (t == dtype::f32) {
    launch<float>(dq, dk, q, k, table, a, ds, best, kl_rows, smem, st);
  } else {
    launch<bf16>(dq, dk, q, k, table, a, ds, best, kl_rows, smem, st);
  }
  route_kl_kernel<<<1, 256, 0, st>>>(kl, kl_rows, a.R * a.Hq, 1.0f / float(int64_t(a.R) * a.Hq));
  check_launch("route_loss (kl)", __FILE__, __LINE__);
  release(ds);
  release(best);
  release(kl_rows);
}

}  // namespace gsa::cuda
