// Building a decode row's key lists on the GPU (backend/decode-lists.h; the cuda backend's
// decode_attention_lists: scores and top-k by select.h's kernels, then this, then decode-attention.h).
// Host-side header: device pointers only, no CUDA types.
#pragma once
#include <cstdint>

namespace gsa::cuda {

// One CTA per KV head h < Hkv: the unfolded part of list h (the base is the decode kernel's shared prefix):
// for each of its counts[h] selected chunk ids u (ids + h * cap, ascending) the rows raw_row[u] + [0,
// raw_len[u]) and, where add_gists[u] != 0, gist_row[u] + [0, g). Writes indptr (Hkv + 1, int64: list h's own
// part is indices[indptr[h], indptr[h + 1])) and indices (at most Hkv * cap * (max raw_len + g) entries).
// Asynchronous on ctx().stream.
void expand_decode_lists(const int32_t* counts, const int32_t* ids, int cap, const int32_t* gist_row,
                         const int32_t* raw_row, const int32_t* raw_len, const int32_t* add_gists, int g, int Hkv,
                         int64_t* indptr, int32_t* indices);

// The same from a selection mask (Hkv, ceil(n / 32)) words, bit u of KV head h set when chunk u is selected (the
// decode top-k's output): also writes `selected`'s counts [h] and ascending ids [Hkv + h cap ...] (at most cap).
void expand_decode_mask(const uint32_t* mask, int n, int cap, const int32_t* gist_row, const int32_t* raw_row,
                        const int32_t* raw_len, const int32_t* add_gists, int g, int Hkv, int32_t* selected,
                        int64_t* indptr, int32_t* indices);

}  // namespace gsa::cuda
