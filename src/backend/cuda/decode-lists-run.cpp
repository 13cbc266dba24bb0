// The CUDA backend's decode lists (backend.h prepare_decode_lists / decode_attention_lists; contract in
// backend/decode-lists.h): per step one upload of the row's description; per layer the gist scores and top-k of
// select.h's kernels, the expansion of the unfolded chunks (decode-lists.h) and the split-K decode kernel, which
// reads the base rows as every list's shared prefix, all on ctx().stream with no host synchronisation.
#include "backend/cuda/decode-lists-run.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "backend/cuda/decode-attention.h"
#include "backend/cuda/decode-lists.h"
#include "backend/cuda/runtime.h"
#include "backend/cuda/select.h"
#include "core/error.h"
#include "gist/config.h"

namespace gsa::cuda {

namespace {


struct cuda_lists {
  // i32: head zeros (the no_extra lists: 2 (Hkv + 1) words), then gist_row, raw_row, raw_len, add_gists (n_cand
  // each), hgsa's unit rows; one upload per row and step.
  Tensor table;
  int head = 0;
  // The base rows (n_base of its capacity). A session's next row shares it when its base keeps a prefix of this
  // one (decode_lists::base_same): only the rows past the prefix are uploaded (full attention's base is the
  // whole context: 4 MB a step at 1M tokens otherwise).
  Tensor base_t;
  // decode_lists::sel_base_row when there is one (n_sel_base > 0; gists_all), uploaded and shared alike.
  Tensor sel_base_t;
  int n_sel_base = 0;
  int n_base = 0, n_cand = 0, cap = 0, g = 1, Hq = 0, Hkv = 0, D = 0, k = 0;
  int group = 0;   // lists_row::group
  int router = 0;  // lists_row::router
  int64_t longest = 0;
  select_detail::hier_args hier;  // levels > 1 (hgsa); unit_row filled in at run (points into table)
  std::vector<int64_t> unit_off;  // table offset of each level's unit rows (level 0: the candidates' gist rows)
  mutable Tensor units;           // hier scratch
  mutable Tensor mask;            // flat selection: (Hkv, ceil(n_cand / 32)) words
  mutable Tensor scores, indptr, indices;  // scratch of every layer of the step (one stream: in order)
  mutable Tensor tiles;                    // flat selection: expand_decode_rows' per-tile counts
  // (Hkv + 1) zero offsets: the lists of a layer that does not select are the base alone.
  const int64_t* no_extra() const { return static_cast<const int64_t*>(table.raw()); }
  const int32_t* at(int64_t off) const { return static_cast<const int32_t*>(table.raw()) + head + off; }
  const int32_t* base() const { return static_cast<const int32_t*>(base_t.raw()); }
  // The shared rows of a layer that selects (sel) or not.
  const int32_t* shared(bool sel) const {
    return static_cast<const int32_t*>(sel && n_sel_base ? sel_base_t.raw() : base_t.raw());
  }
  int n_shared(bool sel) const { return sel && n_sel_base ? n_sel_base : n_base; }
  const int32_t* cand(int which) const { return at(int64_t(which) * n_cand); }
};

// Device memory from the cache without clearing it (no launch): for scratch every use writes before it reads.
Tensor uncleared(const shape_t& shape, dtype t) {
  const size_t bytes = std::max<size_t>(1, size_t(shape_numel(shape)) * dtype_size(t));
  void* p = alloc(bytes);
  return Tensor::wrap(std::shared_ptr<void>(p, [](void* x) { release(x); }), p, shape, t, device::cuda);
}

decode_params shape_params(int Hq, int Hkv, int D, dtype act) {
  decode_params p;
  p.batch = 1;
  p.n_q_heads = Hq;
  p.n_kv_heads = Hkv;
  p.head_dim = D;
  p.kv_dtype = p.out_dtype = act == dtype::f32 ? decode_dtype::f32 : decode_dtype::bf16;
  p.scale = 1.0f / std::sqrt(float(D));
  p.q_stride_b = int64_t(Hq) * D;
  p.q_stride_h = D;
  p.kv_stride_t = int64_t(Hkv) * D;
  p.kv_stride_h = D;
  p.o_stride_b = int64_t(Hq) * D;
  p.o_stride_h = D;
  return p;
}

// A row's shared rows on the device (base or sel_base): the previous row's array (prev, n_prev rows of it valid)
// when its first `same` rows are this row's (decode_lists::base_same) and it holds them all, with only the rest
// uploaded; a fresh array with room to grow otherwise. (Reused: the previous row's kernels were done with it, its
// step ended synchronised.)
Tensor shared_rows(const std::vector<int32_t>& rows, int64_t same, const Tensor* prev, int64_t n_prev) {
  const int64_t n = int64_t(rows.size());
  same = prev ? std::min<int64_t>({same, n_prev, n}) : 0;
  const bool reuse = same > 0 && prev->numel() >= n;
  Tensor t = reuse ? *prev : uncleared({std::max<int64_t>(1024, n + n / 2)}, dtype::i32);
  const int64_t from = reuse ? same : 0;
  if (n > from) copy_h2d(static_cast<int32_t*>(t.raw()) + from, rows.data() + from, size_t(n - from) * sizeof(int32_t));
  return t;
}

}  // namespace

std::shared_ptr<const void> prepare_lists(backend& be, const decode_lists& d, const void* previous) {
  const dtype act = be.act();
  const int n = d.n_cand();
  const bool router = d.router != lists_router::none;
  // Not covered, so the host selects: top-p (no kernel yet), more candidates or levels than the kernels hold; a
  // page router's scores take head dims up to 128 and groups up to 8 (the batched score kernel's).
  const bool covered = router ? d.head_dim <= 128 && d.n_q_heads / d.n_kv_heads <= 8
                              : d.cfg && d.cfg->select != gist::select_rule::top_p &&
                                    d.levels() <= select_detail::hier_args::max_levels &&
                                    (d.levels() == 1 || d.head_dim <= 128);
  if (n > 0 && (n > select_detail::max_candidates || !covered)) return nullptr;
  decode_params p = shape_params(d.n_q_heads, d.n_kv_heads, d.head_dim, act);
  if (!decode_supported(p)) return nullptr;
  auto L = std::make_shared<cuda_lists>();
  L->n_base = int(d.base_row.size());
  L->n_cand = n;
  L->cap = d.cap();
  L->k = d.k;
  L->g = d.g;
  L->Hq = d.n_q_heads;
  L->Hkv = d.n_kv_heads;
  L->D = d.head_dim;
  L->group = router ? 2 : d.cfg && d.cfg->group_scoring ? 1 : 0;
  L->router = d.router == lists_router::quest ? 1 : d.router == lists_router::moba ? 2 : 0;
  int max_raw = 0;
  for (int32_t r : d.raw_len) max_raw = std::max(max_raw, int(r));
  L->n_sel_base = int(d.sel_base_row.size());
  const int64_t extra = int64_t(L->cap) * (max_raw + d.g);  // a head's unfolded rows at most
  L->longest = std::max(L->n_base, L->n_sel_base) + extra;
  size_t units_total = 0;
  for (const auto& u : d.unit_row) units_total += u.size();
  L->head = 2 * (L->Hkv + 1);
  std::vector<int32_t> host(size_t(L->head) + size_t(4) * n + units_total, 0);
  int32_t* o = host.data() + L->head;
  o = std::copy(d.gist_row.begin(), d.gist_row.end(), o);
  o = std::copy(d.raw_row.begin(), d.raw_row.end(), o);
  o = std::copy(d.raw_len.begin(), d.raw_len.end(), o);
  for (uint8_t a : d.add_gists) *o++ = a;
  if (n > 0 && d.levels() > 1) {
    select_detail::hier_args& h = L->hier;
    h.levels = d.levels();
    L->unit_off.push_back(0);  // level 0: gist_row
    h.whole[0] = n;
    for (int l = 1; l < h.levels; l++) {
      L->unit_off.push_back(o - host.data() - L->head);
      o = std::copy(d.unit_row[size_t(l) - 1].begin(), d.unit_row[size_t(l) - 1].end(), o);
      h.whole[l] = int(d.unit_row[size_t(l) - 1].size());
    }
    for (int l = 0; l < h.levels; l++) {
      h.k[l] = d.k_per_level[size_t(l)];
      h.chunk[l] = d.chunk[size_t(l)];
    }
    h.cap = L->cap;
    h.g = d.g;
    h.Hq = L->Hq;
    h.Hkv = L->Hkv;
    h.D = L->D;
    h.max_n = n;
    h.k_st = int64_t(L->Hkv) * L->D;
    h.scale = 1.0f / std::sqrt(float(L->D));
    h.group = L->group;
  }
  L->table = be.upload(Tensor::borrow(host.data(), {int64_t(host.size())}, dtype::i32), dtype::i32);
  const auto* prev = static_cast<const cuda_lists*>(previous);
  L->base_t = shared_rows(d.base_row, d.base_same, prev ? &prev->base_t : nullptr, prev ? prev->n_base : 0);
  if (L->n_sel_base)
    L->sel_base_t =
        shared_rows(d.sel_base_row, d.sel_base_same, prev ? &prev->sel_base_t : nullptr, prev ? prev->n_sel_base : 0);
  // Scores: (Hq, n) flat; hgsa: select.h's scratch of the walk.
  if (n > 0 && d.levels() == 1) {
    L->scores = uncleared({int64_t(L->Hq) * n}, dtype::f32);
    L->mask = uncleared({int64_t(L->Hkv) * ((n + 31) / 32)}, dtype::i32);  // cleared by each selection
  }
  if (n > 0 && d.levels() > 1) {
    for (int l = 0; l < L->hier.levels; l++) L->hier.unit_row[l] = L->at(L->unit_off[size_t(l)]);
    L->scores = be.alloc({select_detail::hier_scratch_floats(L->hier)}, dtype::f32);
    L->units = be.alloc({select_detail::hier_scratch_ints(L->hier)}, dtype::i32);
  }
  L->indptr = uncleared({L->Hkv + 1}, dtype::i64);
  L->indices = uncleared({std::max<int64_t>(1, L->Hkv * extra)}, dtype::i32);
  if (n > 0 && d.levels() == 1) L->tiles = uncleared({expand_tile_ints(L->Hkv, n)}, dtype::i32);
  return L;
}

namespace {

// The checks of one row's call; returns where its `selected` goes (null when it does not select).
int32_t* check_call(const cuda_lists& L, dtype act, const Tensor& out, const Tensor& q, const Tensor& pool,
                    bool sel, Tensor& selected) {
  GSA_ASSERT(q.where() == device::cuda && pool.where() == device::cuda && out.where() == device::cuda,
             "decode lists: q, pool and out must be on the GPU");
  GSA_ASSERT(q.dim(0) == 1 && q.dim(1) == L.Hq && q.dim(2) == L.D && pool.dim(1) == L.Hkv &&
                 out.numel() == int64_t(L.Hq) * L.D && q.type() == act && pool.type() == act && out.type() == act,
             "decode lists for {}x{} heads of {}: q {}, pool {}", L.Hq, L.Hkv, L.D, shape_str(q.shape()),
             shape_str(pool.shape()));
  if (!sel) return nullptr;
  GSA_ASSERT(selected.where() == device::cuda && selected.type() == dtype::i32 &&
                 selected.numel() >= int64_t(L.Hkv) * (2 + L.cap),
             "decode lists: selected holds {} of {} values", selected.numel(), int64_t(L.Hkv) * (2 + L.cap));
  return static_cast<int32_t*>(selected.raw());
}

}  // namespace

void run_lists_batch(dtype act, Tensor& out, const Tensor& q, int page_rows, std::vector<backend::lists_call>& calls) {
  if (calls.empty()) return;
  // GSA_DECODE_PROFILE (infer/decode-step.cpp prints the counters with each step): each phase's device time.
  static const bool prof = std::getenv("GSA_DECODE_PROFILE") != nullptr;
  std::vector<lists_row> rows;  // the flat selections
  std::vector<decode_seq> seqs;
  const cuda_lists* first = nullptr;
  int max_cand = 0;
  int64_t longest = 0;
  for (backend::lists_call& c : calls) {
    const cuda_lists& L = *static_cast<const cuda_lists*>(c.prepared);
    GSA_ASSERT(c.pool && c.row >= 0 && c.row < q.dim(0), "decode lists: call for row {} of {}", c.row, q.dim(0));
    if (!first) first = &L;
    GSA_ASSERT(L.Hq == first->Hq && L.Hkv == first->Hkv && L.D == first->D,
               "decode lists: the rows of one batch share their heads ({}x{} of {} and {}x{} of {})", L.Hq, L.Hkv,
               L.D, first->Hq, first->Hkv, first->D);
    Tensor out_i = out.slice_rows(c.row, c.row + 1);
    const Tensor q_i = q.slice_rows(c.row, c.row + 1);
    const bool sel = c.select && L.n_cand > 0;
    int32_t* counts = check_call(L, act, out_i, q_i, *c.pool, sel, c.selected);
    int32_t* stats = nullptr;
    if (sel && !c.stats.empty()) {
      GSA_ASSERT(c.stats.where() == device::cuda && c.stats.type() == dtype::i32 && c.stats.numel() >= 3 * L.Hkv,
                 "decode lists: stats holds {} of {} values", c.stats.numel(), 3 * L.Hkv);
      stats = static_cast<int32_t*>(c.stats.raw());
    }
    const void* k = c.pool->raw();
    if (sel && L.hier.levels > 1) {  // the walk launches per level: this row's selection on its own
      timed("decode.hier_select", prof, [&] {
        select_detail::launch_hierarchical(L.hier, q_i.raw(), k, act == dtype::bf16,
                                           static_cast<float*>(L.scores.raw()), static_cast<int32_t*>(L.units.raw()),
                                           counts, ctx().stream);
        expand_decode_lists(counts, counts + L.Hkv, L.cap, L.cand(0), L.cand(1), L.cand(2), L.cand(3), L.g, L.Hkv,
                            static_cast<int64_t*>(L.indptr.raw()), static_cast<int32_t*>(L.indices.raw()),
                            counts + int64_t(L.Hkv) * (1 + L.cap), stats);
      });
    } else if (sel) {
      lists_row r;
      r.q = q_i.raw();
      r.pool_k = k;
      r.gist_row = L.cand(0);
      r.raw_row = L.cand(1);
      r.raw_len = L.cand(2);
      r.add_gists = L.cand(3);
      r.scores = static_cast<float*>(L.scores.raw());
      r.mask = static_cast<uint32_t*>(L.mask.raw());
      r.selected = counts;
      r.stats = stats;
      r.indptr = static_cast<int64_t*>(L.indptr.raw());
      r.indices = static_cast<int32_t*>(L.indices.raw());
      r.tiles = static_cast<int32_t*>(L.tiles.raw());
      r.n_cand = L.n_cand;
      r.k = L.k;
      r.cap = L.cap;
      r.g = L.g;
      r.group = L.group;
      r.router = L.router;
      if (L.router) {
        GSA_ASSERT(c.summary && c.summary->where() == device::cuda && c.summary->type() == dtype::f32 &&
                       c.summary->dim(0) >= L.n_cand && c.summary->dim(2) == L.Hkv && c.summary->dim(3) == L.D,
                   "decode lists: a page router's call needs the layer's page summaries on the GPU ({} pages)",
                   L.n_cand);
        r.summary = static_cast<const float*>(c.summary->raw());
      }
      rows.push_back(r);
      max_cand = std::max(max_cand, L.n_cand);
    }
    decode_seq d;
    d.q = q_i.raw();
    d.out = out_i.raw();
    d.k = k;
    d.v = static_cast<const char*>(k) + size_t(page_rows) * L.Hkv * L.D * dtype_size(act);
    d.indptr = static_cast<const int64_t*>(sel ? L.indptr.raw() : L.no_extra());
    d.indices = static_cast<const int32_t*>(L.indices.raw());
    d.shared = L.shared(sel);
    d.n_shared = L.n_shared(sel);
    d.host_k = c.host;
    seqs.push_back(d);
    longest = std::max(longest, L.longest);
  }
  if (seqs.empty()) return;
  // One upload of both tables (decode_seq first: both are arrays of 8-byte aligned structs).
  const size_t seq_bytes = seqs.size() * sizeof(decode_seq), row_bytes = rows.size() * sizeof(lists_row);
  std::vector<unsigned char> host(seq_bytes + row_bytes);
  std::memcpy(host.data(), seqs.data(), seq_bytes);
  if (row_bytes) std::memcpy(host.data() + seq_bytes, rows.data(), row_bytes);
  Tensor tables = uncleared({int64_t(host.size())}, dtype::u8);
  timed("decode.tables", prof, [&] { copy_h2d(tables.raw(), host.data(), host.size()); });
  const auto* d_seqs = static_cast<const decode_seq*>(tables.raw());
  const auto* d_rows = reinterpret_cast<const lists_row*>(static_cast<const unsigned char*>(tables.raw()) + seq_bytes);
  const int Hq = first->Hq, Hkv = first->Hkv, D = first->D;
  if (!rows.empty()) {
    timed("decode.select", prof, [&] {
      select_detail::launch_decode_rows(d_rows, int(rows.size()), max_cand, act == dtype::bf16, Hq, Hkv, D,
                                        ctx().stream);
    });
    timed("decode.expand", prof, [&] { expand_decode_rows(d_rows, int(rows.size()), max_cand, Hkv); });
  }
  decode_params p = shape_params(Hq, Hkv, D, act);
  p.batch = int(seqs.size());
  p.seqs = d_seqs;
  decode_plan_options po;
  po.num_sms = ctx().sm_count;
  const decode_plan plan = plan_decode(p, longest, po);
  Tensor ws = plan.workspace_bytes ? uncleared({int64_t(plan.workspace_bytes)}, dtype::u8) : Tensor();
  timed("decode.attend", prof, [&] { run_decode(p, plan, ws.empty() ? nullptr : ws.raw(), ctx().stream); });
}

}  // namespace gsa::cuda
