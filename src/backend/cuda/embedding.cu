// Embedding on CUDA (contract: cuda/ops.h, cpu/ops.h). table (V, C) of type t, ids (T) int32 on the device and
// trusted to lie in [0, V) (validated where they enter).
//   forward   y (T, C) = table[ids[t]]                overwrites y (type t)
//   backward  dtable (V, C) f32 += dy[t] for each t     accumulate, DETERMINISTIC
//
// Backward without float atomics: the positions are sorted by token id (CUB's radix sort, which is stable, so
// equal ids keep ascending t), then the block that finds the start of a run of equal ids owns that table row:
// it sums the run's dy rows in ascending t and adds the sum to the row once. Every row has one owner, so no two
// blocks touch the same memory, and the order of additions depends only on ids, never on scheduling.
// Cost: a sort of T keys plus one read of dy; a very frequent token makes one block's run long (it still reads
// each dy row once).
#include <cub/device/device_radix_sort.cuh>

#include "backend/cuda/ops-device.cuh"
#include "backend/cuda/ops.h"

namespace gsa::cuda {

namespace {

using dev::bf16;

template <class T, int W>
__global__ void embedding_forward_kernel(T* y, const int32_t* ids, const T* table, int C) {
  const int t = blockIdx.x;
  const T* src = table + int64_t(ids[t]) * C;
  T* dst = y + int64_t(t) * C;
  for (int c = threadIdx.x * W; c < C; c += blockDim.x * W)
    *reinterpret_cast<dev::pack<T, W>*>(dst + c) = *reinterpret_cast<const dev::pack<T, W>*>(src + c);
}

__global__ void iota_kernel(int32_t* out, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) out[i] = i;
}

// One block per sorted position; only the first position of each run of equal ids does work.
template <class T, int W>
__global__ void embedding_backward_kernel(float* dtable, const T* dy, const int32_t* sorted_ids,
                                          const int32_t* order, int n, int C) {
  const int i = blockIdx.x;
  const int32_t id = sorted_ids[i];
  if (i > 0 && sorted_ids[i - 1] == id) return;  // not the owner (uniform over the block: no barrier is skipped)
  __shared__ int run_end;
  if (threadIdx.x == 0) {
    int e = i + 1;
    while (e < n && sorted_ids[e] == id) e++;
    run_end = e;
  }
  __syncthreads();
  const int end = run_end;
  float* dst = dtable + int64_t(id) * C;
  for (int c = threadIdx.x * W; c < C; c += blockDim.x * W) {
    float acc[W] = {};
    for (int j = i; j < end; j++) {
      float v[W];
      dev::load_f<T, W>(v, dy + int64_t(order[j]) * C + c);
#pragma unroll
      for (int k = 0; k < W; k++) acc[k] += v[k];
    }
    float old[W];
    dev::load_f<float, W>(old, dst + c);
#pragma unroll
    for (int k = 0; k < W; k++) old[k] += acc[k];
    dev::store_f<float, W>(dst + c, old);
  }
}

template <class T>
void forward_impl(void* y, const int32_t* ids, const void* table, int T_, int C) {
  constexpr int W = dev::vec16<T>;
  cudaStream_t st = ctx().stream;
  if (C % W == 0 && dev::aligned16(y) && dev::aligned16(table))
    embedding_forward_kernel<T, W><<<T_, dev::row_threads(C / W), 0, st>>>((T*)y, ids, (const T*)table, C);
  else
    embedding_forward_kernel<T, 1><<<T_, dev::row_threads(C), 0, st>>>((T*)y, ids, (const T*)table, C);
  check_launch("embedding_forward", __FILE__, __LINE__);
}

template <class T>
void backward_impl(float* dtable, const void* dy, const int32_t* ids, int T_, int C) {
  cudaStream_t st = ctx().stream;
  detail::scratch positions(sizeof(int32_t) * T_), sorted(sizeof(int32_t) * T_), order(sizeof(int32_t) * T_);
  iota_kernel<<<dev::grid_for(T_, 256), 256, 0, st>>>(positions.as<int32_t>(), T_);
  check_launch("embedding_backward (iota)", __FILE__, __LINE__);
  size_t temp_bytes = 0;
  GSA_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, ids, sorted.as<int32_t>(),
                                                 positions.as<int32_t>(), order.as<int32_t>(), T_, 0, 32, st));
  detail::scratch temp(temp_bytes);
  GSA_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.as<void>(), temp_bytes, ids, sorted.as<int32_t>(),
                                                 positions.as<int32_t>(), order.as<int32_t>(), T_, 0, 32, st));
  // 4-wide packs: 16 bytes of the f32 table row, 16 or 8 bytes of dy.
  if (C % 4 == 0 && dev::aligned16(dtable) && dev::aligned16(dy))
    embedding_backward_kernel<T, 4><<<T_, dev::row_threads(C / 4), 0, st>>>(
        dtable, (const T*)dy, sorted.as<int32_t>(), order.as<int32_t>(), T_, C);
  else
    embedding_backward_kernel<T, 1><<<T_, dev::row_threads(C), 0, st>>>(dtable, (const T*)dy, sorted.as<int32_t>(),
                                                                       order.as<int32_t>(), T_, C);
  check_launch("embedding_backward", __FILE__, __LINE__);
}

}  // namespace

void embedding_forward(void* y, const int32_t* ids, const void* table, int T, int C, dtype t) {
  detail::check_activation_type(t, "embedding_forward");
  if (T < 0 || C < 0) fail_msg("cuda embedding_forward: negative shape");
  if (T == 0 || C == 0) return;
  if (!y || !ids || !table) fail_msg("cuda embedding_forward: null y, ids or table");
  if (t == dtype::f32)
    forward_impl<float>(y, ids, table, T, C);
  else
    forward_impl<bf16>(y, ids, table, T, C);
}

void embedding_backward(float* dtable, const void* dy, const int32_t* ids, int T, int C, dtype t) {
  detail::check_activation_type(t, "embedding_backward");
  if (T < 0 || C < 0) fail_msg("cuda embedding_backward: negative shape");
  if (!dtable || T == 0 || C == 0) return;
  if (!dy || !ids) fail_msg("cuda embedding_backward: null dy or ids");
  if (t == dtype::f32)
    backward_impl<float>(dtable, dy, ids, T, C);
  else
    backward_impl<bf16>(dtable, dy, ids, T, C);
}

}  // namespace gsa::cuda
