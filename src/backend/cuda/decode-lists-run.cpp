// The CUDA backend's decode lists (backend.h prepare_decode_lists / decode_attention_lists; contract in
// backend/decode-lists.h): per step one upload of the row's description; per layer the gist scores and top-k of
// select.h's kernels, the expansion of the unfolded chunks (decode-lists.h) and the split-K decode kernel, which
// reads the base rows as every list's shared prefix, all on ctx().stream with no host synchronisation.
#include "backend/cuda/decode-lists-run.h"

#include <algorithm>
#include <cmath>

#include "backend/cuda/decode-attention.h"
#include "backend/cuda/decode-lists.h"
#include "backend/cuda/runtime.h"
#include "backend/cuda/select.h"
#include "core/error.h"
#include "gist/config.h"

namespace gsa::cuda {

namespace {


struct cuda_lists {
  Tensor table;  // i32: base (n_base), gist_row, raw_row, raw_len, add_gists (n_cand each), hgsa's unit rows
  int n_base = 0, n_cand = 0, cap = 0, g = 1, Hq = 0, Hkv = 0, D = 0, k = 0;
  bool group = false;
  int64_t longest = 0;
  select_detail::hier_args hier;  // levels > 1 (hgsa); unit_row filled in at run (points into table)
  std::vector<int64_t> unit_off;  // table offset of each level's unit rows (level 0: the candidates' gist rows)
  mutable Tensor units;           // hier scratch
  mutable Tensor mask;            // flat selection: (Hkv, ceil(n_cand / 32)) words
  mutable Tensor scores, indptr, indices, ws;  // scratch of every layer of the step (one stream: in order)
  Tensor no_extra;  // (Hkv + 1) zeros: the lists of a layer that does not select are the base alone
  decode_plan plan;
  const int32_t* at(int64_t off) const { return static_cast<const int32_t*>(table.raw()) + off; }
  const int32_t* base() const { return at(0); }
  const int32_t* cand(int which) const { return at(n_base + int64_t(which) * n_cand); }
};

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

}  // namespace

std::shared_ptr<const void> prepare_lists(backend& be, const decode_lists& d) {
  const dtype act = be.act();
  const int n = d.n_cand();
  if (n > 0 && (!d.cfg || d.cfg->select == gist::select_rule::top_p || n > select_detail::max_candidates ||
                d.levels() > select_detail::hier_args::max_levels || (d.levels() > 1 && d.head_dim > 128)))
    return nullptr;  // top-p selection has no kernel yet: the host selects
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
  L->group = d.cfg && d.cfg->group_scoring;
  int max_raw = 0;
  for (int32_t r : d.raw_len) max_raw = std::max(max_raw, int(r));
  L->longest = L->n_base + int64_t(L->cap) * (max_raw + d.g);
  size_t units_total = 0;
  for (const auto& u : d.unit_row) units_total += u.size();
  std::vector<int32_t> host(size_t(L->n_base) + size_t(4) * n + units_total);
  int32_t* o = host.data();
  o = std::copy(d.base_row.begin(), d.base_row.end(), o);
  o = std::copy(d.gist_row.begin(), d.gist_row.end(), o);
  o = std::copy(d.raw_row.begin(), d.raw_row.end(), o);
  o = std::copy(d.raw_len.begin(), d.raw_len.end(), o);
  for (uint8_t a : d.add_gists) *o++ = a;
  if (n > 0 && d.levels() > 1) {
    select_detail::hier_args& h = L->hier;
    h.levels = d.levels();
    L->unit_off.push_back(L->n_base);  // level 0: gist_row
    h.whole[0] = n;
    for (int l = 1; l < h.levels; l++) {
      L->unit_off.push_back(o - host.data());
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
  // Scores: (Hq, n) flat; hgsa: select.h's scratch of the walk.
  if (n > 0 && d.levels() == 1) {
    L->scores = be.alloc({int64_t(L->Hq) * n}, dtype::f32);
    L->mask = be.alloc({int64_t(L->Hkv) * ((n + 31) / 32)}, dtype::i32);
  }
  if (n > 0 && d.levels() > 1) {
    for (int l = 0; l < L->hier.levels; l++) L->hier.unit_row[l] = L->at(L->unit_off[size_t(l)]);
    L->scores = be.alloc({select_detail::hier_scratch_floats(L->hier)}, dtype::f32);
    L->units = be.alloc({select_detail::hier_scratch_ints(L->hier)}, dtype::i32);
  }
  L->indptr = be.alloc({L->Hkv + 1}, dtype::i64);
  L->no_extra = be.alloc({L->Hkv + 1}, dtype::i64);
  L->indices = be.alloc({std::max<int64_t>(1, L->Hkv * (L->longest - L->n_base))}, dtype::i32);
  decode_plan_options po;
  po.num_sms = ctx().sm_count;
  L->plan = plan_decode(p, L->longest, po);
  if (L->plan.workspace_bytes) L->ws = be.alloc({int64_t(L->plan.workspace_bytes)}, dtype::u8);
  return L;
}

void run_lists(dtype act, Tensor& out, const Tensor& q, const Tensor& pool, int page_rows, const void* prepared,
               bool select, Tensor& selected) {
  const cuda_lists& L = *static_cast<const cuda_lists*>(prepared);
  GSA_ASSERT(q.where() == device::cuda && pool.where() == device::cuda && out.where() == device::cuda,
             "decode lists: q, pool and out must be on the GPU");
  GSA_ASSERT(q.dim(0) == 1 && q.dim(1) == L.Hq && q.dim(2) == L.D && pool.dim(1) == L.Hkv &&
                 out.numel() == int64_t(L.Hq) * L.D && q.type() == act && pool.type() == act && out.type() == act,
             "decode lists for {}x{} heads of {}: q {}, pool {}", L.Hq, L.Hkv, L.D, shape_str(q.shape()),
             shape_str(pool.shape()));
  const bool sel = select && L.n_cand > 0;
  int32_t* counts = nullptr;
  if (sel) {
    GSA_ASSERT(selected.where() == device::cuda && selected.type() == dtype::i32 &&
                   selected.numel() >= int64_t(L.Hkv) * (2 + L.cap),
               "decode lists: selected holds {} of {} values", selected.numel(), int64_t(L.Hkv) * (2 + L.cap));
    counts = static_cast<int32_t*>(selected.raw());
  }
  if (sel && L.hier.levels > 1) {
    select_detail::launch_hierarchical(L.hier, q.raw(), pool.raw(), act == dtype::bf16,
                                       static_cast<float*>(L.scores.raw()), static_cast<int32_t*>(L.units.raw()),
                                       counts, ctx().stream);
  } else if (sel) {  // flat: wide scores, one CTA per query head ORs its top k into a mask, then the expansion
    select_detail::launch_decode_scores(q.raw(), pool.raw(), act == dtype::bf16, L.Hq, L.Hkv, L.D,
                                        int64_t(L.Hkv) * L.D, 1.0f / std::sqrt(float(L.D)), L.cand(0), L.n_cand,
                                        L.g, static_cast<float*>(L.scores.raw()), ctx().stream);
    memset0(L.mask.raw(), L.mask.nbytes());
    select_detail::launch_decode_topk(static_cast<float*>(L.scores.raw()), L.n_cand, L.k, L.Hq, L.Hkv, L.group,
                                      static_cast<uint32_t*>(L.mask.raw()), ctx().stream);
    expand_decode_mask(static_cast<const uint32_t*>(L.mask.raw()), L.n_cand, L.cap, L.cand(0), L.cand(1),
                       L.cand(2), L.cand(3), L.g, L.Hkv, counts, static_cast<int64_t*>(L.indptr.raw()),
                       static_cast<int32_t*>(L.indices.raw()));
  }
  if (sel && L.hier.levels > 1)
    expand_decode_lists(counts, counts + L.Hkv, L.cap, L.cand(0), L.cand(1), L.cand(2), L.cand(3), L.g, L.Hkv,
                        static_cast<int64_t*>(L.indptr.raw()), static_cast<int32_t*>(L.indices.raw()));
  decode_params p = shape_params(L.Hq, L.Hkv, L.D, act);
  p.shared = L.base();
  p.n_shared = L.n_base;
  p.q = q.raw();
  p.k = pool.raw();
  p.v = static_cast<const char*>(pool.raw()) + size_t(page_rows) * L.Hkv * L.D * dtype_size(act);
  p.indptr = static_cast<const int64_t*>(sel ? L.indptr.raw() : L.no_extra.raw());
  p.indices = static_cast<const int32_t*>(L.indices.raw());
  p.out = out.raw();
  run_decode(p, L.plan, L.ws.empty() ? nullptr : L.ws.raw(), ctx().stream);
}

}  // namespace gsa::cuda
