// Paged KV row writes; contract in kv-pages.h. One CTA per row, threads over the row in 4-byte words (rows are
// Hkv * D elements: a multiple of 2 bf16 values since D is even).
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

}  // namespace

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
