// The wgmma building blocks (wgmma.cuh) on one 64 x 64 x 64 tile product (contract: wgmma-check.h).
#include "backend/cuda/wgmma-check.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "backend/cuda/wgmma.cuh"

namespace gsa::cuda {
namespace detail {
namespace {

// RA: A from registers (wgmma_m64n64k16_rs), read straight from global memory in the A-fragment layout.
template <int TB, bool RA>
__global__ void __launch_bounds__(128) wgmma_tile_kernel(const __nv_bfloat16* a, const __nv_bfloat16* b, float* c) {
  __shared__ __align__(1024) unsigned char as[64 * 128];
  __shared__ __align__(1024) unsigned char bs[64 * 128];
  const int tid = threadIdx.x;
  for (int e = tid; e < 64 * 8; e += 128) {  // 16-byte chunks: row e / 8, chunk e % 8
    const int r = e / 8, ch = e % 8;
    const uint4 va = reinterpret_cast<const uint4*>(a)[e];
    const uint4 vb = reinterpret_cast<const uint4*>(b)[e];
    *reinterpret_cast<uint4*>(as + sw128_offset(r, ch * 8)) = va;
    *reinterpret_cast<uint4*>(bs + sw128_offset(r, ch * 8)) = vb;
  }
  fence_proxy_async();
  __syncthreads();

  float d[32];
#pragma unroll
  for (int i = 0; i < 32; i++) d[i] = 0.f;
  const uint64_t da = smem_desc_sw128(as), db = smem_desc_sw128(bs);
  const int fr = (tid / 32) * 16 + (tid % 32) / 4, fc = (tid % 4) * 2;  // the thread's A-fragment row / column
  // bf16 pair (r, col), (r, col + 1) as one register, through f32 and back (exact): computed in registers, as P
  // in O = P V is, not a load straight into the wgmma's operand
  auto pair = [&](int r, int col) {
    const uint32_t w = *reinterpret_cast<const uint32_t*>(a + r * 64 + col);
    const __nv_bfloat162 h = __floats2bfloat162_rn(__uint_as_float(w << 16), __uint_as_float(w & 0xffff0000u));
    return *reinterpret_cast<const uint32_t*>(&h);
  };
  uint32_t ar[4][4];
#pragma unroll
  for (int k = 0; k < 4; k++) {
    ar[k][0] = pair(fr, k * 16 + fc);
    ar[k][1] = pair(fr + 8, k * 16 + fc);
    ar[k][2] = pair(fr, k * 16 + 8 + fc);
    ar[k][3] = pair(fr + 8, k * 16 + 8 + fc);
  }
  wgmma_pin(d);
#pragma unroll
  for (int k = 0; k < 4; k++) wgmma_pin(ar[k]);
  wgmma_fence();
#pragma unroll
  for (int k = 0; k < 4; k++) {
    // descriptor units are 16 bytes: K-major steps 32 bytes along the row, MN-major 16 rows of 128 bytes
    const uint64_t step_b = TB ? uint64_t(k) * (2048 >> 4) : uint64_t(k) * (32 >> 4);
    if (RA)
      wgmma_m64n64k16_rs<TB>(d, ar[k], db + step_b, k > 0);
    else
      wgmma_m64n64k16<TB>(d, da + uint64_t(k) * (32 >> 4), db + step_b, k > 0);
  }
  wgmma_commit();
  wgmma_wait<0>();
  wgmma_pin(d);
#pragma unroll
  for (int k = 0; k < 4; k++) wgmma_pin(ar[k]);

  const int warp = tid / 32, lane = tid % 32;
  const int r = warp * 16 + lane / 4;
#pragma unroll
  for (int j = 0; j < 8; j++) {
    const int col = j * 8 + (lane % 4) * 2;
    c[r * 64 + col] = d[4 * j];
    c[r * 64 + col + 1] = d[4 * j + 1];
    c[(r + 8) * 64 + col] = d[4 * j + 2];
    c[(r + 8) * 64 + col + 1] = d[4 * j + 3];
  }
}

}  // namespace
}  // namespace detail

int wgmma_tile_product(const void* a, const void* b, float* c, bool trans_b, bool a_in_registers, void* stream) {
  const auto st = static_cast<cudaStream_t>(stream);
  const auto* pa = static_cast<const __nv_bfloat16*>(a);
  const auto* pb = static_cast<const __nv_bfloat16*>(b);
  if (a_in_registers) {
    if (trans_b)
      detail::wgmma_tile_kernel<1, true><<<1, 128, 0, st>>>(pa, pb, c);
    else
      detail::wgmma_tile_kernel<0, true><<<1, 128, 0, st>>>(pa, pb, c);
  } else if (trans_b) {
    detail::wgmma_tile_kernel<1, false><<<1, 128, 0, st>>>(pa, pb, c);
  } else {
    detail::wgmma_tile_kernel<0, false><<<1, 128, 0, st>>>(pa, pb, c);
  }
  return int(cudaGetLastError());
}

}  // namespace gsa::cuda
