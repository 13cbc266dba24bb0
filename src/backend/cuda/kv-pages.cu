// Paged KV row writes; contract in kv-pages.h. One CTA per row, threads over the row in 4-byte words (rows are
// Hkv * D elements: a multiple of 2 bf16 values since D is even).
#include <algorithm>
#include <string>

#include "backend/cuda/kv-pages.h"
#include "backend/cuda/runtime.h"

namespace gsa::cuda {

namespace {

// Row i of k and v (row_words words each) to dst (K) and dst + v_offset_words (V); one CTA per row.
__device__ inline void copy_row(uint32_t* dst, const uint32_t* k, const uint32_t* v, int row_words,
                                int64_t v_offset_words) {
  const int64_t i = blockIdx.x;
  const uint32_t* ks = k + i * row_words;
  const uint32_t* vs = v + i * row_words;
  for (int e = threadIdx.x; e < row_words; e += blockDim.x) {
    dst[e] = ks[e];
    dst[v_offset_words + e] = vs[e];
  }
}

__global__ void kv_write_kernel(uint32_t* pool, const int64_t* rows, const uint32_t* k, const uint32_t* v,
                                int row_words, int64_t v_offset_words) {
  copy_row(pool + rows[blockIdx.x] * row_words, k, v, row_words, v_offset_words);
}

__global__ void kv_write_rows_kernel(const int64_t* table, const uint32_t* k, const uint32_t* v, int row_words,
                                     int64_t v_offset_words) {
  const int i = blockIdx.x;
  uint32_t* pool = reinterpret_cast<uint32_t*>(static_cast<uintptr_t>(table[2 * i]));
  copy_row(pool + table[2 * i + 1] * row_words, k, v, row_words, v_offset_words);
}

// A row's size in 4-byte words (what must divide it: fail_msg otherwise) and the threads of its CTA.
struct row_geometry {
  int words, threads;
};
row_geometry geometry(const char* what, int row_elems, int esize) {
  if ((int64_t(row_elems) * esize) % 4 != 0)
    fail_msg(std::string(what) + ": a KV row of " + std::to_string(row_elems) +
             " elements is not a multiple of 4 bytes");
  const int words = int(int64_t(row_elems) * esize / 4);
  return {words, words >= 256 ? 256 : ((words + 31) / 32) * 32};
}

// Frame pair blockIdx.y: its frame_words 16-byte words from pool frame pairs[2 i] to host frame pairs[2 i + 1],
// grid-strided over blockIdx.x.
__global__ void kv_move_frames_kernel(uint4* host, const uint4* pool, const int32_t* pairs, int64_t frame_words) {
  const int i = blockIdx.y;
  const uint4* src = pool + int64_t(pairs[2 * i]) * frame_words;
  uint4* dst = host + int64_t(pairs[2 * i + 1]) * frame_words;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < frame_words; e += int64_t(gridDim.x) * blockDim.x)
    dst[e] = src[e];
}

}  // namespace

void kv_move_frames(void* host, const void* pool, const int32_t* pairs, int n, int64_t frame_bytes) {
  if (n == 0) return;
  if (frame_bytes % 16 != 0) fail_msg("kv_move_frames: a frame of " + std::to_string(frame_bytes) + " bytes");
  const int64_t words = frame_bytes / 16;
  const int threads = 256;
  const int blocks_x = int(std::min<int64_t>((words + threads - 1) / threads, 8));
  for (int at = 0; at < n; at += 65535) {  // gridDim.y is at most 65535
    const int m = std::min(n - at, 65535);
    kv_move_frames_kernel<<<dim3(blocks_x, m), threads, 0, ctx().stream>>>(
        static_cast<uint4*>(host), static_cast<const uint4*>(pool), pairs + 2 * int64_t(at), words);
    GSA_CUDA_LAUNCH_CHECK("kv_move_frames_kernel");
  }
}

void pin_host(void* p, size_t bytes) {
  const cudaError_t e = cudaHostRegister(p, bytes, cudaHostRegisterMapped);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear it: the failure is reported here
    fail_msg("cannot pin " + std::to_string(bytes) + " bytes of host memory for the KV pages off the GPU (" +
             cudaGetErrorString(e) + "): the machine's pinned-memory limit (ulimit -l) or its memory is too small "
             "for this context; shorten the context or raise --gpu-kv-budget");
  }
  void* dev = nullptr;
  GSA_CUDA_CHECK(cudaHostGetDevicePointer(&dev, p, 0));
  if (dev != p) {
    cudaHostUnregister(p);
    fail_msg("this GPU maps pinned host memory at another address than the host's; --gpu-kv-budget needs the "
             "same address (a unified-addressing system); run without it");
  }
}

void unpin_host(void* p) { cudaHostUnregister(p); }

void kv_write_rows(const int64_t* table, const void* k, const void* v, int n, int row_elems, int page_rows,
                   int esize) {
  if (n == 0) return;
  const row_geometry g = geometry("kv_write_rows", row_elems, esize);
  kv_write_rows_kernel<<<n, g.threads, 0, ctx().stream>>>(table, static_cast<const uint32_t*>(k),
                                                          static_cast<const uint32_t*>(v), g.words,
                                                          int64_t(page_rows) * g.words);
  GSA_CUDA_LAUNCH_CHECK("kv_write_rows_kernel");
}

void kv_write(void* pool, const int64_t* rows, const void* k, const void* v, int n, int row_elems, int page_rows,
              int esize) {
  if (n == 0) return;
  const row_geometry g = geometry("kv_write", row_elems, esize);
  kv_write_kernel<<<n, g.threads, 0, ctx().stream>>>(static_cast<uint32_t*>(pool), rows,
                                                     static_cast<const uint32_t*>(k), static_cast<const uint32_t*>(v),
                                                     g.words, int64_t(page_rows) * g.words);
  GSA_CUDA_LAUNCH_CHECK("kv_write_kernel");
}

}  // namespace gsa::cuda
