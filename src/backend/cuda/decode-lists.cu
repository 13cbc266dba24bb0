// Key lists of a decode row from the selected chunks; contract in decode-lists.h. The base is not copied: the
// decode kernel reads it as every list's shared prefix.
// From ids (hgsa's walk): one CTA per KV head first sums the list lengths of the heads before its own (at most 8
// heads of at most `cap` ids), then writes each selected chunk's runs at the place a block-wide exclusive scan of
// the run lengths gives.
// From masks (the flat selections of a batched step): many CTAs per head (tiles of candidates), so that a long
// context's thousands of selected chunks are written in parallel; a first launch counts each tile.
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
  const int32_t* scored;  // (Hkv) units the walk scored per head (with stats)
  int32_t* stats;         // decode_lists' stats (3 Hkv) or null
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
    if (a.stats) {
      const int Hkv = int(gridDim.x);
      a.stats[h] = n;
      a.stats[Hkv + h] = a.scored ? a.scored[h] : 0;
      a.stats[2 * Hkv + h] = s_carry;
    }
  }
}

// Flat selections of a batched step: grid (tiles, Hkv, rows), one thread per candidate of the tile.
struct tile_view {
  const lists_row& r;
  int T, t, h, u;
  bool on;
  chunk_runs c;
  __device__ tile_view(const lists_row& row, int Hkv)
      : r(row),
        T((row.n_cand + expand_tile - 1) / expand_tile),
        t(blockIdx.x),
        h(blockIdx.y),
        u(int(blockIdx.x) * expand_tile + int(threadIdx.x)),
        on(false),
        c{row.gist_row, row.raw_row, row.raw_len, row.add_gists, row.g} {
    const int words = (r.n_cand + 31) / 32;
    on = t < T && u < r.n_cand && ((r.mask[int64_t(h) * words + (u >> 5)] >> (u & 31)) & 1u);
  }
  __device__ int* tile(int tt) const { return r.tiles + (int64_t(h) * T + tt) * 2; }
};

__global__ void __launch_bounds__(expand_tile) expand_count_kernel(const lists_row* __restrict__ rows, int Hkv) {
  using reduce_t = cub::BlockReduce<int, expand_tile>;
  __shared__ typename reduce_t::TempStorage tmp;
  const tile_view v(rows[blockIdx.z], Hkv);
  if (v.t >= v.T) return;  // uniform over the block
  const int ids = reduce_t(tmp).Sum(v.on ? 1 : 0);
  __syncthreads();
  const int n_rows = reduce_t(tmp).Sum(v.on ? v.c.run_len(v.u) : 0);
  if (threadIdx.x == 0) {
    v.tile(v.t)[0] = ids;
    v.tile(v.t)[1] = n_rows;
  }
}

__global__ void __launch_bounds__(expand_tile) expand_write_kernel(const lists_row* __restrict__ rows, int Hkv) {
  using reduce_t = cub::BlockReduce<int, expand_tile>;
  using scan_t = cub::BlockScan<int, expand_tile>;
  __shared__ union {
    typename reduce_t::TempStorage reduce;
    typename scan_t::TempStorage scan;
  } tmp;
  __shared__ int s_rows_before, s_ids_before, s_head_rows_before;
  const tile_view v(rows[blockIdx.z], Hkv);
  if (v.t >= v.T) return;
  const lists_row& r = v.r;
  // Rows of the heads before this one and of this head's tiles before this one; this head's ids and rows before
  // it (the rows only where the last tile writes the stats).
  int part_rows = 0, part_ids = 0, part_head = 0;
  for (int i = threadIdx.x; i < v.h * v.T + v.t; i += expand_tile) part_rows += r.tiles[int64_t(i) * 2 + 1];
  for (int i = threadIdx.x; i < v.t; i += expand_tile) part_ids += v.tile(i)[0];
  const bool stats = r.stats && v.t == v.T - 1;  // uniform over the block
  if (stats)
    for (int i = threadIdx.x; i < v.t; i += expand_tile) part_head += v.tile(i)[1];
  const int rows_before = reduce_t(tmp.reduce).Sum(part_rows);
  __syncthreads();
  const int ids_before = reduce_t(tmp.reduce).Sum(part_ids);
  int head_before = 0;
  if (stats) {
    __syncthreads();
    head_before = reduce_t(tmp.reduce).Sum(part_head);
  }
  if (threadIdx.x == 0) {
    s_rows_before = rows_before;
    s_ids_before = ids_before;
    s_head_rows_before = head_before;
  }
  __syncthreads();
  int id_off, id_total, row_off, row_total;
  scan_t(tmp.scan).ExclusiveSum(v.on ? 1 : 0, id_off, id_total);
  __syncthreads();
  scan_t(tmp.scan).ExclusiveSum(v.on ? v.c.run_len(v.u) : 0, row_off, row_total);
  const int at = s_ids_before + id_off;
  if (v.on) {
    if (at < r.cap) r.selected[Hkv + int64_t(v.h) * r.cap + at] = v.u;
    v.c.write(v.u, r.indices + s_rows_before + row_off);
  }
  if (v.t == v.T - 1 && threadIdx.x == 0) {
    r.selected[v.h] = min(s_ids_before + id_total, r.cap);
    if (v.h == 0) r.indptr[0] = 0;
    r.indptr[v.h + 1] = s_rows_before + row_total;
    if (stats) {
      r.stats[v.h] = min(s_ids_before + id_total, r.cap);
      r.stats[Hkv + v.h] = r.n_cand;
      r.stats[2 * Hkv + v.h] = s_head_rows_before + row_total;
    }
  }
}

}  // namespace

void expand_decode_rows(const lists_row* rows, int n_rows, int max_cand, int Hkv) {
  if (n_rows <= 0 || max_cand <= 0) return;
  const dim3 grid(unsigned((max_cand + expand_tile - 1) / expand_tile), unsigned(Hkv), unsigned(n_rows));
  expand_count_kernel<<<grid, expand_tile, 0, ctx().stream>>>(rows, Hkv);
  GSA_CUDA_LAUNCH_CHECK("expand_count_kernel (decode lists)");
  expand_write_kernel<<<grid, expand_tile, 0, ctx().stream>>>(rows, Hkv);
  GSA_CUDA_LAUNCH_CHECK("expand_write_kernel (decode lists)");
}

void expand_decode_lists(const int32_t* counts, const int32_t* ids, int cap, const int32_t* gist_row,
                         const int32_t* raw_row, const int32_t* raw_len, const int32_t* add_gists, int g, int Hkv,
                         int64_t* indptr, int32_t* indices, const int32_t* scored, int32_t* stats) {
  const list_args a{counts, ids, cap, {gist_row, raw_row, raw_len, add_gists, g}, indptr, indices, scored, stats};
  expand_kernel<<<Hkv, kThreads, 0, ctx().stream>>>(a);
  GSA_CUDA_LAUNCH_CHECK("expand_kernel (decode lists)");
}

}  // namespace gsa::cuda
