// The KV cache's tail cut (truncate) and its spill to the backing file and back (contract in kv-cache.h).
#include <fcntl.h>

#include <algorithm>

#include "backend/backend.h"
#include "core/error.h"
#include "kv/kv-cache.h"

namespace gsa::kv {

bool kv_cache::keeps_resident(int p, int complete) const {
  // page_completed retires page q - window - 1 when page q completes, so after `complete` pages the pages below
  // complete - window - 1 have left memory, sink pages excepted.
  return lay_.tier == page_tier::memory || int64_t(p) * lay_.page_size < lay_.sink ||
         p >= complete - lay_.window_pages - 1;
}

bool kv_cache::truncatable(int n_raw) const {
  if (n_raw < 0) return false;  // (a spilled cache answers for after its restore: spilled pages come back)
  const int P = lay_.page_size, complete = n_raw / P, kept = (n_raw + P - 1) / P;
  for (const layer_cache& lc : layers_) {
    if (n_raw > lc.n_raw) return false;
    if (lc.host_frames > 0) return false;  // tier host: pages left the device (a cut would need them back)
    for (int p = 0; p < kept; p++)
      if (lc.pages[p].tier == page_tier::drop && keeps_resident(p, complete)) return false;
    // Pool mode keeps a page's keys on the host only until the page completes (its summary is made then).
    if (lay_.rows_on && lay_.page_summaries && n_raw % P != 0 && lc.pages[kept - 1].data.empty()) return false;
  }
  return true;
}

void kv_cache::truncate(int n_raw, const std::vector<int64_t>& gists) {
  if (spilled_) fail("kv_cache::truncate: the cache is spilled to its file; restore it first");
  if (int(gists.size()) != lay_.gist_levels)
    fail("kv_cache::truncate: {} gist counts for a cache of {} gist levels", gists.size(), lay_.gist_levels);
  for (const layer_cache& lc : layers_) {
    if (n_raw < 0 || n_raw > lc.n_raw)
      fail("kv_cache::truncate: keep {} raw rows of a cache that holds {}", n_raw, lc.n_raw);
    for (int l = 0; l < lay_.gist_levels; l++)
      if (gists[l] < 0 || gists[l] > lc.gists[l].n)
        fail("kv_cache::truncate: keep {} gist rows of level {}, the cache holds {}", gists[l], l, lc.gists[l].n);
  }
  if (!truncatable(n_raw))
    fail("kv_cache::truncate: the cache cannot be cut at {} raw rows: a page it would need in memory was {}", n_raw,
         lay_.tier == page_tier::host ? "moved off the device (--gpu-kv-budget)"
         : lay_.rows_on               ? "completed on the device (its keys left the host)"
                                      : "dropped (tier drop)");
  const int P = lay_.page_size, Hkv = lay_.n_kv_heads, D = lay_.head_dim;
  const int complete = n_raw / P, kept = (n_raw + P - 1) / P, cut_rows = n_raw % P;
  const size_t rowf = size_t(Hkv) * D;
  const int64_t page_bytes = int64_t(page_floats()) * sizeof(float);
  for (layer_cache& lc : layers_) {
    for (int p = kept; p < int(lc.pages.size()); p++)
      if (lc.pages[p].tier == page_tier::file) free_slots_.push_back(lc.pages[p].file_offset);
    lc.pages.resize(size_t(kept));
    for (int p = 0; p < kept; p++) {  // pages that the window holds at n_raw come back from the file
      page& pg = lc.pages[p];
      if (pg.tier != page_tier::file || !keeps_resident(p, complete)) continue;
      pg.data.resize(page_floats());
      read_at(pg.file_offset, pg.data.data(), page_bytes);
      free_slots_.push_back(pg.file_offset);
      pg.file_offset = -1;
      pg.tier = page_tier::memory;
    }
    if (cut_rows > 0 && !lc.pages[kept - 1].data.empty()) {  // the rows past the cut as a new page has them: zero
      std::vector<float>& d = lc.pages[kept - 1].data;
      std::fill(d.begin() + ptrdiff_t(cut_rows * rowf), d.begin() + ptrdiff_t(P * rowf), 0.0f);
      if (!lay_.rows_on) std::fill(d.begin() + ptrdiff_t((P + cut_rows) * rowf), d.end(), 0.0f);
    }
    if (lay_.page_summaries) {
      lc.kmin.resize(size_t(complete) * rowf);
      lc.kmax.resize(size_t(complete) * rowf);
      lc.kmean.resize(size_t(complete) * rowf);
    }
    for (int l = 0; l < lay_.gist_levels; l++) {
      gist_store& g = lc.gists[l];
      const int64_t n = gists[l];
      g.n = n;
      if (!lay_.rows_on) {
        g.k.resize(size_t(n) * rowf);
        g.v.resize(size_t(n) * rowf);
      }
      const int64_t tiles = (n + gist_tile - 1) / gist_tile;
      for (auto& t : g.kt) {
        t.resize(size_t(tiles) * D * gist_tile);
        if (n % gist_tile == 0) continue;
        // The last tile's lanes past n are zero, as add_tiles leaves them.
        const int lane = int(n % gist_tile);
        float* tile = t.data() + t.size() - size_t(D) * gist_tile;
        for (int d = 0; d < D; d++) std::fill_n(tile + size_t(d) * gist_tile + lane, gist_tile - lane, 0.0f);
      }
      if (lay_.rows_on) g.frames.resize(size_t((n + P - 1) / P));
    }
    if (lay_.rows_on) {
      // Frames were allocated in the order rows arrived, so the cut rows' frames are the newest ones when the cut
      // is one point of the stream (as a session makes it); new rows reuse frames from the highest kept one on.
      int32_t top = -1;
      for (const page& pg : lc.pages) top = std::max(top, pg.frame);
      for (const gist_store& g : lc.gists)
        for (int32_t f : g.frames) top = std::max(top, f);
      lc.frames = top + 1;
    }
    lc.n_raw = n_raw;
  }
}

void kv_cache::spill() {
  if (lay_.rows_on) fail("a KV cache on {} cannot spill to a file", lay_.rows_on->describe());
  GSA_ASSERT(!spilled_, "spill: the KV cache is spilled already");
  if (fd_ < 0) open_file();
  spill_begin_ = file_used_;
  spilled_bytes_ = 0;
  const int64_t page_bytes = int64_t(page_floats()) * sizeof(float);
  auto out = [&](std::vector<float>& v) {  // writes and frees v, returns its offset
    const int64_t n = int64_t(v.size() * sizeof(float)), at = write_end(v.data(), n);
    spilled_bytes_ += n;
    std::vector<float>().swap(v);
    return at;
  };
  for (layer_cache& lc : layers_) {
    for (page& pg : lc.pages) {
      if (pg.tier != page_tier::memory) continue;
      pg.file_offset = write_end(pg.data.data(), page_bytes);
      std::vector<float>().swap(pg.data);
      pg.tier = page_tier::file;
      pg.spilled = true;
    }
    for (gist_store& g : lc.gists) {
      if (g.n == 0) continue;
      g.spill_offset = out(g.k);
      out(g.v);
      for (auto& t : g.kt) std::vector<float>().swap(t);
    }
    if (!lc.kmin.empty()) {
      lc.summary_offset = out(lc.kmin);
      out(lc.kmax);
      out(lc.kmean);
    }
  }
  spilled_ = true;
}

void kv_cache::restore() {
  GSA_ASSERT(spilled_, "restore: the KV cache is not spilled");
  const size_t rowf = size_t(lay_.n_kv_heads) * lay_.head_dim;
  auto in = [&](std::vector<float>& v, size_t n, int64_t at) {
    v.resize(n);
    read_at(at, v.data(), int64_t(n * sizeof(float)));
    return at + int64_t(n * sizeof(float));
  };
  for (layer_cache& lc : layers_) {
    for (page& pg : lc.pages) {
      if (!pg.spilled) continue;
      in(pg.data, page_floats(), pg.file_offset);
      pg.file_offset = -1;
      pg.tier = page_tier::memory;
      pg.spilled = false;
    }
    for (gist_store& g : lc.gists) {
      if (g.spill_offset < 0) continue;
      const int64_t n = g.n;
      in(g.v, size_t(n) * rowf, in(g.k, size_t(n) * rowf, g.spill_offset));
      g.spill_offset = -1;
      g.n = 0;  // the scoring tiles, rebuilt row by row
      for (int64_t i = 0; i < n; i++) add_tiles(g, g.k.data() + size_t(i) * rowf);
    }
    if (lc.summary_offset >= 0) {
      const size_t n = size_t(lc.n_raw / lay_.page_size) * rowf;
      in(lc.kmean, n, in(lc.kmax, n, in(lc.kmin, n, lc.summary_offset)));
      lc.summary_offset = -1;
    }
  }
  // Nothing was written after the spill began (a spilled cache takes no rows): its bytes are the file's tail.
  const int64_t end = file_used_;
  file_used_ = spill_begin_;
  if (end > spill_begin_)  // hand the disk blocks back (best effort: a file system without holes keeps them)
    (void)fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(spill_begin_), off_t(end - spill_begin_));
  spilled_ = false;
  spilled_bytes_ = 0;
}

}  // namespace gsa::kv
