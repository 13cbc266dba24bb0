// RoPE on CUDA (contract: cuda/ops.h, cpu/rope.cpp), Hugging Face rotate_half: in each head of x (T, H, D) of type
// t, dimension i < D/2 pairs with i + D/2 and rotates by angle pos[t] * inv_freq[i]:
//   x1' = x1 cos - x2 sin,  x2' = x2 cos + x1 sin        (backward: the inverse rotation, sin -> -sin)
// Both directions transform in place (no accumulation). inv_freq (D/2) f32 comes from cpu::rope_inv_freq.
//
// Same numerics as the CPU: the angle is the f32 product pos * inv_freq (as transformers forms it), cos / sin
// are evaluated in double and rounded to f32, and the rotation uses explicitly rounded products (no FMA
// contraction), so the f32 path matches the CPU bit for bit barring a last-ulp difference in double sin/cos.
// One thread per (t, i) pair computes cos/sin once and rotates that pair in every head.
#include "backend/cuda/ops-device.cuh"
#include "backend/cuda/ops.h"

namespace gsa::cuda {

namespace {

using dev::bf16;

template <class T>
__global__ void rope_kernel(T* x, const int32_t* pos, const float* inv_freq, int T_, int H, int D, float sign) {
  const int half = D / 2;
  const int64_t n = int64_t(T_) * half;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < n;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = idx / half;
    const int i = int(idx - t * half);
    const float angle = float(pos[t]) * inv_freq[i];
    double s, c;
    sincos(double(angle), &s, &c);
    const float cs = float(c), sn = sign * float(s);
    T* row = x + t * H * D + i;
    for (int h = 0; h < H; h++) {
      T* p1 = row + int64_t(h) * D;
      T* p2 = p1 + half;
      const float a = dev::to_f(*p1), b = dev::to_f(*p2);
      *p1 = dev::from_f<T>(__fsub_rn(__fmul_rn(a, cs), __fmul_rn(b, sn)));
      *p2 = dev::from_f<T>(__fadd_rn(__fmul_rn(b, cs), __fmul_rn(a, sn)));
    }
  }
}

void rope_apply(void* x, const int32_t* pos, const float* inv_freq, int T, int H, int D, dtype t, float sign,
                const char* name) {
  detail::check_activation_type(t, name);
  if (T < 0 || H < 0 || D <= 0 || D % 2 != 0)
    fail_msg(std::string("cuda ") + name + ": bad shape (T " + std::to_string(T) + ", H " + std::to_string(H) +
             ", D " + std::to_string(D) + "; D must be positive and even)");
  if (T == 0 || H == 0) return;
  if (!x || !pos || !inv_freq) fail_msg(std::string("cuda ") + name + ": null x, pos or inv_freq");
  constexpr int threads = 256;
  const int64_t n = int64_t(T) * (D / 2);
  cudaStream_t st = ctx().stream;
  if (t == dtype::f32)
    rope_kernel<float><<<dev::grid_for(n, threads), threads, 0, st>>>((float*)x, pos, inv_freq, T, H, D, sign);
  else
    rope_kernel<bf16><<<dev::grid_for(n, threads), threads, 0, st>>>((bf16*)x, pos, inv_freq, T, H, D, sign);
  check_launch(name, __FILE__, __LINE__);
}

}  // namespace

void rope_forward(void* x, const int32_t* pos, const float* inv_freq, int T, int H, int D, dtype t) {
  rope_apply(x, pos, inv_freq, T, H, D, t, 1.0f, "rope_forward");
}

void rope_backward(void* dx, const int32_t* pos, const float* inv_freq, int T, int H, int D, dtype t) {
  rope_apply(dx, pos, inv_freq, T, H, D, t, -1.0f, "rope_backward");
}

}  // namespace gsa::cuda
