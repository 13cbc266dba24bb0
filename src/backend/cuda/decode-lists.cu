// Key lists of a decode row from the selected chunks; contract in decode-lists.h.
// Each CTA first sums the list lengths of the heads before its own (at most 8 heads of at most `cap` ids: a
// few thousand reads), so no second launch is needed for the offsets; then writes each selected chunk's runs at
// its place, found by a block-wide exclusive scan of the chunks' run lengths. The base is not copied: the decode
// kernel reads it as every list's shared prefix.
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "backend/cuda/decode-lists.h"
#include "backend/cuda/runtime.h"

namespace gsa::cuda {

namespace {

constexpr int kThreads = 256;

// The candidate chunks' rows (decode_lists' tables on the device): chunk u unfolds raw_len[u] raw rows from
// raw_row[u], then g gist rows from gist_row[u] where add_gists[u].
struct chunk_runs {
  const int32_t *gist_row, *raw_row, *raw_len, *add_gists;
  int g;
  __device__ __forceinline__ int run_len(int u) const { return raw_len[u] + (add_gists[u] ? g : 0); }
  // Writes chunk u's rows at o; returns the position after them.
  __device__ __forceinline__ int32_t* write(int u, int32_t* o) const {
    for (int i = 0; i < raw_len[u]; i++) *o++ = raw_row[u] + i;
    if (add_gists[u])
      for (int i = 0; i < g; i++) *o++ = gist_row[u] + i;
    return o;
  }
};

struct list_args {
  const int32_t* counts;
  const int32_t* ids;
  int cap;
  chunk_runs c;
  int64_t* indptr;
  int32_t* indices;
};

__global__ void __launch_bounds__(kThreads) expand_kernel(const list_args a) {
  using reduce_t = cub::BlockReduce<long long, kThreads>;
  using scan_t = cub::BlockScan<int, kThreads>;
  __shared__ union {
    typename reduce_t::TempStorage reduce;
    typename scan_t::TempStorage scan;
  } tmp;
  __shared__ long long s_begin;
  __shared__ int s_carry;
  const int h = blockIdx.x, t = threadIdx.x;
  // Where this head's list begins: the lengths of heads 0 .. h-1.
  long long part = 0;
  if (a.counts)
    for (int hh = 0; hh < h; hh++)
      for (int j = t; j < a.counts[hh]; j += kThreads) part += a.c.run_len(a.ids[int64_t(hh) * a.cap + j]);
  const long long before = reduce_t(tmp.reduce).Sum(part);
  if (t == 0) {
    s_begin = before;
    s_carry = 0;
  }
  __syncthreads();
  int32_t* out = a.indices + s_begin;
  const int n = a.counts ? a.counts[h] : 0;
  const int32_t* ids = a.ids + int64_t(h) * a.cap;
  for (int j0 = 0; j0 < n; j0 += kThreads) {  // tiles of chunks; s_carry: rows written by earlier tiles
    const int j = j0 + t;
    const int u = j < n ? ids[j] : -1;
    const int len = u >= 0 ? a.c.run_len(u) : 0;
    int off, tile_total;
    __syncthreads();
    scan_t(tmp.scan).ExclusiveSum(len, off, tile_total);
    const int carry = s_carry;
    if (u >= 0) a.c.write(u, out + carry + off);
    __syncthreads();
    if (t == 0) s_carry = carry + tile_total;
  }
  __syncthreads();
  if (t == 0) {
    if (h == 0) a.indptr[0] = 0;
    a.indptr[h + 1] = s_begin + s_carry;
  }
}

// From a selection mask (one bit per candidate chunk, per KV head): the ascending ids and counts into `selected`
// (decode_lists' layout) and the unfolded rows, in one pass over the mask words in tiles of kThreads words.
struct mask_args {
  const uint32_t* mask;
  int words, cap, Hkv;
  chunk_runs c;
  int32_t* selected;
  int64_t* indptr;
  int32_t* indices;
};

__device__ __forceinline__ void expand_mask_head(const mask_args& a, const int h) {
  using reduce_t = cub::BlockReduce<long long, kThreads>;
  using scan_t = cub::BlockScan<int, kThreads>;
  __shared__ union {
    typename reduce_t::TempStorage reduce;
    typename scan_t::TempStorage scan;
  } tmp;
  __shared__ long long s_begin;
  __shared__ int s_ids, s_rows;
  const int t = threadIdx.x;
  long long part = 0;  // rows of the heads before this one
  for (int hh = 0; hh < h; hh++)
    for (int w = t; w < a.words; w += kThreads)
      for (uint32_t m = a.mask[int64_t(hh) * a.words + w]; m; m &= m - 1) part += a.c.run_len(w * 32 + __ffs(m) - 1);
  const long long before = reduce_t(tmp.reduce).Sum(part);
  if (t == 0) {
    s_begin = before;
    s_ids = 0;
    s_rows = 0;
  }
  const uint32_t* mh = a.mask + int64_t(h) * a.words;
  int32_t* ids = a.selected + a.Hkv + int64_t(h) * a.cap;
  for (int w0 = 0; w0 < a.words; w0 += kThreads) {
    const int w = w0 + t;
    const uint32_t m = w < a.words ? mh[w] : 0u;
    int n_ids = __popc(m), n_rows = 0;
    for (uint32_t x = m; x; x &= x - 1) n_rows += a.c.run_len(w * 32 + __ffs(x) - 1);
    __syncthreads();  // s_* of the last tile are read; tmp is free
    const int id0 = s_ids, row0 = s_rows;
    int id_off, id_total, row_off, row_total;
    scan_t(tmp.scan).ExclusiveSum(n_ids, id_off, id_total);
    __syncthreads();
    scan_t(tmp.scan).ExclusiveSum(n_rows, row_off, row_total);
    int at = id0 + id_off;
    int32_t* o = a.indices + s_begin + row0 + row_off;
    for (uint32_t x = m; x; x &= x - 1, at++) {
      const int u = w * 32 + __ffs(x) - 1;
      if (at < a.cap) ids[at] = u;
      o = a.c.write(u, o);
    }
    __syncthreads();
    if (t == 0) {
      s_ids = id0 + id_total;
      s_rows = row0 + row_total;
    }
  }
  __syncthreads();
  if (t == 0) {
    a.selected[h] = min(s_ids, a.cap);
    if (h == 0) a.indptr[0] = 0;
    a.indptr[h + 1] = s_begin + s_rows;
  }
}

__global__ void __launch_bounds__(kThreads) expand_mask_kernel(const mask_args a) { expand_mask_head(a, blockIdx.x); }

__global__ void __launch_bounds__(kThreads) expand_rows_kernel(const lists_row* __restrict__ rows, int Hkv) {
  const lists_row& r = rows[blockIdx.y];
  const mask_args a{r.mask, (r.n_cand + 31) / 32, r.cap, Hkv, {r.gist_row, r.raw_row, r.raw_len, r.add_gists, r.g},
                    r.selected, r.indptr, r.indices};
  expand_mask_head(a, blockIdx.x);
}

}  // namespace

void expand_decode_mask(const uint32_t* mask, int n, int cap, const int32_t* gist_row, const int32_t* raw_row,
                        const int32_t* raw_len, const int32_t* add_gists, int g, int Hkv, int32_t* selected,
                        int64_t* indptr, int32_t* indices) {
  const mask_args a{mask, (n + 31) / 32, cap, Hkv, {gist_row, raw_row, raw_len, add_gists, g}, selected, indptr,
                    indices};
  expand_mask_kernel<<<Hkv, kThreads, 0, ctx().stream>>>(a);
  GSA_CUDA_LAUNCH_CHECK("expand_mask_kernel (decode lists)");
}

void expand_decode_rows(const lists_row* rows, int n_rows, int Hkv) {
  if (n_rows <= 0) return;
  expand_rows_kernel<<<dim3(unsigned(Hkv), unsigned(n_rows)), kThreads, 0, ctx().stream>>>(rows, Hkv);
  GSA_CUDA_LAUNCH_CHECK("expand_rows_kernel (decode lists)");
}

void expand_decode_lists(const int32_t* counts, const int32_t* ids, int cap, const int32_t* gist_row,
                         const int32_t* raw_row, const int32_t* raw_len, const int32_t* add_gists, int g, int Hkv,
                         int64_t* indptr, int32_t* indices) {
  const list_args a{counts, ids, cap, {gist_row, raw_row, raw_len, add_gists, g}, indptr, indices};
  expand_kernel<<<Hkv, kThreads, 0, ctx().stream>>>(a);
  GSA_CUDA_LAUNCH_CHECK("expand_kernel (decode lists)");
}

}  // namespace gsa::cuda
