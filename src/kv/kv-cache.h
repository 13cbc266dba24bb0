// The KV cache of one sequence, per layer and KV head (DESIGN 2.1 kv/):
//  * raw pages: page p holds the K and V of raw tokens [p P, (p+1) P) (P = page_size = c_0 for a GSA model),
//    each as (P, Hkv, D) rows; a page table per layer (CSR-style: page id -> storage) says where each lives:
//      memory  - an owned buffer (resident);
//      file    - written once, when it leaves the window, into one file per cache and read through mmap, so a
//                decode step touches only the pages it selected;
//      dropped - freed (compression only: the method must never select it again).
//    Pages of the sink (raw tokens < sink) and of the window (the newest `window_pages` complete pages and the
//    incomplete page; one more while the gists that
//    close a page are computed) always stay in memory, whatever the tier.
//  * a gist store per level l: (n_l, Hkv, D) K and V, contiguous and always resident (scoring reads only these);
//    unit u's g gists are rows [u g, (u+1) g). Its keys are also kept transposed in tiles for scoring, per KV head
//    (ceil(n_l / gist_tile), D, gist_tile): gist i's element d is at [i / T][d][i % T] (T = gist_tile; the lanes
//    of the last tile past n_l are zero), so q . k over consecutive gists is a unit-stride loop over gists.
//  * optional page summaries (per complete page and KV head: min, max and mean key) for Quest / MoBA routers.
// Rows are appended in order (raw index order, gist order per level); nothing is overwritten in place.
// truncate() cuts the tail off (a follow-up request that shares only a prefix with a held conversation): the cache
// is then what a cache that received only the kept rows holds (pages the window keeps come back from the file;
// file slots of cut pages are reused). spill() moves an idle cache's resident rows to the file and restore()
// brings them back (the server's idle sessions, serve/scheduler.h).
// Addresses: kv_addr {level -1, raw token index} or {level l, gist index in store l}.
//
// Pool mode (layout.rows_on set: a session on a device, or a CPU test of that path): the K/V rows live in one
// pool per layer on that backend (backend.h kv_write / decode_attention: frames of 2 P rows, K then V, the
// layout of a host page). Raw page p and gist page j of level l (gists [j P, (j + 1) P)) are frames, allocated in
// the order rows arrive; the page table (raw and per gist level) maps pages to frames. The host keeps the page
// tables, the transposed gist-key tiles and the page summaries (the host selection of quest / moba and of the
// options the device lists do not cover reads them, backend/decode-lists.h; an incomplete page's keys wait on the
// host until its summary is made), not the rows. Memory or host tier, no host row access (key() / value()).
//
// Tier host (pool mode only; `gsa ... --gpu-kv-budget`): the sink, the window and the gist stores stay in the
// device pool; a raw page that leaves the window moves to the layer's host part, pinned host memory the
// backend's kernels read in place (host-region.h; pool rows >= kv_host_row0 (backend/decode-lists.h) name its
// rows, host(layer) is where they start). Host frames are taken in the order pages leave, device frames freed by
// a move are reused, so frames stay the same in every layer. reserve_rows only records a move (the rows it hands
// out may still be written into the leaving page): commit_rows(layer) issues the layer's moves after the write.
// layout.device_budget caps the device pools of all layers together; growing past it throws gsa::error.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backend/decode-lists.h"
#include "core/tensor.h"
#include "gist/select.h"
#include "kv/host-region.h"

namespace gsa {
class backend;
}

namespace gsa::kv {

enum class page_tier : uint8_t { memory, file, drop, host };
const char* page_tier_name(page_tier t);
page_tier page_tier_from_name(const std::string& s);  // throws gsa::error on unknown names

struct cache_layout {
  int n_layers = 0, n_kv_heads = 0, head_dim = 0;
  int page_size = 16;       // raw tokens per page
  int gist_levels = 0;      // number of gist stores (0: a plain model)
  int sink = 0;             // raw tokens pinned in memory
  int window_pages = 1;     // complete pages before the incomplete one that stay in memory
  page_tier tier = page_tier::memory;
  std::string file_path;    // tier file: the backing file ("" -> an unlinked temporary file in /tmp)
  bool page_summaries = false;
  backend* rows_on = nullptr;  // pool mode: the backend whose memory holds the rows (see above)
  int64_t device_budget = 0;   // tier host: bytes the device pools may hold together (0: no cap)
  int64_t max_raw = 0;         // tier host: raw tokens a layer can reach (sizes the host reservation)
};

struct kv_addr {
  int8_t level = -1;  // -1 raw, else gist level
  int32_t index = 0;  // raw token index, or row in the gist store of `level`
};

struct cache_bytes {
  int64_t resident = 0;  // in process memory: memory-tier pages, window, gists, summaries
  int64_t file = 0;      // pages in the backing file
  int64_t dropped = 0;   // pages freed (their K/V no longer exist)
  int64_t scoring = 0;   // the transposed gist-key tiles (resident, a copy: not part of total())
  int64_t device = 0;    // pool mode: the pools' and page summaries' capacity on the rows' backend (GPU memory)
  int64_t pinned = 0;    // tier host: the pages moved off the device (pinned host memory)
  int64_t total() const { return resident + file + device + pinned; }  // what the cache holds anywhere
};

constexpr int gist_tile = gist::score_tile;  // gists per scoring tile (gist/select.h's layout)

class kv_cache {
 public:
  explicit kv_cache(const cache_layout& layout);
  ~kv_cache();
  kv_cache(const kv_cache&) = delete;
  kv_cache& operator=(const kv_cache&) = delete;

  const cache_layout& layout() const { return lay_; }
  // Append one row: k, v (Hkv, D). Raw rows take the next raw index of the layer, gist rows the next row of
  // their level's store. Completing a page computes its summary and retires pages that left the window.
  void append_raw(int layer, const float* k, const float* v);
  void append_gist(int layer, int level, const float* k, const float* v);

  int raw_count(int layer) const { return layers_[layer].n_raw; }
  int gist_count(int layer, int level) const { return int(layers_[layer].gists[level].n); }
  int complete_pages(int layer) const { return layers_[layer].n_raw / lay_.page_size; }
  page_tier page_state(int layer, int page) const;

  // Row of KV head h: D floats. The page must not be dropped (GSA_ASSERT).
  const float* key(int layer, kv_addr a, int h) const { return row(layer, a, h, 0); }
  const float* value(int layer, kv_addr a, int h) const { return row(layer, a, h, 1); }
  // The gist store of a level: (gist_count, Hkv, D).
  const float* gist_keys(int layer, int level) const { return layers_[layer].gists[level].k.data(); }
  // The transposed gist keys of a level and KV head (layout above).
  const float* gist_key_tiles(int layer, int level, int h) const { return layers_[layer].gists[level].kt[h].data(); }
  // Page summaries (complete_pages, Hkv, D); need layout.page_summaries.
  const float* page_kmin(int layer) const { return layers_[layer].kmin.data(); }
  const float* page_kmax(int layer) const { return layers_[layer].kmax.data(); }
  const float* page_kmean(int layer) const { return layers_[layer].kmean.data(); }
  // Pool mode: the same summaries where the rows are (rows_on's memory), for the device-side page routers
  // (backend/decode-lists.h): (capacity >= complete_pages, 3, Hkv, D) f32, planes min / max / mean; rows past
  // complete_pages are stale. Empty before the first page completes.
  const Tensor& page_summary(int layer) const { return layers_[layer].summary; }

  // Pool mode: appends rows already on the pool's backend: row i of k, v (n, Hkv, D), of the backend's act()
  // type, is at[i], each the next raw index of the layer or the next row of its level's store. Gist keys are
  // copied to the host for the scoring tiles.
  void append_rows(int layer, const std::vector<kv_addr>& at, const Tensor& k, const Tensor& v);
  // append_rows without the write: the pages, gist tiles, summaries and pool growth of rows `at` (k: their keys,
  // read on the host only for gist tiles and summaries); returns their K rows in pool(layer), for the caller's
  // backend kv_write (or kv_write_rows, several sessions' rows in one call).
  std::vector<int64_t> reserve_rows(int layer, const std::vector<kv_addr>& at, const Tensor& k);
  // Pool mode: issues the moves off the device that reserve_rows recorded (tier host; else nothing). Call it
  // once the reserved rows are written, before they or the moved pages are read.
  void commit_rows(int layer);
  // Pool mode: grows every layer's pool now to hold `frames` frames (pages of raw rows and of gist rows), so that
  // appends up to that many frames do not grow it (a doubling copies the whole pool: a one-time stall of ~100 ms
  // at 128k on the 1B shape). Nothing with a device budget (tier host), which bounds the pools instead.
  void reserve_frames(int64_t frames);
  // Frames a layer has taken so far (the pool's high-water mark).
  int64_t frames_taken(int layer) const { return layers_[layer].frames; }
  Tensor& pool(int layer) { return layers_[layer].pool; }
  // Tier host: where the layer's off-device rows start (null before a page has left the device).
  void* host(int layer) const { return layers_[layer].host ? layers_[layer].host->data() : nullptr; }
  bool pooled() const { return lay_.rows_on != nullptr; }
  // Tier host: pages moved off the device so far (in each layer alike); their pool rows changed when they moved.
  int64_t pages_moved() const { return layers_.empty() ? 0 : layers_[0].host_frames; }
  // Pool mode: the K row of an appended address in pool(layer) (its V row is page_size rows later).
  int64_t pool_row(int layer, kv_addr a) const {
    const int P = lay_.page_size;
    const layer_cache& lc = layers_[layer];
    if (a.level < 0 && lc.pages[a.index / P].frame < 0)  // moved off the device (tier host)
      return kv_host_row0 + int64_t(lc.pages[a.index / P].host_frame) * 2 * P + a.index % P;
    const int32_t f = a.level < 0 ? lc.pages[a.index / P].frame : lc.gists[a.level].frames[a.index / P];
    return int64_t(f) * 2 * P + a.index % P;
  }
  const Tensor& pool(int layer) const { return layers_[layer].pool; }

  // Keeps the first n_raw raw rows of every layer and the first gists[l] rows of gist store l (gists.size() ==
  // gist_levels) and forgets the rest: afterwards every observable (rows, page states, summaries, scoring tiles,
  // bytes) is what a cache that received only those rows holds. Raw pages that the window rule keeps resident
  // at n_raw are read back from the file. Throws gsa::error for counts beyond what the cache holds, and where
  // truncatable(n_raw) is false.
  void truncate(int n_raw, const std::vector<int64_t>& gists);
  // False when a page that must be resident at n_raw no longer exists (tier drop), or, in pool mode with page
  // summaries, when n_raw cuts a page that was already complete (its keys left the host). A spilled cache answers
  // for after its restore (truncate itself needs it restored).
  bool truncatable(int n_raw) const;

  // Host caches only (pool mode: gsa::error). spill() writes every resident row (memory pages, the window and
  // the sink included, gist stores, page summaries) into the backing file, created on first use for a cache of
  // tier memory (an unlinked temporary file), and frees it; the scoring tiles are freed and rebuilt on restore.
  // restore() reads it back and releases the file space the spill used. A spilled cache takes no row, read or
  // append (GSA_ASSERT) until restored. bytes() reports the spilled rows as file.
  void spill();
  void restore();
  bool spilled() const { return spilled_; }
  // Bytes of the backing file in use, holes included (0 without a file): what the file occupies on disk.
  int64_t file_used() const { return file_used_; }

  cache_bytes bytes() const;
  int64_t row_bytes() const { return int64_t(lay_.n_kv_heads) * lay_.head_dim * sizeof(float); }  // one K row

 private:
  struct page {
    page_tier tier = page_tier::memory;
    std::vector<float> data;  // memory: K (P, Hkv, D) then V (P, Hkv, D)
    int64_t file_offset = -1; // file: byte offset of the same layout
    int32_t frame = -1;       // pool mode: the page's frame in the layer's pool (-1: moved to host_frame)
    int32_t host_frame = -1;  // tier host: its frame in the layer's host part once it left the device
    bool spilled = false;     // tier file because of spill(): restore() reads it back
  };
  struct gist_store {
    int64_t n = 0;
    std::vector<float> k, v;  // (n, Hkv, D)
    std::vector<std::vector<float>> kt;  // (Hkv) tiles (ceil(n / gist_tile), D, gist_tile)
    std::vector<int32_t> frames;         // pool mode: gist page j -> frame
    int64_t spill_offset = -1;           // spilled: K then V rows in the file
  };
  struct layer_cache {
    int n_raw = 0;
    std::vector<page> pages;  // the page table
    std::vector<gist_store> gists;
    std::vector<float> kmin, kmax, kmean;
    int64_t summary_offset = -1;  // spilled: kmin, kmax, kmean in the file
    Tensor summary;               // pool mode: page_summary()
    Tensor pool;         // pool mode: (capacity frames * 2 P, Hkv, D) on lay_.rows_on
    int32_t frames = 0;  // frames ever taken (the pool's high-water mark)
    // Tier host: the host part, frames it holds, device frames free for reuse, and the moves reserve_rows
    // recorded for commit_rows ({device frame, host frame}; their device frames are not reused before).
    std::unique_ptr<host_region> host;
    int32_t host_frames = 0;
    std::vector<int32_t> free_frames;
    std::vector<std::pair<int32_t, int32_t>> moves;
  };

  const float* row(int layer, kv_addr a, int h, int which) const;
  void move_off_device(int layer, int p);
  int64_t device_pool_bytes() const;
  void grow_pool(int layer, int64_t need_rows);  // pool mode: capacity >= need_rows rows (doubling, budget)
  void page_completed(int layer, int p);
  void add_tiles(gist_store& g, const float* k);
  int32_t new_frame(layer_cache& lc);
  void retire(int layer, int p);
  // Whether page p stays in memory once `complete` pages of its layer are complete (sink, window; every page
  // for tier memory).
  bool keeps_resident(int p, int complete) const;
  void open_file();
  void ensure_mapped(int64_t end);
  // Writes n bytes at the end of the file's used part (after ensure_mapped), returns their offset.
  int64_t write_end(const void* src, int64_t n);
  void read_at(int64_t offset, void* dst, int64_t n) const;
  size_t page_floats() const { return size_t(2) * lay_.page_size * lay_.n_kv_heads * lay_.head_dim; }

  cache_layout lay_;
  std::vector<layer_cache> layers_;
  int fd_ = -1;
  char* map_ = nullptr;
  int64_t map_len_ = 0, file_len_ = 0, file_used_ = 0;
  std::vector<int64_t> free_slots_;  // page-sized holes in the file (pages cut by truncate or read back)
  bool spilled_ = false;
  int64_t spill_begin_ = 0;          // where the spill's writes start in the file
  int64_t spilled_bytes_ = 0;        // gist stores and summaries in the file while spilled
};

}  // namespace gsa::kv
