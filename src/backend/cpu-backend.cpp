// The CPU backend: the op interface (backend/backend.h) over the reference kernels of ops.h and attention.h.
// f32 only; tensors are host memory, so every op is a direct call. It lives in gsa_backend (not backend/cpu's
// gsa_cpu, the kernels) because the interface's host defaults (decode-lists.cpp) need gist/ above gsa_cpu.
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "backend/backend.h"
#include "backend/row-unfold.h"
#include "backend/cpu/decode-attention.h"
#include "core/error.h"

namespace gsa {

namespace {

float* opt(Tensor* t) { return t && !t->empty() ? t->f32() : nullptr; }
const float* opt(const Tensor* t) { return t && !t->empty() ? t->f32() : nullptr; }
int rows(const Tensor& x, int64_t cols) { return int(x.numel() / cols); }

class cpu_impl final : public backend {
 public:
  device where() const override { return device::cpu; }
  dtype act() const override { return dtype::f32; }
  std::string describe() const override { return fmt::format("cpu (f32, {} threads)", omp_get_max_threads()); }

  Tensor alloc(const shape_t& shape, dtype t) override { return Tensor(shape, t); }
  void zero(Tensor& x) override { x.zero(); }
  Tensor upload(const Tensor& host, dtype t) override { return host.to(t); }
  void write_bytes(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void copy(Tensor& dst, const Tensor& src) override {
    GSA_ASSERT(dst.numel() == src.numel(), "copy of {} values into {}", src.numel(), dst.numel());
    if (dst.type() == src.type()) {
      std::memcpy(dst.raw(), src.raw(), src.nbytes());
    } else if (dst.type() == dtype::f32) {
      convert_to_f32(dst.f32(), src.raw(), src.type(), size_t(src.numel()));
    } else {
      GSA_ASSERT(src.type() == dtype::f32);
      convert_from_f32(dst.raw(), src.f32(), dst.type(), size_t(src.numel()));
    }
  }

  void matmul_forward(Tensor& y, const Tensor& x, const Tensor& w, const Tensor* bias) override {
    const int N = int(w.dim(0)), K = int(w.dim(1)), M = rows(x, K);
    GSA_ASSERT(y.numel() == int64_t(M) * N, "matmul output has {} values for ({}, {})", y.numel(), M, N);
    cpu::matmul_forward(y.f32(), x.f32(), w.f32(), opt(bias), M, K, N);
  }
  void matmul_backward(Tensor* dx, Tensor* dw, Tensor* dbias, const Tensor& dy, const Tensor& x,
                       const Tensor& w) override {
    const int N = int(w.dim(0)), K = int(w.dim(1)), M = rows(x, K);
    cpu::matmul_backward(opt(dx), opt(dw), opt(dbias), dy.f32(), x.f32(), w.f32(), M, K, N);
  }
  void embedding_forward(Tensor& y, const Tensor& ids, const Tensor& table) override {
    cpu::embedding_forward(y.f32(), ids.i32(), table.f32(), int(ids.numel()), int(table.dim(1)));
  }
  void embedding_backward(Tensor& dtable, const Tensor& dy, const Tensor& ids) override {
    cpu::embedding_backward(dtable.f32(), dy.f32(), ids.i32(), int(ids.numel()), int(dtable.dim(1)));
  }
  void rmsnorm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& w, float eps) override {
    const int C = int(w.numel());
    cpu::rmsnorm_forward(y.f32(), rstd.f32(), x.f32(), w.f32(), rows(x, C), C, eps);
  }
  void rmsnorm_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                        const Tensor& rstd) override {
    const int C = int(w.numel());
    cpu::rmsnorm_backward(dx.f32(), dw.f32(), dy.f32(), x.f32(), w.f32(), rstd.f32(), rows(x, C), C);
  }
  void rope_forward(Tensor& x, const Tensor& pos, const Tensor& inv_freq) override {
    const int T = int(pos.numel()), D = int(inv_freq.numel()) * 2;
    cpu::rope_forward(x.f32(), pos.i32(), inv_freq.f32(), T, int(x.numel() / (int64_t(T) * D)), D);
  }
  void rope_backward(Tensor& dx, const Tensor& pos, const Tensor& inv_freq) override {
    const int T = int(pos.numel()), D = int(inv_freq.numel()) * 2;
    cpu::rope_backward(dx.f32(), pos.i32(), inv_freq.f32(), T, int(dx.numel() / (int64_t(T) * D)), D);
  }
  void swiglu_forward(Tensor& y, const Tensor& gate, const Tensor& up) override {
    cpu::swiglu_forward(y.f32(), gate.f32(), up.f32(), gate.numel());
  }
  void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dy, const Tensor& gate,
                       const Tensor& up) override {
    cpu::swiglu_backward(dgate.f32(), dup.f32(), dy.f32(), gate.f32(), up.f32(), gate.numel());
  }
  void add_inplace(Tensor& y, const Tensor& x) override {
    float* py = y.f32();
    const float* px = x.f32();
    const int64_t n = y.numel();
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; i++) py[i] += px[i];
  }
  double lm_head_xent_forward(Tensor& lse, const Tensor& h, const Tensor& w, const Tensor& targets,
                              int64_t* n_valid) override {
    const int C = int(w.dim(1));
    return cpu::lm_head_xent_forward(lse.f32(), h.f32(), w.f32(), targets.i32(), rows(h, C), C, int(w.dim(0)),
                                     n_valid);
  }
  void lm_head_xent_backward(Tensor& dh, Tensor* dw, const Tensor& h, const Tensor& w, const Tensor& targets,
                             const Tensor& lse, float scale) override {
    const int C = int(w.dim(1));
    cpu::lm_head_xent_backward(dh.f32(), opt(dw), h.f32(), w.f32(), targets.i32(), lse.f32(), rows(h, C), C,
                               int(w.dim(0)), scale);
  }

  // A plan with a row unfold runs as its expansion (row-unfold.h); other plans need no preparation.
  std::shared_ptr<const void> prepare_plan(const cpu::attn_plan& plan, int, int, int q_offset, int) override {
    if (!plan.unfold) return nullptr;
    return std::make_shared<cpu::attn_plan>(expand_row_unfold(plan, *plan.unfold, q_offset));
  }
  static const cpu::attn_plan& run_plan(const cpu::attn_plan& plan, const void* prepared) {
    if (!plan.unfold) return plan;
    GSA_ASSERT(prepared, "a plan with a row unfold needs prepare_plan() first");
    return *static_cast<const cpu::attn_plan*>(prepared);
  }
  void attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                         const cpu::attn_plan& plan, const void* prepared, int q_offset) override {
    cpu::attention_forward(out.f32(), lse.f32(), q.f32(), k.f32(), v.f32(), run_plan(plan, prepared), int(q.dim(0)), int(k.dim(0)),
                           q_offset, int(q.dim(1)), int(k.dim(1)), int(q.dim(2)));
  }
  void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q,
                          const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                          const cpu::attn_plan& plan, const void* prepared, int q_offset) override {
    cpu::attention_backward(dq.f32(), dk.f32(), dv.f32(), dout.f32(), q.f32(), k.f32(), v.f32(), out.f32(),
                            lse.f32(), run_plan(plan, prepared), int(q.dim(0)), int(k.dim(0)), q_offset, int(q.dim(1)), int(k.dim(1)),
                            int(q.dim(2)));
  }

  void kv_write(Tensor& pool, int page_rows, const std::vector<int64_t>& rows, const Tensor& k,
                const Tensor& v) override {
    const size_t rowf = size_t(pool.numel() / std::max<int64_t>(1, pool.dim(0)));
    GSA_ASSERT(k.numel() == int64_t(rows.size() * rowf) && v.numel() == k.numel(), "kv_write of {} rows", rows.size());
    for (size_t i = 0; i < rows.size(); i++) {
      GSA_ASSERT(rows[i] >= 0 && rows[i] + page_rows < pool.dim(0), "pool row {} of {}", rows[i], pool.dim(0));
      std::memcpy(pool.f32() + size_t(rows[i]) * rowf, k.f32() + i * rowf, rowf * sizeof(float));
      std::memcpy(pool.f32() + size_t(rows[i] + page_rows) * rowf, v.f32() + i * rowf, rowf * sizeof(float));
    }
  }
  void kv_move_frames(const Tensor& pool, void* host, int page_rows,
                      const std::vector<std::pair<int32_t, int32_t>>& moves) override {
    const size_t frame = size_t(2) * page_rows * size_t(pool.numel() / std::max<int64_t>(1, pool.dim(0)));
    for (const auto& [f, h] : moves) {
      GSA_ASSERT(f >= 0 && int64_t(f + 1) * 2 * page_rows <= pool.dim(0) && h >= 0, "frame {} of a {}-row pool",
                 f, pool.dim(0));
      std::memcpy(static_cast<float*>(host) + size_t(h) * frame, pool.f32() + size_t(f) * frame,
                  frame * sizeof(float));
    }
  }
  void decode_attention(Tensor& out, const Tensor& q, const Tensor& pool, int page_rows,
                        const std::vector<int64_t>& indptr, const std::vector<int32_t>& indices, const void* host,
                        std::vector<float>* weights) override {
    const int M = int(q.dim(0)), Hq = int(q.dim(1)), D = int(q.dim(2)), Hkv = int(pool.dim(1));
    GSA_ASSERT(int64_t(indptr.size()) == int64_t(M) * Hkv + 1 && out.numel() == int64_t(M) * Hq * D,
               "decode_attention: {} list bounds for {} rows of {} KV heads", indptr.size(), M, Hkv);
    struct pool_rows {
      const float* dev;   // the pool's K rows
      const float* host;  // its off-device K rows (rows >= kv_host_row0), or null
      const int32_t* idx;
      const int64_t* ptr;
      size_t rowf, vrows;  // vrows: V row = K row + P
      int D;
      int count(int h) const { return int(ptr[h + 1] - ptr[h]); }
      const float* at(int h, int j, size_t plus) const {
        const int64_t r = idx[ptr[h] + j];
        const float* base = r >= kv_host_row0 ? host : dev;
        GSA_ASSERT(base, "pool row {} is off the device, and no host part was given", r);
        return base + (size_t(r >= kv_host_row0 ? r - kv_host_row0 : r) + plus) * rowf + size_t(h) * D;
      }
      const float* key(int h, int j) const { return at(h, j, 0); }
      const float* value(int h, int j) const { return at(h, j, vrows); }
    };
    const size_t rowf = size_t(Hkv) * D;
    std::vector<std::vector<float>> w;
    if (weights) weights->assign(indices.size(), 0.0f);
    for (int i = 0; i < M; i++) {
      cpu::decode_attention_rows(out.f32() + size_t(i) * Hq * D, q.f32() + size_t(i) * Hq * D, Hq, Hkv, D,
                                 pool_rows{pool.f32(), static_cast<const float*>(host), indices.data(),
                                           indptr.data() + size_t(i) * Hkv, rowf, size_t(page_rows), D},
                                 weights ? &w : nullptr);
      if (weights)
        for (int h = 0; h < Hkv; h++)
          std::copy(w[h].begin(), w[h].end(), weights->begin() + indptr[size_t(i) * Hkv + h]);
    }
  }

  void adamw_step(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, const Tensor* decay, Tensor* lowp, int64_t t,
                  const cpu::adamw_params& hp) override {
    GSA_ASSERT(!lowp, "the CPU backend keeps no low-precision copy");
    if (!decay) return cpu::adamw_step(p.f32(), g.f32(), m.f32(), v.f32(), p.numel(), t, hp);
    // Runs of equal decay flags, each one call (parameters are laid out tensor by tensor).
    const uint8_t* d = static_cast<const uint8_t*>(decay->raw());
    cpu::adamw_params nd = hp;
    nd.weight_decay = 0;
    for (int64_t i = 0, n = p.numel(); i < n;) {
      int64_t j = i;
      while (j < n && d[j] == d[i]) j++;
      cpu::adamw_step(p.f32() + i, g.f32() + i, m.f32() + i, v.f32() + i, j - i, t, d[i] ? hp : nd);
      i = j;
    }
  }
  double sum_squares(const Tensor& g) override { return cpu::sum_squares(g.f32(), g.numel()); }
  void scale_inplace(Tensor& g, float s) override { cpu::scale_inplace(g.f32(), g.numel(), s); }
};

}  // namespace

backend& cpu_backend() {
  static cpu_impl b;
  return b;
}

}  // namespace gsa
