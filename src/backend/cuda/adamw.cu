// Optimizer ops on CUDA over flat f32 buffers (all parameters in one buffer: one launch per step).
//   adamw_step     p, m, v updated in place (torch.optim.AdamW semantics, as cpu::adamw_step); decay (u8,
//                  optional): weight decay only where 1; p_lowp (optional): the updated p rounded to bf16
//   sum_squares    sum of g^2 accumulated in double, deterministic (fixed grid, two passes), returned to the host
//   scale_inplace  g *= s
// AdamW uses explicitly rounded f32 operations in the CPU's order (no FMA contraction, IEEE sqrt and division),
// so it reproduces cpu::adamw_step bit for bit.
#include "backend/cuda/ops-device.cuh"
#include "backend/cuda/ops.h"

#include <cmath>
#include <type_traits>

namespace gsa::cuda {

namespace {

struct adamw_consts {
  float b1, b2, one_minus_b1, one_minus_b2, eps, step_size, sqrt_bc2, decay;
};

__device__ __forceinline__ void adamw_one(float& p, float g, float& m, float& v, bool decay_on,
                                          const adamw_consts& k) {
  const float mi = __fadd_rn(m, __fmul_rn(k.one_minus_b1, __fsub_rn(g, m)));  // torch's lerp_
  const float vi = __fadd_rn(__fmul_rn(v, k.b2), __fmul_rn(__fmul_rn(k.one_minus_b2, g), g));
  m = mi;
  v = vi;
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), k.sqrt_bc2), k.eps);
  const float pd = decay_on ? __fmul_rn(p, k.decay) : p;
  p = __fsub_rn(pd, __fmul_rn(k.step_size, __fdiv_rn(mi, denom)));
}

// W = 4: 16-byte packs of p, g, m, v (4 bytes of the mask, 8 of the bf16 copy); the n % 4 tail with W = 1.
template <int W>
__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, const uint8_t* decay, uint16_t* p_lowp,
                             int64_t n, adamw_consts k) {
  const int64_t n_packs = n / W;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  auto body = [&](int64_t i, auto width) {
    constexpr int V = decltype(width)::value;
    float pp[V], gg[V], mm[V], vv[V];
    dev::load_f<float, V>(pp, p + i);
    dev::load_f<float, V>(gg, g + i);
    dev::load_f<float, V>(mm, m + i);
    dev::load_f<float, V>(vv, v + i);
    dev::pack<uint8_t, V> dk;
    if (decay) dk = *reinterpret_cast<const dev::pack<uint8_t, V>*>(decay + i);
#pragma unroll
    for (int j = 0; j < V; j++) adamw_one(pp[j], gg[j], mm[j], vv[j], decay ? dk.v[j] != 0 : true, k);
    dev::store_f<float, V>(p + i, pp);
    dev::store_f<float, V>(m + i, mm);
    dev::store_f<float, V>(v + i, vv);
    if (p_lowp) dev::store_f<dev::bf16, V>(reinterpret_cast<dev::bf16*>(p_lowp) + i, pp);
  };
  for (int64_t i = tid; i < n_packs; i += stride) body(i * W, std::integral_constant<int, W>{});
  if (W > 1) {
    const int64_t j = n_packs * W + tid;
    if (j < n) body(j, std::integral_constant<int, 1>{});
  }
}

__global__ void scale_kernel(float* g, int64_t n, float s) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    g[i] = __fmul_rn(g[i], s);
}

constexpr int ss_threads = 256, ss_blocks = 1024;  // fixed: the summation order depends on n only

__global__ void sum_squares_partial_kernel(double* partial, const float* g, int64_t n) {
  __shared__ double red[32];
  double acc = 0.0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const double x = g[i];
    acc += x * x;
  }
  acc = dev::block_sum(acc, red);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__global__ void sum_squares_finish_kernel(double* out, const double* partial, int n) {
  __shared__ double red[32];
  double acc = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) acc += partial[i];
  acc = dev::block_sum(acc, red);
  if (threadIdx.x == 0) *out = acc;
}

}  // namespace

void adamw_step(float* p, const float* g, float* m, float* v, const uint8_t* decay, uint16_t* p_lowp, int64_t n,
                int64_t t, const cpu::adamw_params& hp) {
  if (n < 0 || t < 1) fail_msg("cuda adamw_step: need n >= 0 and a 1-based step number t >= 1");
  if (n == 0) return;
  if (!p || !g || !m || !v) fail_msg("cuda adamw_step: null p, g, m or v");
  // Host-side constants exactly as cpu::adamw_step forms them.
  const double bc1 = 1.0 - std::pow(double(hp.beta1), double(t));
  const double bc2 = 1.0 - std::pow(double(hp.beta2), double(t));
  adamw_consts k;
  k.b1 = hp.beta1;
  k.b2 = hp.beta2;
  k.one_minus_b1 = 1.0f - hp.beta1;
  k.one_minus_b2 = 1.0f - hp.beta2;
  k.eps = hp.eps;
  k.step_size = float(hp.lr / bc1);
  k.sqrt_bc2 = float(std::sqrt(bc2));
  const float lr_wd = hp.lr * hp.weight_decay;
  k.decay = 1.0f - lr_wd;
  constexpr int threads = 256;
  cudaStream_t st = ctx().stream;
  const bool packed = dev::aligned16(p) && dev::aligned16(g) && dev::aligned16(m) && dev::aligned16(v) &&
                      (!decay || reinterpret_cast<uintptr_t>(decay) % 4 == 0) &&
                      (!p_lowp || reinterpret_cast<uintptr_t>(p_lowp) % 8 == 0);
  if (packed)
    adamw_kernel<4><<<dev::grid_for(n / 4 + 1, threads), threads, 0, st>>>(p, g, m, v, decay, p_lowp, n, k);
  else
    adamw_kernel<1><<<dev::grid_for(n, threads), threads, 0, st>>>(p, g, m, v, decay, p_lowp, n, k);
  check_launch("adamw_step", __FILE__, __LINE__);
}

double sum_squares(const float* g, int64_t n) {
  if (n <= 0) return 0.0;
  if (!g) fail_msg("cuda sum_squares: null g");
  detail::scratch partial(sizeof(double) * (ss_blocks + 1));
  double* part = partial.as<double>();
  cudaStream_t st = ctx().stream;
  sum_squares_partial_kernel<<<ss_blocks, ss_threads, 0, st>>>(part, g, n);
  check_launch("sum_squares", __FILE__, __LINE__);
  sum_squares_finish_kernel<<<1, ss_threads, 0, st>>>(part + ss_blocks, part, ss_blocks);
  check_launch("sum_squares (finish)", __FILE__, __LINE__);
  double result = 0.0;
  copy_d2h(&result, part + ss_blocks, sizeof(double));
  return result;
}

void scale_inplace(float* g, int64_t n, float s) {
  if (n <= 0) return;
  if (!g) fail_msg("cuda scale_inplace: null g");
  constexpr int threads = 256;
  scale_kernel<<<dev::grid_for(n, threads), threads, 0, ctx().stream>>>(g, n, s);
  check_launch("scale_inplace", __FILE__, __LINE__);
}

}  // namespace gsa::cuda
