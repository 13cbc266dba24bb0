// The op interface the model is written against (ggml's backends, llm.c's op contract): one layer sequence
// (model/llama.cpp) runs on the CPU or the GPU through a `backend`. The contract of every op is the CPU
// reference's (backend/cpu/ops.h, backend/cpu/attention.h): layouts, and gradients ACCUMULATE (+=).
//
// Types. A backend computes in its activation type act(): f32 on the CPU; bf16 (default) or f32 on CUDA.
// Activations, activation gradients and the weights the forward reads are of type act(); parameter gradients
// are always f32 (the optimizer's master weights and moments are f32 too); rstd and lse are f32; ids,
// positions and targets are i32. Every tensor passed to an op lives on the backend's device.
//
// Shapes are read from the tensors (x (M, K), w (N, K), ...); the ops check what they read.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backend/cpu/attention.h"
#include "backend/cpu/ops.h"
#include "backend/decode-lists.h"
#include "backend/route-loss.h"
#include "core/error.h"
#include "core/tensor.h"

namespace gsa {

namespace gist {
struct gsa_config;
struct stream;
}  // namespace gist

class backend {
 public:
  virtual ~backend() = default;
  virtual device where() const = 0;
  virtual dtype act() const = 0;
  virtual std::string describe() const = 0;  // "cpu (f32, 2 threads)", "cuda:0 NVIDIA H200 (bf16)"

  // ---- memory
  virtual Tensor alloc(const shape_t& shape, dtype t) = 0;  // zero-filled
  virtual void zero(Tensor& x) = 0;
  // A copy of a host tensor on this device, converted to type t (on the CPU: a converted copy).
  virtual Tensor upload(const Tensor& host, dtype t) = 0;
  // dst = src converted to dst's type (same device; same numel).
  virtual void copy(Tensor& dst, const Tensor& src) = 0;
  // dst (this device's) = the host tensor src, of dst's type and numel: an upload into memory dst already holds.
  void write(Tensor& dst, const Tensor& src) {
    GSA_ASSERT(src.on_host() && dst.where() == where() && dst.type() == src.type() && dst.numel() == src.numel(),
               "write of {} {} host values into {} {} on {}", src.numel(), dtype_name(src.type()), dst.numel(),
               dtype_name(dst.type()), device_name(dst.where()));
    write_bytes(dst.raw(), src.raw(), src.nbytes());
  }
  virtual void synchronize() {}
  // Recorded device work (CUDA graphs). Runs f, or on a backend that records, replays what f launched when this
  // `rec` was recorded (rec: null at first; the backend keeps its state and the recording in it, and freeing it
  // frees the recording; the CUDA backend runs f at the first call and records at the second): the work of many
  // small launches in one. f must call only this backend's ops, on tensors that
  // keep their addresses and shapes at every later call with this rec (their contents may change), and must not
  // allocate, upload, read back or synchronise. A backend that does not record (the CPU) runs f every time.
  virtual void replay(std::shared_ptr<void>& rec, const std::function<void()>& f) { f(); }
  // Whether replay records (a caller may then keep persistent buffers for it; nothing else changes).
  virtual bool records() const { return false; }
  // Whether results must be the same bits on every run. The CPU backend always is (fixed tiles and block
  // orders); the CUDA backend sums the attention backward's dK / dV in fixed point when on (slower; off by
  // default: f32 atomics, whose order shows in the last bits; docs/cuda.md).
  virtual void set_deterministic(bool on) {}
  // Bytes of device memory held now and at peak (0 on the CPU).
  virtual size_t bytes_in_use() const { return 0; }
  virtual size_t peak_bytes() const { return 0; }

 protected:
  virtual void write_bytes(void* dst, const void* src, size_t bytes) = 0;  // write's copy, checked

 public:
  // ---- ops (backend/cpu/ops.h has each contract)
  virtual void matmul_forward(Tensor& y, const Tensor& x, const Tensor& w, const Tensor* bias) = 0;
  virtual void matmul_backward(Tensor* dx, Tensor* dw, Tensor* dbias, const Tensor& dy, const Tensor& x,
                               const Tensor& w) = 0;
  virtual void embedding_forward(Tensor& y, const Tensor& ids, const Tensor& table) = 0;
  virtual void embedding_backward(Tensor& dtable, const Tensor& dy, const Tensor& ids) = 0;
  virtual void rmsnorm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& w, float eps) = 0;
  virtual void rmsnorm_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                                const Tensor& rstd) = 0;
  // x (T, H, D) in place; pos (T) i32, inv_freq (D/2) f32.
  virtual void rope_forward(Tensor& x, const Tensor& pos, const Tensor& inv_freq) = 0;
  virtual void rope_backward(Tensor& dx, const Tensor& pos, const Tensor& inv_freq) = 0;
  virtual void swiglu_forward(Tensor& y, const Tensor& gate, const Tensor& up) = 0;
  virtual void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dy, const Tensor& gate,
                               const Tensor& up) = 0;
  virtual void add_inplace(Tensor& y, const Tensor& x) = 0;
  // Returns the summed loss over valid rows and *n_valid; writes lse (T).
  virtual double lm_head_xent_forward(Tensor& lse, const Tensor& h, const Tensor& w, const Tensor& targets,
                                      int64_t* n_valid) = 0;
  virtual void lm_head_xent_backward(Tensor& dh, Tensor* dw, const Tensor& h, const Tensor& w,
                                     const Tensor& targets, const Tensor& lse, float scale) = 0;

  // ---- attention through a plan. prepare() validates the plan and puts it where the kernels read it
  // (the CUDA backend uploads it once; forward and backward of a layer share the result).
  virtual std::shared_ptr<const void> prepare_plan(const cpu::attn_plan& plan, int Tq, int Tk, int q_offset,
                                                   int Hkv) = 0;
  // q (Tq, Hq, D), k, v (Tk, Hkv, D), out (Tq, Hq*D), lse (Tq, Hq).
  virtual void attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                                 const cpu::attn_plan& plan, const void* prepared, int q_offset) = 0;
  virtual void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q,
                                  const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                                  const cpu::attn_plan& plan, const void* prepared, int q_offset) = 0;

  // ---- chunk selection for unfolding (DESIGN 1.3; gist/select.h is the reference): from a layer's rotated q
  // (Tq, Hq, D) of stream rows [q_row0, q_row0 + Tq) and k (Tk, Hkv, D) of stream rows [0, Tk) on this device,
  // for the blocks [b_begin, b_end) of base (a compress plan of stream s, possibly split per row, whose rows
  // those blocks are inside q's): selected[(b - b_begin) * Hkv + h] = ascending chunk ids, unfolds[b] = 1 where
  // block b unfolds (b < b_end; resized to b_end). A whole sequence: q_row0 = 0, Tq = Tk, b_end = n_blocks; a
  // pass of a chunked prefill: its rows and the keys up to its end. Returns false when this backend has no
  // selection kernels: the caller then copies q and k to the host and selects there (the CPU backend always
  // returns false: its q and k are host memory).
  virtual bool select_chunks(const Tensor& q, const Tensor& k, int q_row0, const cpu::attn_plan& base, int b_begin,
                             int b_end, const gist::stream& s, const gist::gsa_config& cfg,
                             std::vector<std::vector<int32_t>>& selected, std::vector<uint8_t>& unfolds) {
    return false;
  }

  // ---- per-row selection kept on this device (select_per_token; backend/row-unfold.h): the selection of
  // select_chunks for the blocks [b_begin, n_blocks) of rows (whose selecting blocks are single rows: a per-row
  // split), as a row_unfold over s's rows whose tables live on this device, so that attention runs the base plan
  // plus the unfold without a per-row plan. Returns null when this backend cannot (the CPU backend: the caller
  // builds gist::plan_unfold; also a rule without a kernel, or a config row_unfold does not express).
  // reuse (optional): a slot the caller owns for calls with the same rows, b_begin, s and cfg (a step's layers);
  // the backend keeps there what does not depend on q and k (its host tables, the chunks' key ranges) and takes
  // it from there on the next call instead of building it again.
  // row0 > 0: a pass of a chunked prefill. rows is then the plan of q's rows alone, rebased (row r of rows and of
  // q is stream row row0 + r, cpu::plan_blocks), k holds the keys [0, row0 + q's rows), and the unfold is over
  // q's rows (attended at q_offset row0).
  virtual std::shared_ptr<const row_unfold> select_rows(const Tensor& q, const Tensor& k, const cpu::attn_plan& rows,
                                                        int b_begin, const gist::stream& s,
                                                        const gist::gsa_config& cfg,
                                                        std::shared_ptr<void>* reuse = nullptr, int row0 = 0) {
    return nullptr;
  }

  // ---- paged KV for decoding (kv/kv-cache.h, pool mode). A pool (2 P frames, Hkv, D) of type act() holds
  // pages of P rows: frame f holds K rows [2 f P, 2 f P + P) and then their V rows [2 f P + P, 2 (f + 1) P) (the
  // host cache's page layout). A key is named by its K row r; its V row is r + P.
  // Off-device frames (kv-cache.h tier host): a pool may have a second part in host memory that the backend's
  // kernels read in place (`host`: frames of the same layout, registered with pin_host). A row r >= kv_host_row0
  // (decode-lists.h) names row r - kv_host_row0 of that part; the readers below take it as `host` (null: none).
  // kv_write: K row rows[i] = k row i and V row rows[i] + P = v row i, for k, v (n, Hkv, D) of type act().
  virtual void kv_write(Tensor& pool, int page_rows, const std::vector<int64_t>& rows, const Tensor& k,
                        const Tensor& v) = 0;
  // Host memory the backend's kernels may read and write in place from now on (CUDA: page-locked and mapped,
  // at the same address on the device; throws gsa::error when it cannot); unpin_host(p) undoes pin_host(p, ..).
  // The CPU backend needs neither.
  virtual void pin_host(void* p, size_t bytes) {}
  virtual void unpin_host(void* p) {}
  // Moves frames off the device: for each (f, h) of moves, frame f of pool (2 P rows) to frame h of host (the
  // host part of that pool, same layout). Ordered after the work already issued that writes those frames.
  virtual void kv_move_frames(const Tensor& pool, void* host, int page_rows,
                              const std::vector<std::pair<int32_t, int32_t>>& moves) = 0;
  // kv_write_rows: row i of k, v into *pools[i] (K row rows[i], V row rows[i] + P), pools of one layout: one
  // decode step's appends of several sessions, each with its own pool, at once (a device backend: one launch).
  // Default: a kv_write per row.
  virtual void kv_write_rows(const std::vector<Tensor*>& pools, int page_rows, const std::vector<int64_t>& rows,
                             const Tensor& k, const Tensor& v) {
    GSA_ASSERT(pools.size() == rows.size() && k.dim(0) == int64_t(rows.size()) && v.dim(0) == k.dim(0),
               "kv_write_rows: {} pools, {} rows, k {}", pools.size(), rows.size(), shape_str(k.shape()));
    for (size_t i = 0; i < rows.size(); i++)
      kv_write(*pools[i], page_rows, {rows[i]}, k.slice_rows(int64_t(i), int64_t(i) + 1),
               v.slice_rows(int64_t(i), int64_t(i) + 1));
  }
  // Query row i of q (M, Hq, D) attends, per KV head h, to the K rows indices[indptr[i Hkv + h] ..
  // indptr[i Hkv + h + 1]) of pool (any order), scale 1/sqrt(D), GQA: query head hq uses KV head hq / (Hq / Hkv).
  // out (M, Hq * D) overwritten; a row with an empty list gets 0. The CPU reference is the host engine's kernel
  // (backend/cpu/decode-attention.h). weights (optional, host): resized to indices.size(); entry e of list
  // (i, h) gets the attention probability of that key summed over the GQA group of KV head h (what H2O
  // accumulates). Synchronises when asked for weights.
  virtual void decode_attention(Tensor& out, const Tensor& q, const Tensor& pool, int page_rows,
                                const std::vector<int64_t>& indptr, const std::vector<int32_t>& indices,
                                const void* host = nullptr, std::vector<float>* weights = nullptr) = 0;
  // Why this backend cannot run decode_attention for these shapes ("" when it can).
  virtual std::string decode_unsupported(int Hq, int Hkv, int D) const { return ""; }
  // Why this backend cannot train (attention backward) with this head dim ("" when it can).
  virtual std::string train_unsupported(int D) const { return ""; }

  // ---- key lists selected and built where the pool is (issue 14 item 2): a decode step describes a row's
  // lists once (decode_lists, the same in every layer) and each layer then scores, selects and attends without
  // the host. prepare_decode_lists puts the description where the kernels read it, or returns null when this
  // backend cannot run it (the caller then selects on the host and calls decode_attention). Contract in
  // backend/decode-lists.h; the defaults are the host reference (backend/decode-lists.cpp), which the CPU
  // backend uses and the CUDA backend overrides.
  // previous: this session's last prepared lists (null for none), which the backend may share from (the base
  // rows' prefix that lists.base_same says is unchanged); it is not used by a step any more.
  virtual std::shared_ptr<const void> prepare_decode_lists(const decode_lists& lists, const void* previous);
  // Rows of a decode step, each with its own session's pool and prepared lists: row `row` of q (M, Hq, D)
  // attends per KV head to the list `prepared` describes in *pool (a layer's pool), selecting first when select
  // is true; out row `row` (Hq * D) overwritten. selected (decode_lists::selected_size(), i32, this device) gets,
  // per KV head h, the count at [h], the ascending chunk ids at [Hkv + h * cap, ...) and for a hierarchical
  // selection the number of gist units scored at [Hkv (1 + cap) + h] (untouched when select is false). The rows'
  // lists are independent: the default (the host reference) takes them one by one; the CUDA backend launches
  // each kernel once for all of them (a hierarchical selection still walks row by row).
  struct lists_call {
    int row = 0;
    const Tensor* pool = nullptr;
    const void* host = nullptr;      // the pool's off-device frames (null: none)
    const Tensor* summary = nullptr;  // page routers: the layer's page summaries (kv-cache.h page_summary)
    const void* prepared = nullptr;
    bool select = false;
    Tensor selected;  // this layer's part of the row's `selected` (empty when select is false)
    Tensor stats;     // this layer's decode_lists stats (3 Hkv) when select (empty: not written)
  };
  virtual void decode_attention_lists_batch(Tensor& out, const Tensor& q, int page_rows,
                                            std::vector<lists_call>& calls);

  // ---- routing distillation (backend/route-loss.h; gist::gsa_config::route_loss).
  // route_prepare: spec.table on this device (once per sequence) and, unless the caller gave one (an accumulator
  // over a step's sequences), spec.kl: `layers` zeros.
  // route_loss: adds the loss's gradients into dq (T, Hq, D) and dk (T, Hkv, D) from the rotated q and k of layer
  // `layer`, and its mean KL into spec.kl[layer]. The base class's runs on the host (f32 host tensors).
  virtual void route_prepare(route_spec& spec, int layers);
  virtual void route_loss(Tensor& dq, Tensor& dk, const Tensor& q, const Tensor& k, route_spec& spec, int layer,
                          float grad_scale);

  // ---- optimizer over flat f32 buffers of n values (the model keeps every parameter in one buffer).
  // decay (n, u8) or null; lowp (n, bf16) or null: the compute copy to refresh.
  virtual void adamw_step(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, const Tensor* decay, Tensor* lowp,
                          int64_t t, const cpu::adamw_params& hp) = 0;
  virtual double sum_squares(const Tensor& g) = 0;
  virtual void scale_inplace(Tensor& g, float s) = 0;
};

// The process's CPU backend (f32).
backend& cpu_backend();
// A backend for `device` computing in `act` (cpu: f32 only). Throws gsa::error with what to change when the
// device is absent (no CUDA in this build, no GPU, no driver) or the type is unsupported. The CUDA backend is
// one per process; asking again returns the same one if the type matches.
backend& get_backend(device d, dtype act);
// Parses "cpu" / "cuda" and "bf16" / "f32" (clear errors otherwise).
device parse_device(const std::string& s);
dtype parse_precision(const std::string& s);

}  // namespace gsa
