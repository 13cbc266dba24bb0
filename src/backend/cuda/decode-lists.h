// Building a decode row's key lists on the GPU (backend/decode-lists.h; the cuda backend's
// decode_attention_lists: scores and top-k by select.h's kernels, then this, then decode-attention.h).
// Host-side header: device pointers only, no CUDA types.
#pragma once
#include <cstdint>

namespace gsa::cuda {

// One selecting row of a batched decode step (the CUDA backend's decode_attention_batch): everything its
// selection and list expansion read and write, on the device. Rows of one launch share the heads and the dtype.
struct lists_row {
  const void* q = nullptr;  // (Hq, D) the row's rotated query
  const void* pool_k = nullptr;  // K rows of its session's pool (row stride Hkv * D)
  const int32_t *gist_row = nullptr, *raw_row = nullptr, *raw_len = nullptr, *add_gists = nullptr;  // (n_cand)
  float* scores = nullptr;     // (Hq, n_cand) scratch
  uint32_t* mask = nullptr;    // (Hkv, ceil(n_cand / 32)) scratch
  int32_t* selected = nullptr; // decode_lists' `selected` of this layer: counts, ids (Hkv x cap)
  int32_t* stats = nullptr;    // decode_lists' `stats` of this layer (3 Hkv; may be null)
  int64_t* indptr = nullptr;   // (Hkv + 1)
  int32_t* indices = nullptr;  // the unfolded rows
  int32_t* tiles = nullptr;    // expand_decode_rows' scratch: expand_tile_ints(Hkv, n_cand)
  const float* summary = nullptr;  // page routers: the layer's page summaries (pages, 3, Hkv, D) f32
  int n_cand = 0, k = 0, cap = 0, g = 1;
  int group = 0;               // group scoring (sum of the G heads' scores); page routers: 2, see below
  int router = 0;              // decode_lists' router: 0 gist keys, 1 quest, 2 moba
};
// A page router's scores (decode-lists.h) are per KV head already: the score kernel writes them to the first
// row of the group (hk G) and the top-k takes that row as it is (group 2: group scoring without the sum).

// One CTA per KV head h < Hkv: the unfolded part of list h (the base is the decode kernel's shared prefix):
// for each of its counts[h] selected chunk ids u (ids + h * cap, ascending) the rows raw_row[u] + [0,
// raw_len[u]) and, where add_gists[u] != 0, gist_row[u] + [0, g). Writes indptr (Hkv + 1, int64: list h's own
// part is indices[indptr[h], indptr[h + 1])) and indices (at most Hkv * cap * (max raw_len + g) entries), and
// when stats is not null decode_lists' stats (the units scored read from `scored`, Hkv values).
// Asynchronous on ctx().stream.
void expand_decode_lists(const int32_t* counts, const int32_t* ids, int cap, const int32_t* gist_row,
                         const int32_t* raw_row, const int32_t* raw_len, const int32_t* add_gists, int g, int Hkv,
                         int64_t* indptr, int32_t* indices, const int32_t* scored = nullptr,
                         int32_t* stats = nullptr);

// From each selecting row's selection mask (Hkv, ceil(n_cand / 32) words; bit u of KV head h set when chunk u is
// selected: the decode top-k's output), its `selected` counts [h] and ascending ids [Hkv + h cap ...] (at most
// cap), its unfolded rows (indptr, indices as expand_decode_lists') and its stats where it has them (units
// scored: n_cand). Two launches over tiles of
// expand_tile candidates, grid (tiles, Hkv, rows): each tile's selected chunks and rows counted, then every tile
// writes its chunks at the place the counts before it give (one thread per candidate). rows: a device array of
// n_rows, max_cand >= every row's n_cand.
constexpr int expand_tile = 256;
inline int64_t expand_tile_ints(int Hkv, int n_cand) {
  return int64_t(Hkv) * 2 * ((n_cand + expand_tile - 1) / expand_tile);
}
void expand_decode_rows(const lists_row* rows, int n_rows, int max_cand, int Hkv);

}  // namespace gsa::cuda
