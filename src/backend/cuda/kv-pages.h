// Paged KV rows for decoding on CUDA (backend::kv_write, kv/kv-cache.h pool mode). Host-side header.
// pool (frames * 2P rows, row_elems) of element size esize (2: bf16, 4: f32): K row rows[i] = k row i and V row
// rows[i] + P = v row i, for i < n; rows (n) int64 on the device; k, v (n, row_elems) on the device. Runs on
// ctx().stream; asynchronous.
#pragma once
#include <cstddef>
#include <cstdint>

namespace gsa::cuda {

void kv_write(void* pool, const int64_t* rows, const void* k, const void* v, int n, int row_elems, int page_rows,
              int esize);
// Frame pairs (2 n int32 on the device: {device frame, host frame}) of frame_bytes each (a multiple of 16),
// from pool to host (memory mapped for the device: pin_host). One launch.
void kv_move_frames(void* host, const void* pool, const int32_t* pairs, int n, int64_t frame_bytes);
// Page-locks and maps [p, p + bytes) for the device at the same address (throws gsa::error with what to do when
// the memory cannot be pinned or the device would see it elsewhere); unpin_host(p) undoes it.
void pin_host(void* p, size_t bytes);
void unpin_host(void* p);
// Row i into its own pool: table (2 n int64 on the device) holds {pool address, K row} per row.
void kv_write_rows(const int64_t* table, const void* k, const void* v, int n, int row_elems, int page_rows, int esize);

}  // namespace gsa::cuda
