// The paged KV cache: page table, gist stores, summaries, tiering to an mmapped file. Contract in kv-cache.h.
// The backing file grows by doubling (ftruncate) and is remapped only inside append_* (when a page spills), so
// row pointers handed out stay valid until the next append.
#include "kv/kv-cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "backend/backend.h"
#include "core/error.h"

namespace gsa::kv {

const char* page_tier_name(page_tier t) {
  switch (t) {
    case page_tier::memory: return "memory";
    case page_tier::file: return "file";
    case page_tier::drop: return "drop";
    case page_tier::host: return "host";
  }
  return "?";
}

page_tier page_tier_from_name(const std::string& s) {
  if (s == "memory") return page_tier::memory;
  if (s == "file") return page_tier::file;
  if (s == "drop") return page_tier::drop;
  fail("unknown KV page tier '{}' (use memory, file or drop)", s);
}

kv_cache::kv_cache(const cache_layout& layout) : lay_(layout) {
  if (lay_.n_layers <= 0 || lay_.n_kv_heads <= 0 || lay_.head_dim <= 0)
    fail("kv_cache: bad layout ({} layers, {} KV heads, head dim {})", lay_.n_layers, lay_.n_kv_heads, lay_.head_dim);
  if (lay_.page_size <= 0) fail("kv_cache: page size {} must be positive", lay_.page_size);
  if (lay_.window_pages < 0 || lay_.sink < 0 || lay_.gist_levels < 0) fail("kv_cache: negative window, sink or levels");
  if (lay_.rows_on && lay_.tier != page_tier::memory && lay_.tier != page_tier::host)
    fail("a KV cache on {} keeps its pages in its memory or in pinned host memory (--gpu-kv-budget): use "
         "--kv-tier memory there, or --device cpu",
         lay_.rows_on->describe());
  if (lay_.tier == page_tier::host && !lay_.rows_on)
    fail("--gpu-kv-budget moves pages off a device's memory; this cache lives on the host (use --device cuda, or "
         "--kv-tier file to keep raw pages in a file)");
  if (lay_.tier == page_tier::host && lay_.max_raw <= 0) fail("kv_cache: tier host needs the largest context");
  layers_.resize(lay_.n_layers);
  for (auto& l : layers_) {
    l.gists.resize(lay_.gist_levels);
    for (auto& g : l.gists) g.kt.resize(lay_.n_kv_heads);
  }
  if (lay_.tier == page_tier::file) open_file();
}

void kv_cache::open_file() {
  if (lay_.file_path.empty()) {
    char tmpl[] = "/tmp/gsa-kv-XXXXXX";
    fd_ = mkstemp(tmpl);
    if (fd_ >= 0) unlink(tmpl);  // the file lives as long as the descriptor
  } else {
    fd_ = open(lay_.file_path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
  }
  if (fd_ < 0)
    fail("kv_cache: cannot create the page file '{}': {}", lay_.file_path.empty() ? "/tmp" : lay_.file_path,
         std::strerror(errno));
}

kv_cache::~kv_cache() {
  if (map_) munmap(map_, size_t(map_len_));
  if (fd_ >= 0) close(fd_);
}

page_tier kv_cache::page_state(int layer, int p) const { return layers_[layer].pages[p].tier; }

const float* kv_cache::row(int layer, kv_addr a, int h, int which) const {
  GSA_ASSERT(!lay_.rows_on, "a pooled KV cache keeps its rows on {}", lay_.rows_on->describe());
  GSA_ASSERT(!spilled_, "a spilled KV cache must be restored before its rows are read");
  const int Hkv = lay_.n_kv_heads, D = lay_.head_dim;
  const layer_cache& lc = layers_[layer];
  if (a.level >= 0) {
    const gist_store& g = lc.gists[a.level];
    return (which ? g.v.data() : g.k.data()) + (size_t(a.index) * Hkv + h) * D;
  }
  const int P = lay_.page_size;
  const page& pg = lc.pages[a.index / P];
  const size_t off = (size_t(which) * P + a.index % P) * Hkv * D + size_t(h) * D;
  if (pg.tier == page_tier::memory) return pg.data.data() + off;
  GSA_ASSERT(pg.tier == page_tier::file, "raw token {} of layer {} was dropped from the cache", a.index, layer);
  return reinterpret_cast<const float*>(map_ + pg.file_offset) + off;
}

void kv_cache::append_raw(int layer, const float* k, const float* v) {
  GSA_ASSERT(!lay_.rows_on, "a pooled KV cache takes rows through append_rows");
  GSA_ASSERT(!spilled_, "a spilled KV cache must be restored before rows are appended");
  layer_cache& lc = layers_[layer];
  const int P = lay_.page_size;
  const size_t rowf = size_t(lay_.n_kv_heads) * lay_.head_dim;
  const int t = lc.n_raw, p = t / P;
  if (p == int(lc.pages.size())) {
    lc.pages.emplace_back();
    lc.pages.back().data.resize(page_floats());
  }
  float* base = lc.pages[p].data.data();
  std::memcpy(base + size_t(t % P) * rowf, k, rowf * sizeof(float));
  std::memcpy(base + (size_t(P) + t % P) * rowf, v, rowf * sizeof(float));
  lc.n_raw++;
  if (lc.n_raw % P == 0) page_completed(layer, p);
}

void kv_cache::append_gist(int layer, int level, const float* k, const float* v) {
  GSA_ASSERT(level >= 0 && level < lay_.gist_levels, "gist level {} of {}", level, lay_.gist_levels);
  GSA_ASSERT(!spilled_, "a spilled KV cache must be restored before rows are appended");
  gist_store& g = layers_[layer].gists[level];
  const size_t rowf = size_t(lay_.n_kv_heads) * lay_.head_dim;
  GSA_ASSERT(!lay_.rows_on, "a pooled KV cache takes rows through append_rows");
  g.k.insert(g.k.end(), k, k + rowf);
  g.v.insert(g.v.end(), v, v + rowf);
  add_tiles(g, k);
}

void kv_cache::add_tiles(gist_store& g, const float* k) {
  const int Hkv = lay_.n_kv_heads, D = lay_.head_dim, lane = int(g.n % gist_tile);
  for (int h = 0; h < Hkv; h++) {
    auto& t = g.kt[h];
    if (lane == 0) t.resize(t.size() + size_t(D) * gist_tile, 0.0f);
    float* tile = t.data() + t.size() - size_t(D) * gist_tile;
    for (int d = 0; d < D; d++) tile[size_t(d) * gist_tile + lane] = k[size_t(h) * D + d];
  }
  g.n++;
}

int32_t kv_cache::new_frame(layer_cache& lc) {
  if (lc.free_frames.empty()) return lc.frames++;
  const int32_t f = lc.free_frames.back();
  lc.free_frames.pop_back();
  return f;
}

void kv_cache::move_off_device(int layer, int p) {
  layer_cache& lc = layers_[layer];
  page& pg = lc.pages[p];
  const size_t frame_bytes = size_t(2) * lay_.page_size * lay_.n_kv_heads * lay_.head_dim *
                             dtype_size(lay_.rows_on->act());
  if (!lc.host) {
    const int64_t frames = (lay_.max_raw + lay_.page_size - 1) / lay_.page_size + 1;
    lc.host = std::make_unique<host_region>(*lay_.rows_on, size_t(frames) * frame_bytes);
  }
  const int32_t h = lc.host_frames++;
  lc.host->ensure(size_t(h + 1) * frame_bytes);
  lc.moves.push_back({pg.frame, h});
  pg.host_frame = h;
  pg.frame = -1;
  pg.tier = page_tier::host;
}

void kv_cache::commit_rows(int layer) {
  layer_cache& lc = layers_[layer];
  if (lc.moves.empty()) return;
  lay_.rows_on->kv_move_frames(lc.pool, lc.host->data(), lay_.page_size, lc.moves);
  for (const auto& m : lc.moves) lc.free_frames.push_back(m.first);
  lc.moves.clear();
}

int64_t kv_cache::device_pool_bytes() const {
  int64_t b = 0;
  for (const auto& lc : layers_) b += int64_t(lc.pool.nbytes());
  return b;
}

void kv_cache::append_rows(int layer, const std::vector<kv_addr>& at, const Tensor& k, const Tensor& v) {
  GSA_ASSERT(v.numel() == k.numel(), "append_rows: k {}, v {}", shape_str(k.shape()), shape_str(v.shape()));
  const std::vector<int64_t> rows = reserve_rows(layer, at, k);
  lay_.rows_on->kv_write(layers_[layer].pool, lay_.page_size, rows, k, v);
  commit_rows(layer);
}

std::vector<int64_t> kv_cache::reserve_rows(int layer, const std::vector<kv_addr>& at, const Tensor& k) {
  GSA_ASSERT(lay_.rows_on, "append_rows needs a pooled KV cache");
  layer_cache& lc = layers_[layer];
  const int P = lay_.page_size, Hkv = lay_.n_kv_heads, D = lay_.head_dim;
  const size_t rowf = size_t(Hkv) * D;
  GSA_ASSERT(k.numel() == int64_t(at.size() * rowf), "append_rows: {} rows, k {}", at.size(), shape_str(k.shape()));
  // The keys the host needs (gist rows for the scoring tiles; raw rows too for page summaries) in f32. Keys on
  // a device: only those rows are gathered there and copied over (a prefill's gist rows are a few percent of its
  // rows; copying the whole layer's keys cost ~30 ms a layer at 32k on the H200), then widened one by one.
  std::vector<int32_t> wanted;  // the rows the host needs, ascending
  for (size_t i = 0; i < at.size(); i++)
    if (at[i].level >= 0 || lay_.page_summaries) wanted.push_back(int32_t(i));
  // gathered: kh holds wanted's rows in order (their j-th is row wanted[j]); else every row of k (row i at i).
  const bool gathered = !wanted.empty() && wanted.size() < at.size() && !k.on_host();
  Tensor kh;
  if (gathered) {
    backend& be = *lay_.rows_on;
    Tensor ids = be.upload(Tensor::borrow(wanted.data(), {int64_t(wanted.size())}, dtype::i32), dtype::i32);
    Tensor picked = be.alloc({int64_t(wanted.size()), int64_t(rowf)}, k.type());
    be.embedding_forward(picked, ids, k.view({int64_t(at.size()), int64_t(rowf)}));
    kh = picked.host(k.type());
  } else if (!wanted.empty()) {
    kh = k.host(k.type());
  }
  size_t next = 0;  // key_row is called for wanted's rows in ascending order
  std::vector<float> widened(rowf);
  auto key_row = [&](size_t i) -> const float* {
    const size_t at_kh = gathered ? next++ : i;
    GSA_ASSERT(!gathered || size_t(wanted[at_kh]) == i, "key_row({}) out of order", i);
    const char* src = static_cast<const char*>(kh.raw()) + at_kh * rowf * dtype_size(kh.type());
    if (kh.type() == dtype::f32) return reinterpret_cast<const float*>(src);
    convert_to_f32(widened.data(), src, kh.type(), rowf);
    return widened.data();
  };
  std::vector<int64_t> rows(at.size());
  for (size_t i = 0; i < at.size(); i++) {
    const kv_addr a = at[i];
    if (a.level < 0) {
      GSA_ASSERT(a.index == lc.n_raw, "raw row {} appended as {}", lc.n_raw, a.index);
      const int p = lc.n_raw / P;
      if (lc.n_raw % P == 0) {
        lc.pages.emplace_back();
        lc.pages.back().frame = new_frame(lc);
        // Summaries: the page's keys wait on the host (K half only) until it completes.
        if (lay_.page_summaries) lc.pages.back().data.assign(size_t(P) * rowf, 0.0f);
      }
      if (lay_.page_summaries)
        std::copy_n(key_row(i), rowf, lc.pages[p].data.data() + size_t(lc.n_raw % P) * rowf);
      lc.n_raw++;
      if (lc.n_raw % P == 0 && (lay_.page_summaries || lay_.tier == page_tier::host)) {
        page_completed(layer, p);
        std::vector<float>().swap(lc.pages[p].data);
      }
    } else {
      GSA_ASSERT(a.level < lay_.gist_levels, "gist level {} of {}", a.level, lay_.gist_levels);
      gist_store& g = lc.gists[a.level];
      GSA_ASSERT(a.index == g.n, "gist row {} of level {} appended as {}", g.n, a.level, a.index);
      if (g.n % P == 0) g.frames.push_back(new_frame(lc));
      add_tiles(g, key_row(i));
    }
    rows[i] = pool_row(layer, a);
  }
  grow_pool(layer, int64_t(lc.frames) * 2 * P);
  return rows;
}

void kv_cache::grow_pool(int layer, int64_t need) {
  backend& be = *lay_.rows_on;
  layer_cache& lc = layers_[layer];
  const int P = lay_.page_size, Hkv = lay_.n_kv_heads, D = lay_.head_dim;
  if (lc.pool.empty() || lc.pool.dim(0) < need) {  // grow by doubling; the old frames keep their rows
    int64_t cap = lc.pool.empty() ? int64_t(2) * P * 4 : lc.pool.dim(0);
    while (cap < need) cap *= 2;
    if (lay_.device_budget > 0) {  // doubling stops at the budget; needing more than it is an error
      const int64_t row_bytes = int64_t(Hkv) * D * int64_t(dtype_size(be.act()));
      const int64_t others = device_pool_bytes() - int64_t(lc.pool.nbytes());
      const int64_t room = (lay_.device_budget - others) / row_bytes / (2 * P) * (2 * P);
      if (need > room)
        fail("the KV cache needs {} bytes on {} for its gists, window and sink (layer {} of {}), beyond "
             "--gpu-kv-budget {}: raise the budget or shorten the context",
             others + need * row_bytes, be.describe(), layer + 1, lay_.n_layers, lay_.device_budget);
      cap = std::min(cap, room);
    }
    Tensor grown = be.alloc({cap, Hkv, D}, be.act());
    if (!lc.pool.empty()) {
      Tensor head = grown.slice_rows(0, lc.pool.dim(0));
      be.copy(head, lc.pool);
    }
    lc.pool = grown;
  }
}

void kv_cache::reserve_frames(int64_t frames) {
  GSA_ASSERT(lay_.rows_on, "reserve_frames needs a pooled KV cache");
  if (lay_.device_budget > 0) return;  // tier host: the budget, not the context, bounds the pools
  for (int l = 0; l < lay_.n_layers; l++) grow_pool(l, frames * 2 * lay_.page_size);
}

void kv_cache::page_completed(int layer, int p) {
  layer_cache& lc = layers_[layer];
  const int P = lay_.page_size, Hkv = lay_.n_kv_heads, D = lay_.head_dim;
  if (lay_.page_summaries) {
    const float* k = lc.pages[p].data.data();
    const size_t rowf = size_t(Hkv) * D;
    lc.kmin.resize((size_t(p) + 1) * rowf, std::numeric_limits<float>::infinity());
    lc.kmax.resize((size_t(p) + 1) * rowf, -std::numeric_limits<float>::infinity());
    lc.kmean.resize((size_t(p) + 1) * rowf, 0.0f);
    float* mn = lc.kmin.data() + size_t(p) * rowf;
    float* mx = lc.kmax.data() + size_t(p) * rowf;
    float* me = lc.kmean.data() + size_t(p) * rowf;
    for (int t = 0; t < P; t++)
      for (size_t i = 0; i < rowf; i++) {
        const float x = k[size_t(t) * rowf + i];
        mn[i] = std::min(mn[i], x);
        mx[i] = std::max(mx[i], x);
        me[i] += x / float(P);
      }
    if (lay_.rows_on) {  // the device routers' copy (grows by doubling, like the pool)
      backend& be = *lay_.rows_on;
      if (lc.summary.empty() || lc.summary.dim(0) <= p) {
        int64_t cap = lc.summary.empty() ? 64 : lc.summary.dim(0);
        while (cap <= p) cap *= 2;
        Tensor grown = be.alloc({cap, 3, Hkv, D}, dtype::f32);
        if (!lc.summary.empty()) {
          Tensor head = grown.slice_rows(0, lc.summary.dim(0));
          be.copy(head, lc.summary);
        }
        lc.summary = grown;
      }
      std::vector<float> planes(3 * rowf);
      std::copy_n(mn, rowf, planes.data());
      std::copy_n(mx, rowf, planes.data() + rowf);
      std::copy_n(me, rowf, planes.data() + 2 * rowf);
      Tensor dst = lc.summary.slice_rows(p, p + 1);
      be.copy(dst, be.upload(Tensor::borrow(planes.data(), {1, 3, Hkv, D}, dtype::f32), dtype::f32));
    }
  }
  // The window of the next raw token (chunk p+1) is pages [p + 1 - window, p]; the gists that close page p
  // still see [p - window, p], so the page that leaves now is p - window - 1.
  const int leaving = p - lay_.window_pages - 1;
  if (leaving >= 0 && lay_.tier != page_tier::memory) retire(layer, leaving);
}

void kv_cache::ensure_mapped(int64_t end) {
  if (end <= file_len_) return;
  int64_t cap = std::max<int64_t>(file_len_ * 2, int64_t(1) << 20);
  while (cap < end) cap *= 2;
  if (ftruncate(fd_, cap) != 0) fail("kv_cache: cannot grow the page file to {} bytes: {}", cap, std::strerror(errno));
  file_len_ = cap;
  if (map_) munmap(map_, size_t(map_len_));
  void* m = mmap(nullptr, size_t(cap), PROT_READ, MAP_SHARED, fd_, 0);
  if (m == MAP_FAILED) {
    map_ = nullptr;
    map_len_ = 0;
    fail("kv_cache: cannot map the page file ({} bytes): {}", cap, std::strerror(errno));
  }
  map_ = static_cast<char*>(m);
  map_len_ = cap;
}

namespace {

void write_at(int fd, int64_t offset, const void* src, int64_t n) {
  const char* p = static_cast<const char*>(src);
  for (int64_t done = 0; done < n;) {
    const ssize_t w = pwrite(fd, p + done, size_t(n - done), off_t(offset + done));
    if (w < 0) fail("kv_cache: cannot write to the page file: {}", std::strerror(errno));
    done += w;
  }
}

}  // namespace

int64_t kv_cache::write_end(const void* src, int64_t n) {
  ensure_mapped(file_used_ + n);
  write_at(fd_, file_used_, src, n);
  file_used_ += n;
  return file_used_ - n;
}

void kv_cache::read_at(int64_t offset, void* dst, int64_t n) const {
  GSA_ASSERT(map_ && offset >= 0 && offset + n <= file_used_, "page file read [{}, {}) outside [0, {})", offset,
             offset + n, file_used_);
  std::memcpy(dst, map_ + offset, size_t(n));
}

void kv_cache::retire(int layer, int p) {
  page& pg = layers_[layer].pages[p];
  if (int64_t(p) * lay_.page_size < lay_.sink || pg.tier != page_tier::memory) return;  // sink pages stay
  if (lay_.tier == page_tier::host) return move_off_device(layer, p);
  if (lay_.tier == page_tier::file) {
    const int64_t bytes = int64_t(page_floats()) * sizeof(float);
    if (!free_slots_.empty()) {  // a hole left by a page that truncate() cut or read back
      pg.file_offset = free_slots_.back();
      free_slots_.pop_back();
      write_at(fd_, pg.file_offset, pg.data.data(), bytes);
    } else {
      pg.file_offset = write_end(pg.data.data(), bytes);
    }
    pg.tier = page_tier::file;
  } else {
    pg.tier = page_tier::drop;
  }
  std::vector<float>().swap(pg.data);
}

cache_bytes kv_cache::bytes() const {
  cache_bytes b;
  b.file = spilled_bytes_;
  const int64_t page_bytes = int64_t(page_floats()) * sizeof(float);
  for (const auto& lc : layers_) {
    if (lay_.rows_on) {
      b.device += int64_t(lc.pool.nbytes() + (lc.summary.empty() ? 0 : lc.summary.nbytes()));
      if (lc.host) b.pinned += int64_t(lc.host->committed());
      b.resident += int64_t(lc.kmin.size() + lc.kmax.size() + lc.kmean.size()) * sizeof(float);
      for (const auto& pg : lc.pages) b.resident += int64_t(pg.data.size()) * sizeof(float);
      for (const auto& t : lc.gists)
        for (const auto& kt : t.kt) b.scoring += int64_t(kt.size()) * sizeof(float);
      continue;
    }
    for (const auto& pg : lc.pages) {
      if (pg.tier == page_tier::memory) b.resident += page_bytes;
      else if (pg.tier == page_tier::file) b.file += page_bytes;
      else b.dropped += page_bytes;
    }
    for (const auto& g : lc.gists) {
      b.resident += int64_t(g.k.size() + g.v.size()) * sizeof(float);
      for (const auto& t : g.kt) b.scoring += int64_t(t.size()) * sizeof(float);
    }
    b.resident += int64_t(lc.kmin.size() + lc.kmax.size() + lc.kmean.size()) * sizeof(float);
  }
  return b;
}

}  // namespace gsa::kv
