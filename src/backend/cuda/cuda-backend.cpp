// The CUDA backend (see cuda-backend.h). Tensors are device memory from the caching allocator (runtime.h);
// shapes are checked here, on the host, before any launch, so a wrong shape is a gsa::error, never a fault.
#include "backend/cuda/cuda-backend.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "backend/cuda/attention.h"
#include "backend/cuda/decode-attention.h"
#include "backend/cuda/decode-lists-run.h"
#include "backend/cuda/kv-pages.h"
#include "backend/cuda/ops.h"
#include "backend/cuda/route-loss.h"
#include "backend/cuda/runtime.h"
#include "backend/cuda/select.h"
#include "backend/row-unfold.h"
#include "gist/stream.h"
#include "core/error.h"
#include "core/profile.h"

namespace gsa::cuda {

namespace {

const void* opt(const Tensor* t) { return t && !t->empty() ? t->raw() : nullptr; }
void* opt(Tensor* t) { return t && !t->empty() ? t->raw() : nullptr; }
float* optf(Tensor* t) {
  if (!t || t->empty()) return nullptr;
  GSA_ASSERT(t->type() == dtype::f32, "parameter gradients are f32, got {}", dtype_name(t->type()));
  return static_cast<float*>(t->raw());
}

void on_device(const Tensor& t, const char* what) {
  GSA_ASSERT(t.where() == device::cuda, "{} is a {} tensor; the CUDA backend needs it on the GPU", what,
             device_name(t.where()));
}

void install_hooks() {
  device_copy_hooks h;
  h.to_host = [](void* dst, const void* src, size_t n) { copy_d2h(dst, src, n); };
  h.to_device = [](void* dst, const void* src, size_t n) { copy_h2d(dst, src, n); };
  set_device_copy_hooks(device::cuda, h);
}

class cuda_impl final : public backend {
 public:
  explicit cuda_impl(dtype act) : act_(act) {
    ctx();  // throws with a clear message without a GPU
    install_hooks();
    cudaDeviceProp prop{};
    GSA_CUDA_CHECK(cudaGetDeviceProperties(&prop, ctx().device));
    name_ = prop.name;
  }
  device where() const override { return device::cuda; }
  void set_deterministic(bool on) override { set_deterministic_backward(on); }
  dtype act() const override { return act_; }
  std::string describe() const override {
    return fmt::format("cuda:{} {} ({})", ctx().device, name_, dtype_name(act_));
  }

  Tensor alloc(const shape_t& shape, dtype t) override {
    const size_t bytes = size_t(shape_numel(shape)) * dtype_size(t);
    void* p = cuda::alloc(bytes ? bytes : 1);
    memset0(p, bytes);
    return Tensor::wrap(std::shared_ptr<void>(p, [](void* q) { release(q); }), p, shape, t, device::cuda);
  }
  void zero(Tensor& x) override { memset0(x.raw(), x.nbytes()); }
  Tensor upload(const Tensor& host, dtype t) override {
    GSA_ASSERT(host.on_host(), "upload of a {} tensor", device_name(host.where()));
    const Tensor src = host.type() == t ? host : host.to(t);
    void* p = cuda::alloc(src.nbytes() ? src.nbytes() : 1);  // not cleared first: the copy covers every byte
    copy_h2d(p, src.raw(), src.nbytes());
    return Tensor::wrap(std::shared_ptr<void>(p, [](void* q) { release(q); }), p, src.shape(), t, device::cuda);
  }
  void copy(Tensor& dst, const Tensor& src) override {
    GSA_ASSERT(dst.numel() == src.numel(), "copy of {} values into {}", src.numel(), dst.numel());
    if (dst.type() == src.type()) return copy_d2d(dst.raw(), src.raw(), src.nbytes());
    convert(dst.raw(), dst.type(), src.raw(), src.type(), src.numel());
  }
  void write_bytes(void* dst, const void* src, size_t bytes) override { copy_h2d(dst, src, bytes); }
  // The first call runs f as it is (so that lazily loaded kernels and cuBLASLt's plans exist before a capture),
  // the second records it, every later one replays.
  void replay(std::shared_ptr<void>& rec, const std::function<void()>& f) override {
    if (!graphs_enabled()) return f();
    struct recording {
      std::shared_ptr<void> exec;
    };
    if (!rec) {
      rec = std::make_shared<recording>();
      return f();
    }
    auto& r = *static_cast<recording*>(rec.get());
    if (!r.exec) r.exec = record_graph(f);
    launch_graph(r.exec.get());
  }
  bool records() const override { return graphs_enabled(); }
  void synchronize() override { cuda::synchronize(); }
  size_t bytes_in_use() const override { return cuda::bytes_in_use(); }
  size_t peak_bytes() const override { return peak_bytes_in_use(); }

  void matmul_forward(Tensor& y, const Tensor& x, const Tensor& w, const Tensor* bias) override {
    on_device(x, "matmul input");
    const int N = int(w.dim(0)), K = int(w.dim(1));
    const int M = int(x.numel() / K);
    GSA_ASSERT(x.numel() == int64_t(M) * K && y.numel() == int64_t(M) * N, "matmul shapes x {} w {} y {}",
               shape_str(x.shape()), shape_str(w.shape()), shape_str(y.shape()));
    cuda::matmul_forward(y.raw(), x.raw(), w.raw(), opt(bias), M, K, N, act_);
  }
  void matmul_backward(Tensor* dx, Tensor* dw, Tensor* dbias, const Tensor& dy, const Tensor& x,
                       const Tensor& w) override {
    const int N = int(w.dim(0)), K = int(w.dim(1)), M = int(x.numel() / K);
    cuda::matmul_backward(opt(dx), optf(dw), optf(dbias), dy.raw(), x.raw(), w.raw(), M, K, N, act_);
  }
  void embedding_forward(Tensor& y, const Tensor& ids, const Tensor& table) override {
    cuda::embedding_forward(y.raw(), static_cast<const int32_t*>(ids.raw()), table.raw(), int(ids.numel()),
                            int(table.dim(1)), act_);
  }
  void embedding_backward(Tensor& dtable, const Tensor& dy, const Tensor& ids) override {
    cuda::embedding_backward(optf(&dtable), dy.raw(), static_cast<const int32_t*>(ids.raw()), int(ids.numel()),
                             int(dtable.dim(1)), act_);
  }
  void rmsnorm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& w, float eps) override {
    const int C = int(w.numel());
    cuda::rmsnorm_forward(y.raw(), static_cast<float*>(rstd.raw()), x.raw(), w.raw(), int(x.numel() / C), C, eps,
                          act_);
  }
  void rmsnorm_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                        const Tensor& rstd) override {
    const int C = int(w.numel());
    cuda::rmsnorm_backward(dx.raw(), optf(&dw), dy.raw(), x.raw(), w.raw(), static_cast<const float*>(rstd.raw()),
                           int(x.numel() / C), C, act_);
  }
  void rope_forward(Tensor& x, const Tensor& pos, const Tensor& inv_freq) override {
    const int T = int(pos.numel()), D = int(inv_freq.numel()) * 2;
    cuda::rope_forward(x.raw(), static_cast<const int32_t*>(pos.raw()), static_cast<const float*>(inv_freq.raw()),
                       T, int(x.numel() / (int64_t(T) * D)), D, act_);
  }
  void rope_backward(Tensor& dx, const Tensor& pos, const Tensor& inv_freq) override {
    const int T = int(pos.numel()), D = int(inv_freq.numel()) * 2;
    cuda::rope_backward(dx.raw(), static_cast<const int32_t*>(pos.raw()), static_cast<const float*>(inv_freq.raw()),
                        T, int(dx.numel() / (int64_t(T) * D)), D, act_);
  }
  void swiglu_forward(Tensor& y, const Tensor& gate, const Tensor& up) override {
    cuda::swiglu_forward(y.raw(), gate.raw(), up.raw(), gate.numel(), act_);
  }
  void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dy, const Tensor& gate,
                       const Tensor& up) override {
    cuda::swiglu_backward(dgate.raw(), dup.raw(), dy.raw(), gate.raw(), up.raw(), gate.numel(), act_);
  }
  void add_inplace(Tensor& y, const Tensor& x) override { cuda::add_inplace(y.raw(), x.raw(), y.numel(), act_); }
  double lm_head_xent_forward(Tensor& lse, const Tensor& h, const Tensor& w, const Tensor& targets,
                              int64_t* n_valid) override {
    const int C = int(w.dim(1));
    return cuda::lm_head_xent_forward(static_cast<float*>(lse.raw()), h.raw(), w.raw(),
                                      static_cast<const int32_t*>(targets.raw()), int(h.numel() / C), C,
                                      int(w.dim(0)), n_valid, act_);
  }
  void lm_head_xent_backward(Tensor& dh, Tensor* dw, const Tensor& h, const Tensor& w, const Tensor& targets,
                             const Tensor& lse, float scale) override {
    const int C = int(w.dim(1));
    cuda::lm_head_xent_backward(dh.raw(), optf(dw), h.raw(), w.raw(), static_cast<const int32_t*>(targets.raw()),
                                static_cast<const float*>(lse.raw()), int(h.numel() / C), C, int(w.dim(0)), scale,
                                act_);
  }

  std::shared_ptr<const void> prepare_plan(const cpu::attn_plan& plan, int Tq, int Tk, int q_offset,
                                           int Hkv) override {
    // A row unfold runs on the overlay kernels in bf16, as its expansion in f32.
    if (plan.unfold && act_ != dtype::bf16)
      return std::make_shared<device_plan>(upload_plan(expand_row_unfold(plan, *plan.unfold, q_offset), Tq, Tk,
                                                       q_offset, Hkv));
    auto p = std::make_shared<device_plan>(upload_plan(plan, Tq, Tk, q_offset, Hkv));
    attach_unfold(*p, plan.unfold);
    return p;
  }
  void attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                         const cpu::attn_plan&, const void* prepared, int q_offset) override {
    GSA_ASSERT(prepared, "attention on CUDA needs prepare_plan() first");
    check_supported(int(q.dim(2)), false);
    cuda::attention_forward(out.raw(), static_cast<float*>(lse.raw()), q.raw(), k.raw(), v.raw(),
                            *static_cast<const device_plan*>(prepared), int(q.dim(0)), int(k.dim(0)), q_offset,
                            int(q.dim(1)), int(k.dim(1)), int(q.dim(2)), act_);
  }
  void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q,
                          const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                          const cpu::attn_plan&, const void* prepared, int q_offset) override {
    GSA_ASSERT(prepared, "attention on CUDA needs prepare_plan() first");
    cuda::attention_backward(dq.raw(), dk.raw(), dv.raw(), dout.raw(), q.raw(), k.raw(), v.raw(), out.raw(),
                             static_cast<const float*>(lse.raw()), *static_cast<const device_plan*>(prepared),
                             int(q.dim(0)), int(k.dim(0)), q_offset, int(q.dim(1)), int(k.dim(1)), int(q.dim(2)),
                             act_);
  }

  // What select_rows keeps between the layers of a step (backend::select_rows' reuse slot).
  struct rows_reuse {
    row_selection sel;
    Tensor chunk_begin, chunk_end, gist_end, listed;  // the last two with several gist levels only
  };

  std::shared_ptr<const row_unfold> select_rows(const Tensor& q, const Tensor& k, const cpu::attn_plan& rows,
                                                int b_begin, const gist::stream& s, const gist::gsa_config& cfg,
                                                std::shared_ptr<void>* reuse, int row0) override {
    if (cfg.select == gist::select_rule::top_p || !row_unfold_applies(s, cfg)) return nullptr;
    const bool prof = profile_on();
    const double t0 = prof ? profile_clock_ms() : 0;
    select_args a = selection_args(q, k, rows, b_begin, s, cfg);
    // A pass: the rows plan is rebased to row0, so the per-row stream tables are read from row0 on (q's row r is
    // stream row row0 + r); the keys (and the chunks' gist positions) stay stream positions.
    GSA_ASSERT(row0 >= 0 && row0 + a.T <= s.size() && a.Tk >= row0 + a.T, "select_rows: rows [{}, {}) of {}, {} keys",
               row0, row0 + a.T, s.size(), a.Tk);
    a.row_level += row0;
    a.row_chunk += row0;
    auto* kept = reuse && *reuse ? static_cast<rows_reuse*>(reuse->get()) : nullptr;
    std::shared_ptr<rows_reuse> fresh;
    if (!kept) {
      const bool levels = cfg.levels() > 1;
      std::vector<int32_t> kb, ke, ge, listed;
      unfold_ranges(s, cfg, kb, ke, levels ? &ge : nullptr);
      kb.resize(std::max<size_t>(1, kb.size()));
      ke.resize(kb.size());
      auto up = [&](std::vector<int32_t>& v) {
        return upload(Tensor::borrow(v.data(), {int64_t(v.size())}, dtype::i32), dtype::i32);
      };
      fresh = std::make_shared<rows_reuse>(rows_reuse{row_selection(a), up(kb), up(ke), Tensor(), Tensor()});
      if (levels) {  // the rows' lists are the gist mask's (plan_split_rows copies a block's list to its rows)
        ge.resize(kb.size());
        listed = row_listed_units(rows);
        check_gists_all_base(s, cfg, listed, row0 + rows.block_q[size_t(b_begin)], row0);
        fresh->gist_end = up(ge);
        fresh->listed = up(listed);
      }
      kept = fresh.get();
      if (reuse) *reuse = fresh;
    }
    const row_selection sel = kept->sel.rebound(a);
    const double t1 = prof ? profile_clock_ms() : 0;
    auto u = std::make_shared<row_unfold>();
    u->Tq = a.T;
    u->Hkv = a.Hkv;
    u->cap = sel.cap();
    u->n_chunks = s.n_chunks();
    u->count = alloc({a.T, a.Hkv}, dtype::i32);
    u->ids = alloc({a.T, a.Hkv, std::max(1, u->cap)}, dtype::i32);
    u->chunk_begin = kept->chunk_begin;
    u->chunk_end = kept->chunk_end;
    u->gist_end = kept->gist_end;
    u->listed = kept->listed;
    u->totals = alloc({2}, dtype::i64);
    if (prof) {
      synchronize();
      profile_add("select.host_tables", t1 - t0);
      profile_add("select.unfold_tables", profile_clock_ms() - t1);
    }
    auto i32 = [](Tensor& x) { return static_cast<int32_t*>(x.raw()); };
    sel.run(i32(u->count), i32(u->ids), std::max(1, u->cap), i32(u->chunk_begin), i32(u->chunk_end),
            u->gist_end.empty() ? nullptr : i32(u->gist_end), u->listed.empty() ? nullptr : i32(u->listed),
            static_cast<unsigned long long*>(u->totals.raw()));
    if (prof) {
      synchronize();
      profile_add("select.rows_total", profile_clock_ms() - t0);
    }
    return u;
  }

  bool select_chunks(const Tensor& q, const Tensor& k, int q_row0, const cpu::attn_plan& base, int b_begin,
                     int b_end, const gist::stream& s, const gist::gsa_config& cfg,
                     std::vector<std::vector<int32_t>>& selected, std::vector<uint8_t>& unfolds) override {
    if (cfg.select == gist::select_rule::top_p) return false;  // no top-p kernel yet: the host selects
    select_args a = selection_args(q, k, base, b_begin, s, cfg);
    a.q_row0 = q_row0;
    a.n_blocks = b_end;
    select_blocks(a, selected, unfolds);
    return true;
  }

  static select_args selection_args(const Tensor& q, const Tensor& k, const cpu::attn_plan& base, int b_begin,
                                    const gist::stream& s, const gist::gsa_config& cfg) {
    select_args a;
    a.q = q.raw();
    a.k = k.raw();
    a.type = q.type();
    a.T = int(q.dim(0));
    a.Tk = int(k.dim(0));
    a.Hq = int(q.dim(1));
    a.Hkv = int(k.dim(1));
    a.D = int(q.dim(2));
    a.block_q = base.block_q.data();
    a.n_blocks = base.n_blocks();
    a.b_begin = b_begin;
    a.row_level = s.level.data();
    a.row_chunk = s.chunk.data();
    a.chunk_gist_begin = s.chunk_gist_begin.data();
    a.n_chunks = s.n_chunks();
    a.n_complete = gist::complete_chunk_count(s);
    a.cfg = &cfg;
    return a;
  }

  void kv_write(Tensor& pool, int page_rows, const std::vector<int64_t>& rows, const Tensor& k,
                const Tensor& v) override {
    on_device(pool, "KV pool");
    const int64_t row_elems = pool.numel() / std::max<int64_t>(1, pool.dim(0));
    GSA_ASSERT(pool.type() == k.type() && k.type() == v.type(), "kv_write: pool {} and rows {} / {} differ",
               dtype_name(pool.type()), dtype_name(k.type()), dtype_name(v.type()));
    GSA_ASSERT(k.numel() == int64_t(rows.size()) * row_elems && v.numel() == k.numel(), "kv_write of {} rows",
               rows.size());
    if (rows.empty()) return;
    Tensor r = upload(Tensor::borrow(const_cast<int64_t*>(rows.data()), {int64_t(rows.size())}, dtype::i64),
                      dtype::i64);
    cuda::kv_write(pool.raw(), static_cast<const int64_t*>(r.raw()), k.raw(), v.raw(), int(rows.size()),
                   int(row_elems), page_rows, int(dtype_size(pool.type())));
  }
  void kv_write_rows(const std::vector<Tensor*>& pools, int page_rows, const std::vector<int64_t>& rows,
                     const Tensor& k, const Tensor& v) override {
    GSA_ASSERT(pools.size() == rows.size() && k.dim(0) == int64_t(rows.size()) && v.numel() == k.numel(),
               "kv_write_rows: {} pools, {} rows, k {}", pools.size(), rows.size(), shape_str(k.shape()));
    if (rows.empty()) return;
    const int64_t row_elems = k.numel() / k.dim(0);
    std::vector<int64_t> table(2 * rows.size());
    for (size_t i = 0; i < rows.size(); i++) {
      Tensor& pool = *pools[i];
      on_device(pool, "KV pool");
      GSA_ASSERT(pool.type() == k.type() && k.type() == v.type() && pool.numel() == pool.dim(0) * row_elems &&
                     rows[i] >= 0 && rows[i] + page_rows < pool.dim(0),
                 "kv_write_rows: row {} of a {} pool {} for {} rows {}", rows[i], dtype_name(pool.type()),
                 shape_str(pool.shape()), dtype_name(k.type()), shape_str(k.shape()));
      table[2 * i] = int64_t(reinterpret_cast<uintptr_t>(pool.raw()));
      table[2 * i + 1] = rows[i];
    }
    Tensor t = upload(Tensor::borrow(table.data(), {int64_t(table.size())}, dtype::i64), dtype::i64);
    cuda::kv_write_rows(static_cast<const int64_t*>(t.raw()), k.raw(), v.raw(), int(rows.size()), int(row_elems),
                        page_rows, int(dtype_size(k.type())));
  }
  std::string train_unsupported(int D) const override {
    std::string why;
    return attention_supported(D, act_, &why, true) ? "" : why;
  }
  std::string decode_unsupported(int Hq, int Hkv, int D) const override {
    decode_params p;
    p.batch = 1;
    p.n_q_heads = Hq;
    p.n_kv_heads = Hkv;
    p.head_dim = D;
    p.kv_dtype = act_ == dtype::f32 ? decode_dtype::f32 : decode_dtype::bf16;
    p.q_stride_b = int64_t(Hq) * D;
    p.q_stride_h = D;
    p.kv_stride_t = int64_t(Hkv) * D;
    p.kv_stride_h = D;
    std::string why;
    return decode_supported(p, &why) ? "" : why;
  }
  void pin_host(void* p, size_t bytes) override { cuda::pin_host(p, bytes); }
  void unpin_host(void* p) override { cuda::unpin_host(p); }
  void kv_move_frames(const Tensor& pool, void* host, int page_rows,
                      const std::vector<std::pair<int32_t, int32_t>>& moves) override {
    on_device(pool, "KV pool");
    if (moves.empty()) return;
    const int64_t row_elems = pool.numel() / std::max<int64_t>(1, pool.dim(0));
    std::vector<int32_t> flat;
    flat.reserve(moves.size() * 2);
    for (const auto& [f, h] : moves) {
      GSA_ASSERT(f >= 0 && int64_t(f + 1) * 2 * page_rows <= pool.dim(0) && h >= 0, "frame {} of a {}-row pool", f,
                 pool.dim(0));
      flat.push_back(f);
      flat.push_back(h);
    }
    Tensor m = upload(Tensor::borrow(flat.data(), {int64_t(flat.size())}, dtype::i32), dtype::i32);
    cuda::kv_move_frames(host, pool.raw(), static_cast<const int32_t*>(m.raw()), int(moves.size()),
                         int64_t(2) * page_rows * row_elems * int64_t(dtype_size(pool.type())));
  }
  void decode_attention(Tensor& out, const Tensor& q, const Tensor& pool, int page_rows,
                        const std::vector<int64_t>& indptr, const std::vector<int32_t>& indices, const void* host,
                        std::vector<float>* weights) override {
    on_device(q, "decode query");
    on_device(pool, "KV pool");
    const int M = int(q.dim(0)), Hq = int(q.dim(1)), D = int(q.dim(2)), Hkv = int(pool.dim(1));
    GSA_ASSERT(int64_t(indptr.size()) == int64_t(M) * Hkv + 1 && out.numel() == int64_t(M) * Hq * D,
               "decode_attention: {} list bounds for {} rows of {} KV heads", indptr.size(), M, Hkv);
    GSA_ASSERT(q.type() == act_ && pool.type() == act_ && out.type() == act_, "decode_attention types");
    if (M == 0) return;
    int64_t longest = 0;
    for (int i = 0; i + 1 < int(indptr.size()); i++) longest = std::max(longest, indptr[i + 1] - indptr[i]);
    Tensor ptr = upload(Tensor::borrow(const_cast<int64_t*>(indptr.data()), {int64_t(indptr.size())}, dtype::i64),
                        dtype::i64);
    static const int32_t none = 0;  // an empty list set still needs a valid pointer
    Tensor idx = upload(Tensor::borrow(const_cast<int32_t*>(indices.empty() ? &none : indices.data()),
                                       {int64_t(std::max<size_t>(1, indices.size()))}, dtype::i32),
                        dtype::i32);
    decode_params p;
    p.batch = M;
    p.n_q_heads = Hq;
    p.n_kv_heads = Hkv;
    p.head_dim = D;
    p.kv_dtype = p.out_dtype = act_ == dtype::f32 ? decode_dtype::f32 : decode_dtype::bf16;
    p.scale = 1.0f / std::sqrt(float(D));
    p.q = q.raw();
    p.q_stride_b = int64_t(Hq) * D;
    p.q_stride_h = D;
    p.k = pool.raw();
    p.v = static_cast<const char*>(pool.raw()) + size_t(page_rows) * Hkv * D * dtype_size(act_);
    p.host_k = host;
    p.kv_stride_t = int64_t(Hkv) * D;
    p.kv_stride_h = D;
    p.indptr = static_cast<const int64_t*>(ptr.raw());
    p.indices = static_cast<const int32_t*>(idx.raw());
    p.out = out.raw();
    p.o_stride_b = int64_t(Hq) * D;
    p.o_stride_h = D;
    decode_plan_options po;
    po.num_sms = ctx().sm_count;
    Tensor lse;
    if (weights) {  // H2O: the normaliser of every query head, then each listed key's probability
      lse = alloc({M, Hq}, dtype::f32);
      p.lse = static_cast<float*>(lse.raw());
      p.lse_stride_b = Hq;
    }
    const decode_plan plan = plan_decode(p, longest, po);
    Tensor ws = plan.workspace_bytes ? alloc({int64_t(plan.workspace_bytes)}, dtype::u8) : Tensor();
    run_decode(p, plan, ws.empty() ? nullptr : ws.raw(), ctx().stream);
    if (weights) {
      weights->assign(indices.size(), 0.0f);
      if (indices.empty()) return;
      Tensor w = alloc({int64_t(indices.size())}, dtype::f32);
      run_decode_weights(p, static_cast<const float*>(lse.raw()), static_cast<float*>(w.raw()), longest, ctx().stream);
      Tensor wh = w.host(dtype::f32);
      std::copy_n(wh.f32(), indices.size(), weights->data());
    }
  }

  std::shared_ptr<const void> prepare_decode_lists(const decode_lists& lists, const void* previous) override {
    return prepare_lists(*this, lists, previous);
  }
  void decode_attention_lists_batch(Tensor& out, const Tensor& q, int page_rows,
                                    std::vector<lists_call>& calls) override {
    run_lists_batch(act_, out, q, page_rows, calls);
  }

  void route_loss(Tensor& dq, Tensor& dk, const Tensor& q, const Tensor& k, route_spec& spec, int layer,
                  float grad_scale) override {
    GSA_ASSERT(q.where() == device::cuda && k.where() == device::cuda && dq.where() == device::cuda &&
                   dk.where() == device::cuda && spec.table.where() == device::cuda && spec.kl.where() == device::cuda,
               "route loss: q, k, their gradients and the prepared spec must be on the GPU");
    GSA_ASSERT(q.type() == act_ && k.type() == act_ && dq.type() == act_ && dk.type() == act_,
               "route loss: tensors of the backend's activation type");
    GSA_ASSERT(layer >= 0 && layer < spec.kl.numel(), "route loss: layer {} of {}", layer, spec.kl.numel());
    const int T = int(q.dim(0));
    GSA_ASSERT(k.dim(0) == T && k.dim(2) == q.dim(2) && dq.numel() == q.numel() && dk.numel() == k.numel(),
               "route loss: q {}, k {}, dq {}, dk {}", shape_str(q.shape()), shape_str(k.shape()),
               shape_str(dq.shape()), shape_str(dk.shape()));
    spec.check(T);
    cuda::route_args a;
    a.R = spec.R();
    a.n_max = spec.max_cand();
    a.g = spec.g;
    a.span = spec.span;
    a.Hq = int(q.dim(1));
    a.Hkv = int(k.dim(1));
    a.D = int(q.dim(2));
    a.scale = 1.0f / std::sqrt(float(a.D));
    a.grad_scale = grad_scale;
    cuda::route_loss(dq.raw(), dk.raw(), q.raw(), k.raw(), T, static_cast<const int32_t*>(spec.table.raw()),
                     static_cast<float*>(spec.kl.raw()) + layer, a, act_);
  }

  void adamw_step(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, const Tensor* decay, Tensor* lowp, int64_t t,
                  const cpu::adamw_params& hp) override {
    GSA_ASSERT(!lowp || lowp->type() == dtype::bf16, "the compute copy is bf16");
    cuda::adamw_step(static_cast<float*>(p.raw()), static_cast<const float*>(g.raw()), static_cast<float*>(m.raw()),
                     static_cast<float*>(v.raw()), decay ? static_cast<const uint8_t*>(decay->raw()) : nullptr,
                     lowp ? static_cast<uint16_t*>(lowp->raw()) : nullptr, p.numel(), t, hp);
  }
  double sum_squares(const Tensor& g) override {
    return cuda::sum_squares(static_cast<const float*>(g.raw()), g.numel());
  }
  void scale_inplace(Tensor& g, float s) override {
    cuda::scale_inplace(static_cast<float*>(g.raw()), g.numel(), s);
  }

 private:
  void check_supported(int D, bool backward) const {
    std::string why;
    if (!attention_supported(D, act_, &why, backward)) fail("{}", why);
  }
  dtype act_;
  std::string name_;
};

}  // namespace

std::unique_ptr<backend> make_backend(dtype act) {
  if (act != dtype::bf16 && act != dtype::f32)
    fail("the CUDA backend computes in bf16 or f32, not {}; use --precision bf16 or f32", dtype_name(act));
  return std::make_unique<cuda_impl>(act);
}

}  // namespace gsa::cuda
