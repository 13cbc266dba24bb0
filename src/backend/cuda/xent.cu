// LM head fused with softmax cross-entropy on CUDA (contract: cuda/ops.h, cpu/xent.cpp). h (T, C) and w (V, C) of
// type t, targets (T) int32 on the device (-100 = ignore), lse (T) f32.
//   forward   writes lse (T); returns the SUM of (lse - target logit) over valid rows and their count
//   backward  dh (T, C) += dlogits @ w (type t),  dw (V, C) f32 += dlogits^T @ h,  each optional, with
//             dlogits = scale * (softmax - onehot) (zero on ignored rows), rounded to t before the GEMMs
// The (T, V) logits never exist: rows go in blocks and the vocabulary in chunks of vocab_chunk; each tile of
// logits (rows, n) f32 is one cuBLASLt GEMM into a workspace (at most xent_tile_budget() floats), then
//   forward: one block per row merges the tile's (max, sum of exp) into a running pair (online log-sum-exp) and
//            picks up the target logit; a last single-block kernel forms lse and the loss sum in double
//            (deterministic: fixed threads and reduction tree) and flags targets outside [0, V);
//   backward: the tile is recomputed, turned into dlogits of type t, and two GEMMs follow: dw_chunk += (beta 1,
//            f32) and dh_block +=. For bf16, dh_block is summed over the vocabulary chunks in an f32 scratch and
//            added to dh once per row block, so dh is rounded once (not once per chunk: 16 chunks for Llama 3).
#include <climits>

#include "backend/cuda/ops-device.cuh"
#include "backend/cuda/ops.h"

namespace gsa::cuda {

namespace detail {
int64_t& xent_tile_budget() {
  static int64_t budget = int64_t(32) << 20;  // 128 MiB of f32 logits (+ 64 MiB of bf16 dlogits in backward)
  return budget;
}
}  // namespace detail

namespace {

using dev::bf16;
constexpr int32_t ignore_index = -100;

struct xent_totals {
  double loss;
  unsigned long long count;
  int bad_row;  // first row whose target is outside [0, V) and not ignore_index; INT_MAX if none
  int bad_target;
};

// One block per row of the tile (rows of the current row block; all row pointers already offset to it).
template <int W>
__global__ void xent_stats_kernel(const float* logits, int n, int v0, const int32_t* targets, float* run_max,
                                  float* run_sum, float* target_logit, bool first_chunk) {
  __shared__ float red[32];
  const int r = blockIdx.x;
  const float* l = logits + int64_t(r) * n;
  float mx = -INFINITY;
  for (int c = threadIdx.x * W; c < n; c += blockDim.x * W) {
    float v[W];
    dev::load_f<float, W>(v, l + c);
#pragma unroll
    for (int k = 0; k < W; k++) mx = fmaxf(mx, v[k]);
  }
  mx = dev::block_max(mx, red);
  float s = 0.0f;  // <= n terms, each <= 1
  for (int c = threadIdx.x * W; c < n; c += blockDim.x * W) {
    float v[W];
    dev::load_f<float, W>(v, l + c);
#pragma unroll
    for (int k = 0; k < W; k++) s += expf(v[k] - mx);
  }
  s = dev::block_sum(s, red);
  if (threadIdx.x == 0) {
    const float old_max = first_chunk ? -INFINITY : run_max[r];
    const float old_sum = first_chunk ? 0.0f : run_sum[r];
    const float new_max = fmaxf(old_max, mx);
    run_sum[r] = old_sum * expf(old_max - new_max) + s * expf(mx - new_max);  // expf(-inf) = 0 at the start
    run_max[r] = new_max;
    const int32_t y = targets[r];
    if (first_chunk) target_logit[r] = 0.0f;
    if (y >= v0 && y < v0 + n) target_logit[r] = l[y - v0];
  }
}

__global__ void xent_finish_kernel(float* lse, const float* run_max, const float* run_sum, const float* target_logit,
                                   const int32_t* targets, int T, int V, xent_totals* out) {
  __shared__ double red_d[32];
  __shared__ unsigned long long red_n[32];
  __shared__ int bad_row;
  if (threadIdx.x == 0) bad_row = INT_MAX;
  __syncthreads();
  double loss = 0.0;
  unsigned long long count = 0;
  int my_bad = INT_MAX;
  for (int t = threadIdx.x; t < T; t += blockDim.x) {
    const double l = double(run_max[t]) + log(double(run_sum[t]));
    if (lse) lse[t] = float(l);
    const int32_t y = targets[t];
    if (y == ignore_index) continue;
    if (y < 0 || y >= V) {
      my_bad = min(my_bad, t);
      continue;
    }
    loss += l - double(target_logit[t]);
    count++;
  }
  if (my_bad != INT_MAX) atomicMin(&bad_row, my_bad);  // an integer minimum: the same whatever the order
  loss = dev::block_sum(loss, red_d);
  count = dev::block_sum(count, red_n);  // its barriers also order the atomicMin before the read below
  if (threadIdx.x == 0) {
    out->loss = loss;
    out->count = count;
    out->bad_row = bad_row;
    out->bad_target = bad_row == INT_MAX ? 0 : targets[bad_row];
  }
}

// dh (rows, C) += acc (rows, C) f32: one rounding to T. Grid-stride over n elements; W-wide packs when aligned.
template <class T, int W>
__global__ void add_f32_kernel(T* dh, const float* acc, int64_t n) {
  const int64_t n_packs = n / W;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t i = tid; i < n_packs; i += int64_t(gridDim.x) * blockDim.x) {
    float a[W], b[W];
    dev::load_f<T, W>(a, dh + i * W);
    dev::load_f<float, W>(b, acc + i * W);
#pragma unroll
    for (int k = 0; k < W; k++) a[k] += b[k];
    dev::store_f<T, W>(dh + i * W, a);
  }
  const int64_t j = n_packs * W + tid;
  if (W > 1 && j < n) dh[j] = dev::from_f<T>(dev::to_f(dh[j]) + acc[j]);
}

template <class T, int W>
__global__ void xent_dlogits_kernel(T* dl, const float* logits, int n, int v0, const int32_t* targets,
                                    const float* lse, float scale) {
  const int r = blockIdx.x;
  const float* l = logits + int64_t(r) * n;
  T* d = dl + int64_t(r) * n;
  const int32_t y = targets[r];
  const bool valid = y != ignore_index;
  const float m = valid ? lse[r] : 0.0f;
  for (int c = threadIdx.x * W; c < n; c += blockDim.x * W) {
    float v[W];
    dev::load_f<float, W>(v, l + c);  // read before the write: dl may alias logits (f32)
#pragma unroll
    for (int k = 0; k < W; k++) {
      float g = valid ? scale * expf(v[k] - m) : 0.0f;
      if (valid && v0 + c + k == y) g -= scale;
      v[k] = g;
    }
    dev::store_f<T, W>(d + c, v);
  }
}

void check_args(int T, int C, int V, int vocab_chunk, const char* op) {
  if (vocab_chunk <= 0) fail_msg(std::string("cuda ") + op + ": vocab_chunk must be positive");
  if (V <= 0 || C <= 0 || T < 0)
    fail_msg(std::string("cuda ") + op + ": bad shape (T " + std::to_string(T) + ", C " + std::to_string(C) +
             ", V " + std::to_string(V) + ")");
}

int rows_per_block(int T, int vc) {
  const int64_t r = detail::xent_tile_budget() / vc;
  return int(r < 1 ? 1 : (r > T ? T : r));
}

}  // namespace

double lm_head_xent_forward(float* lse, const void* h, const void* w, const int32_t* targets, int T, int C, int V,
                            int64_t* n_valid, dtype t, int vocab_chunk) {
  detail::check_activation_type(t, "lm_head_xent_forward");
  check_args(T, C, V, vocab_chunk, "lm_head_xent_forward");
  if (n_valid) *n_valid = 0;
  if (T == 0) return 0.0;
  if (!h || !w || !targets) fail_msg("cuda lm_head_xent_forward: null h, w or targets");
  const int vc = vocab_chunk < V ? vocab_chunk : V;
  const int rb = rows_per_block(T, vc);
  const size_t es = dtype_size(t);
  detail::scratch tile(sizeof(float) * size_t(rb) * vc), stats(sizeof(float) * 3 * size_t(T)),
      totals(sizeof(xent_totals));
  float* run_max = stats.as<float>();
  float* run_sum = run_max + T;
  float* tgt = run_sum + T;
  cudaStream_t st = ctx().stream;
  for (int t0 = 0; t0 < T; t0 += rb) {
    const int rows = T - t0 < rb ? T - t0 : rb;
    const char* hb = static_cast<const char*>(h) + size_t(t0) * C * es;
    for (int v0 = 0; v0 < V; v0 += vc) {
      const int n = V - v0 < vc ? V - v0 : vc;
      detail::gemm_xwT(tile.as<float>(), dtype::f32, hb, static_cast<const char*>(w) + size_t(v0) * C * es, t, rows,
                       C, n, 0.0f);
      if (n % 4 == 0)
        xent_stats_kernel<4><<<rows, dev::row_threads(n / 4), 0, st>>>(tile.as<float>(), n, v0, targets + t0,
                                                                      run_max + t0, run_sum + t0, tgt + t0, v0 == 0);
      else
        xent_stats_kernel<1><<<rows, dev::row_threads(n), 0, st>>>(tile.as<float>(), n, v0, targets + t0,
                                                                  run_max + t0, run_sum + t0, tgt + t0, v0 == 0);
      check_launch("lm_head_xent_forward (stats)", __FILE__, __LINE__);
    }
  }
  xent_finish_kernel<<<1, 1024, 0, st>>>(lse, run_max, run_sum, tgt, targets, T, V, totals.as<xent_totals>());
  check_launch("lm_head_xent_forward (finish)", __FILE__, __LINE__);
  xent_totals host{};
  copy_d2h(&host, totals.as<xent_totals>(), sizeof(host));
  if (host.bad_row != INT_MAX)
    fail_msg("cuda lm_head_xent_forward: target " + std::to_string(host.bad_target) + " at row " +
             std::to_string(host.bad_row) + " is outside the vocabulary [0, " + std::to_string(V) +
             ") (use -100 to ignore a row)");
  if (n_valid) *n_valid = int64_t(host.count);
  return host.loss;
}

void lm_head_xent_backward(void* dh, float* dw, const void* h, const void* w, const int32_t* targets,
                           const float* lse, int T, int C, int V, float scale, dtype t, int vocab_chunk) {
  detail::check_activation_type(t, "lm_head_xent_backward");
  check_args(T, C, V, vocab_chunk, "lm_head_xent_backward");
  if ((!dh && !dw) || T == 0) return;
  if (!h || !w || !targets || !lse) fail_msg("cuda lm_head_xent_backward: null h, w, targets or lse");
  const int vc = vocab_chunk < V ? vocab_chunk : V;
  const int rb = rows_per_block(T, vc);
  const size_t es = dtype_size(t);
  const size_t tile_elems = size_t(rb) * vc;
  detail::scratch tile(sizeof(float) * tile_elems);
  const bool low = t != dtype::f32;
  // f32: dlogits overwrite the logits in place and dh accumulates directly; bf16: own dlogits and dh_acc buffers.
  detail::scratch dl_buf(low ? es * tile_elems : 0), dh_acc(low && dh ? sizeof(float) * size_t(rb) * C : 0);
  void* dl = low ? dl_buf.as<void>() : tile.as<void>();
  cudaStream_t st = ctx().stream;
  for (int t0 = 0; t0 < T; t0 += rb) {
    const int rows = T - t0 < rb ? T - t0 : rb;
    const char* hb = static_cast<const char*>(h) + size_t(t0) * C * es;
    for (int v0 = 0; v0 < V; v0 += vc) {
      const int n = V - v0 < vc ? V - v0 : vc;
      const char* wc = static_cast<const char*>(w) + size_t(v0) * C * es;
      detail::gemm_xwT(tile.as<float>(), dtype::f32, hb, wc, t, rows, C, n, 0.0f);
      const bool packed = n % 4 == 0;
      const int threads = dev::row_threads(packed ? n / 4 : n);
      if (t == dtype::f32) {
        if (packed)
          xent_dlogits_kernel<float, 4><<<rows, threads, 0, st>>>((float*)dl, tile.as<float>(), n, v0,
                                                                  targets + t0, lse + t0, scale);
        else
          xent_dlogits_kernel<float, 1><<<rows, threads, 0, st>>>((float*)dl, tile.as<float>(), n, v0,
                                                                  targets + t0, lse + t0, scale);
      } else {
        if (packed)
          xent_dlogits_kernel<bf16, 4><<<rows, threads, 0, st>>>((bf16*)dl, tile.as<float>(), n, v0, targets + t0,
                                                                 lse + t0, scale);
        else
          xent_dlogits_kernel<bf16, 1><<<rows, threads, 0, st>>>((bf16*)dl, tile.as<float>(), n, v0, targets + t0,
                                                                 lse + t0, scale);
      }
      check_launch("lm_head_xent_backward (dlogits)", __FILE__, __LINE__);
      if (dh && !low)  // dh_block (rows, C) += dlogits (rows, n) @ w_chunk (n, C)
        detail::gemm_dyw(static_cast<char*>(dh) + size_t(t0) * C * es, t, dl, wc, t, rows, C, n, 1.0f);
      if (dh && low)  // dh_acc (rows, C) f32 (=, then +=) dlogits @ w_chunk
        detail::gemm_dyw(dh_acc.as<float>(), dtype::f32, dl, wc, t, rows, C, n, v0 == 0 ? 0.0f : 1.0f);
      if (dw)  // dw_chunk (n, C) += dlogits^T (n, rows) @ h_block (rows, C)
        detail::gemm_dyTx(dw + size_t(v0) * C, dtype::f32, dl, hb, t, rows, C, n, 1.0f);
    }
    if (dh && low) {
      bf16* dst = reinterpret_cast<bf16*>(static_cast<char*>(dh) + size_t(t0) * C * es);
      const int64_t n_el = int64_t(rows) * C;
      if (dev::aligned16(dst))
        add_f32_kernel<bf16, 8><<<dev::grid_for(n_el / 8 + 1, 256), 256, 0, st>>>(dst, dh_acc.as<float>(), n_el);
      else
        add_f32_kernel<bf16, 1><<<dev::grid_for(n_el, 256), 256, 0, st>>>(dst, dh_acc.as<float>(), n_el);
      check_launch("lm_head_xent_backward (dh)", __FILE__, __LINE__);
    }
  }
}

}  // namespace gsa::cuda
