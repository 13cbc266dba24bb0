// The batched decode step: one row per session through every layer, M = sessions (matmuls are M-row GEMMs, a
// mat-vec for one session); per session: RoPE at its position, append K/V to its cache, select its keys,
// decode attention over them. Logits only for a session's last queued row (or every row when recording).
// Written once against the model's backend (backend/backend.h): on the CPU every op is the reference kernel on
// host memory; on a device the activations, the K/V pools and the attention stay there, and only what the host
// selection reads comes back (each layer's rotated q; gist keys as they are appended: kv-cache.h pool mode),
// except for the rows whose key lists the backend selects and builds itself (backend/decode-lists.h: full,
// streaming, gist and gsa), which need nothing from the host between layers.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>

#include "core/error.h"
#include "core/profile.h"
#include "infer/decode-attention.h"
#include "infer/session.h"

namespace gsa::infer {

// Where the backend records (backend::replay: CUDA graphs), a step of M <= max_recorded_rows rows keeps its
// activations in buffers that live with the model, so that each layer's dense part (the projections, norms, RoPE
// and MLP: everything but appending K/V and attending, which change from step to step) reads and writes the same
// memory every step and is recorded once: L + 1 graph launches per step instead of about 15 launches per layer.
// The buffers are per row count M, made for one set of weights (key: shapes, types and every weight's address;
// another key rebuilds them all).
struct step_scratch {
  struct rows_buffers {
    Tensor ids, pos, x, h, rstd, q, k, v, att, tmp, gate, up;
    std::vector<std::shared_ptr<void>> segs;  // layer l's segment: layer l - 1's MLP half (or the embedding), then
                                              // layer l's norm, projections and RoPE; segment L ends the model
  };
  std::mutex mu;
  std::vector<uintptr_t> key;
  std::map<int, rows_buffers> by_rows;
};

namespace {

constexpr int max_recorded_rows = 64;
constexpr size_t max_recorded_sizes = 8;  // row counts kept at once (continuous batching moves between a few)

std::vector<uintptr_t> scratch_key(const llama_model& m) {
  const auto& c = m.config;
  std::vector<uintptr_t> key{uintptr_t(c.hidden_size),       uintptr_t(c.intermediate_size),
                             uintptr_t(c.num_attention_heads), uintptr_t(c.num_key_value_heads),
                             uintptr_t(c.head_dim),          uintptr_t(c.num_hidden_layers),
                             uintptr_t(m.ops().act()),       uintptr_t(m.inv_freq_dev.raw()),
                             uintptr_t(m.w.embed.raw()),     uintptr_t(m.w.norm.raw())};
  for (const layer_weights& lw : m.w.layers)
    for (const Tensor* t : {&lw.attn_norm, &lw.wq, &lw.bq, &lw.wk, &lw.bk, &lw.wv, &lw.bv, &lw.wo, &lw.bo,
                            &lw.mlp_norm, &lw.w_gate, &lw.w_up, &lw.w_down})
      key.push_back(uintptr_t(t->empty() ? nullptr : t->raw()));
  return key;
}

// The model's buffers for M rows, holding `lock` on them for the step; null (the step allocates its own and
// records nothing) when the backend does not record, M is large (a prefill in pieces), or another thread's step
// holds them.
step_scratch::rows_buffers* scratch_for(const llama_model& m, int M, std::unique_lock<std::mutex>& lock) {
  backend& be = m.ops();
  if (!be.records() || M > max_recorded_rows) return nullptr;
  if (!m.decode_scratch) m.decode_scratch = std::make_shared<step_scratch>();
  step_scratch& sc = *m.decode_scratch;
  lock = std::unique_lock<std::mutex>(sc.mu, std::try_to_lock);
  if (!lock.owns_lock()) return nullptr;
  std::vector<uintptr_t> key = scratch_key(m);
  if (key != sc.key || (!sc.by_rows.count(M) && sc.by_rows.size() >= max_recorded_sizes)) {
    sc.by_rows.clear();
    sc.key = std::move(key);
  }
  auto [it, fresh] = sc.by_rows.try_emplace(M);
  step_scratch::rows_buffers& b = it->second;
  if (fresh) {
    const auto& c = m.config;
    const dtype at = be.act();
    const int64_t C = c.hidden_size, I = c.intermediate_size, Hq = c.num_attention_heads,
                  Hkv = c.num_key_value_heads, D = c.head_dim;
    b.ids = be.alloc({M}, dtype::i32), b.pos = be.alloc({M}, dtype::i32);
    b.x = be.alloc({M, C}, at), b.h = be.alloc({M, C}, at), b.rstd = be.alloc({M}, dtype::f32);
    b.q = be.alloc({M, Hq, D}, at), b.k = be.alloc({M, Hkv, D}, at), b.v = be.alloc({M, Hkv, D}, at);
    b.att = be.alloc({M, Hq * D}, at), b.tmp = be.alloc({M, C}, at);
    b.gate = be.alloc({M, I}, at), b.up = be.alloc({M, I}, at);
    b.segs.assign(size_t(c.num_hidden_layers) + 1, nullptr);
  }
  return &b;
}

Tensor upload_i32(backend& be, std::vector<int32_t>& v) {
  return be.upload(Tensor::borrow(v.data(), {int64_t(v.size())}, dtype::i32), dtype::i32);
}

// Whether the method's key selection reads the row's query.
bool selects_by_query(method m) { return m != method::full && m != method::streaming && m != method::gist; }

// GSA_DECODE_PROFILE=1: per step, the wall time of its phases on stderr, with the device synchronised at each
// boundary (so the phases' GPU work is inside them): diagnosis only, it slows the step down.
struct step_profile {
  bool on = std::getenv("GSA_DECODE_PROFILE") != nullptr;
  backend* be = nullptr;
  std::chrono::steady_clock::time_point t;
  double prepare = 0, append = 0, attention = 0, logits = 0, rest = 0, done = 0;
  void start(backend& b) {
    if (!on) return;
    be = &b;
    be->synchronize();
    t = std::chrono::steady_clock::now();
  }
  void lap(double& into) {
    if (!on) return;
    be->synchronize();
    const auto now = std::chrono::steady_clock::now();
    into += std::chrono::duration<double, std::milli>(now - t).count();
    t = now;
  }
  void print(int M) const {
    if (!on) return;
    // Inside the attention phase: the backend's device-timed counters (the CUDA decode lists' decode.*).
    std::string inside;
    for (const auto& [name, ms] : profile_take()) inside += fmt::format(" {} {:.3f}", name, ms);
    fmt::print(stderr,
               "decode-profile: rows {} prepare {:.3f} append {:.3f} attention {:.3f} logits {:.3f} rest {:.3f} "
               "done {:.3f} ms{}\n",
               M, prepare, append, attention, logits, rest, done, inside.empty() ? "" : " |" + inside);
  }
};

}  // namespace

int decode_recordings(const llama_model& m) {
  if (!m.decode_scratch) return 0;
  std::lock_guard<std::mutex> lock(m.decode_scratch->mu);
  int n = 0;
  for (const auto& [rows, b] : m.decode_scratch->by_rows)
    for (const auto& r : b.segs) n += r != nullptr;
  return n;
}

void session::h2o_update(int layer, int pos, const std::vector<std::vector<float>>& weights) {
  const int Hkv = int(m_.config.num_key_value_heads);
  const int64_t recent = budget_ / 2;
  for (int h = 0; h < Hkv; h++) {
    auto& kept = h2o_kept_[size_t(layer) * Hkv + h];
    auto& score = h2o_score_[size_t(layer) * Hkv + h];
    for (size_t j = 0; j < kept.size(); j++) score[j] += weights[h][j];
    // Evict down to budget - 1, so that the next row joins a list of exactly the budget (as the first eviction
    // keeps budget - 1): the lightest token outside the recent window first.
    while (int64_t(kept.size()) > std::max<int64_t>(0, budget_ - 1)) {
      int victim = -1;
      for (size_t j = 0; j < kept.size(); j++)
        if (kept[j] <= pos - recent && (victim < 0 || score[j] < score[victim])) victim = int(j);
      if (victim < 0) victim = 0;
      kept.erase(kept.begin() + victim);
      score.erase(score.begin() + victim);
    }
  }
}

void run_pending(const std::vector<session*>& batch) {
  const std::vector<int> one(batch.size(), 1);
  for (;;) {
    bool any = false;
    for (session* s : batch) any |= s->has_pending();
    if (!any) return;
    run_step(batch, one);
  }
}

void run_step(const std::vector<session*>& batch, const std::vector<int>& max_rows) {
  GSA_ASSERT(max_rows.size() == batch.size(), "{} row limits for {} sessions", max_rows.size(), batch.size());
  // The step's rows: each session's first min(max_rows, queued) rows, consecutive and in stream order.
  struct entry {
    session* s;
    int row = 0;         // stream position
    int rec = -1;        // index into s->records_ (recording sessions)
    bool last = false;   // the session's last row in this step
    bool lists = false;  // whether the row may take the device-side lists path
  };
  std::vector<session*> ss;
  std::vector<int> take;
  for (size_t b = 0; b < batch.size(); b++)
    if (batch[b]->has_pending()) {
      GSA_ASSERT(max_rows[b] >= 1, "a session in the step computes at least one row");
      ss.push_back(batch[b]);
      take.push_back(int(std::min<size_t>(size_t(max_rows[b]), batch[b]->pending_.size())));
    }
  if (ss.empty()) return;
  const auto t0 = std::chrono::steady_clock::now();
  step_profile prof;
  const llama_model& m = ss[0]->m_;
  const auto& c = m.config;
  for (session* s : ss) GSA_ASSERT(&s->m_ == &m, "sessions of one batch must share the model");
  // Positions first, so that a sequence at the model's end fails before any session's stream has grown.
  for (size_t i = 0; i < ss.size(); i++) {
    int raw = ss[i]->raw_done_;
    for (int r = 0; r < take[i]; r++) {
      const auto& tok = ss[i]->pending_[size_t(r)];
      const int32_t rope_pos = tok.level < 0 ? raw++ : raw - 1;
      if (rope_pos >= c.max_position_embeddings)
        fail(
            "the sequence reached the model's {} positions; shorten the context or the prompt, or lower "
            "--max-tokens",
            c.max_position_embeddings);
    }
  }
  backend& be = m.ops();
  const dtype at = be.act();
  const int C = int(c.hidden_size), I = int(c.intermediate_size);
  const int Hq = int(c.num_attention_heads), Hkv = int(c.num_key_value_heads), D = int(c.head_dim);
  const int L = int(c.num_hidden_layers);
  const float eps = float(c.rms_norm_eps);
  std::vector<entry> rows;
  for (size_t i = 0; i < ss.size(); i++) {
    session& s = *ss[i];
    for (int r = 0; r < take[i]; r++) {
      auto tok = s.pending_.front();
      s.pending_.pop_front();
      entry e{&s};
      e.row = s.push_row(tok.id, tok.level);
      e.last = r == take[i] - 1;
      // Several rows of one session select on the host, row after row (the lists describe one row at a time).
      e.lists = take[i] == 1;
      s.resolve_budget();  // at the session's first decoded row, with the raw count of that row
      rows.push_back(e);
    }
    s.stats_.unfolded.assign(size_t(L) * Hkv, {});
  }
  const int M = int(rows.size());
  std::vector<int32_t> ids(M), pos(M);
  for (int i = 0; i < M; i++) {
    ids[i] = rows[i].s->s_.ids[rows[i].row];
    pos[i] = rows[i].s->s_.pos[rows[i].row];
  }
  // Rows whose lists the backend selects and builds (backend/decode-lists.h; prepared once the row's K/V has
  // a place in the pool, after layer 0's append); the others select on the host.
  std::vector<std::shared_ptr<const void>> lists(M);
  // What each selecting lists row's layers selected: one device buffer for the step, row i's part at sel_off[i]
  // (-1: none), and the counts of it (decode_lists stats) in another, row i's at stats_off[i]; at the step's end
  // the stats come back, and the ids only for the rows that want them (session::wants_ids).
  Tensor sel_all, stats_all;
  std::vector<int64_t> sel_off(M, -1), stats_off(M, -1);
  const Tensor inv_freq = m.inv_freq_dev.empty()
                              ? Tensor::borrow(const_cast<float*>(m.inv_freq.data()), {int64_t(m.inv_freq.size())})
                              : m.inv_freq_dev;
  std::unique_lock<std::mutex> scratch_lock;
  step_scratch::rows_buffers* sb = scratch_for(m, M, scratch_lock);
  Tensor ids_t, pos_t, x, h, rstd, q, k, v, att, tmp, gate, up;
  if (sb) {
    be.write(sb->ids, Tensor::borrow(ids.data(), {M}, dtype::i32));
    be.write(sb->pos, Tensor::borrow(pos.data(), {M}, dtype::i32));
    ids_t = sb->ids, pos_t = sb->pos, x = sb->x, h = sb->h, rstd = sb->rstd, q = sb->q, k = sb->k, v = sb->v;
    att = sb->att, tmp = sb->tmp, gate = sb->gate, up = sb->up;
  } else {
    ids_t = upload_i32(be, ids), pos_t = upload_i32(be, pos);
    x = be.alloc({M, C}, at), h = be.alloc({M, C}, at), rstd = be.alloc({M}, dtype::f32);
    q = be.alloc({M, Hq, D}, at), k = be.alloc({M, Hkv, D}, at), v = be.alloc({M, Hkv, D}, at);
    att = be.alloc({M, Hq * D}, at), tmp = be.alloc({M, C}, at);
    gate = be.alloc({M, I}, at), up = be.alloc({M, I}, at);
  }
  // The layers' dense parts, written once: segment l (0 .. L) is layer l - 1's output projection and MLP (for
  // l = 0 the embedding), then layer l's norm, projections and RoPE (for l = L the final norm), replayed as one
  // recording where the step keeps its buffers (step_scratch).
  auto segment = [&](int l) {
    auto body = [&] {
      if (l == 0) {
        be.embedding_forward(x, ids_t, m.w.embed);
      } else {
        const layer_weights& pw = m.w.layers[size_t(l) - 1];
        be.matmul_forward(tmp, att, pw.wo, &pw.bo);
        be.add_inplace(x, tmp);
        be.rmsnorm_forward(h, rstd, x, pw.mlp_norm, eps);
        be.matmul_forward(gate, h, pw.w_gate, nullptr);
        be.matmul_forward(up, h, pw.w_up, nullptr);
        be.swiglu_forward(gate, gate, up);
        be.matmul_forward(tmp, gate, pw.w_down, nullptr);
        be.add_inplace(x, tmp);
      }
      if (l == L) return be.rmsnorm_forward(h, rstd, x, m.w.norm, eps);
      const layer_weights& lw = m.w.layers[size_t(l)];
      be.rmsnorm_forward(h, rstd, x, lw.attn_norm, eps);
      be.matmul_forward(q, h, lw.wq, &lw.bq);
      be.matmul_forward(k, h, lw.wk, &lw.bk);
      be.matmul_forward(v, h, lw.wv, &lw.bv);
      be.rope_forward(q, pos_t, inv_freq);
      be.rope_forward(k, pos_t, inv_freq);
    };
    if (sb)
      be.replay(sb->segs[size_t(l)], body);
    else
      body();
  };
  prof.start(be);
  std::vector<std::vector<int32_t>> keys;
  std::vector<std::vector<kv::kv_addr>> addrs(Hkv);
  std::vector<std::vector<float>> weights;
  std::vector<float> flat_weights;  // h2o on a pool: the backend's weights, list after list
  std::vector<int64_t> indptr;
  std::vector<int32_t> indices;
  std::vector<double> attended(M, 0.0);
  // One row per session and every cache pooled (a decode step of a batch): each layer appends every session's
  // row in one kv_write_rows (one launch on a device) before the rows attend. With one row per session no row
  // can see another's K/V (each session has its own cache), so this equals appending just before each attends.
  bool append_together = M > 1 && M == int(ss.size());
  for (const entry& e : rows)
    append_together = append_together && e.s->cache_->pooled() &&
                       e.s->cache_->layout().page_size == rows[0].s->cache_->layout().page_size;
  std::vector<Tensor*> pools(append_together ? M : 0);
  std::vector<int64_t> pool_rows(append_together ? M : 0);
  for (int l = 0; l < L; l++) {
    segment(l);
    Tensor qh;  // the rows' queries where a host selection reads them (fetched once per layer)
    if (append_together) {
      prof.lap(prof.rest);
      for (int i = 0; i < M; i++) {
        session& s = *rows[i].s;
        pool_rows[i] = s.cache_->reserve_rows(l, {s.addr_[rows[i].row]}, k.slice_rows(i, i + 1))[0];
        pools[i] = &s.cache_->pool(l);
      }
      be.kv_write_rows(pools, ss[0]->cache_->layout().page_size, pool_rows, k, v);
      for (int i = 0; i < M; i++) rows[i].s->cache_->commit_rows(l);
      prof.lap(prof.append);
    }
    // A session's rows in stream order: row i's K/V join the cache just before it selects and attends, so it
    // sees exactly what it would see decoded alone (the later rows of its session are not in this layer yet).
    // The rows on the device lists path attend together after the loop: such a row is its session's only row
    // of the step (entry::lists), so what the loop appends after it belongs to other sessions' caches.
    std::vector<backend::lists_call> calls;
    int lists_page_rows = 0;
    for (int i = 0; i < M; i++) {
      session& s = *rows[i].s;
      kv::kv_cache& cache = *s.cache_;
      prof.lap(prof.rest);
      if (!append_together) {  // (else appended above)
        if (cache.pooled())
          cache.append_rows(l, {s.addr_[rows[i].row]}, k.slice_rows(i, i + 1), v.slice_rows(i, i + 1));
        else
          s.store_kv(l, rows[i].row, k.f32() + size_t(i) * Hkv * D, v.f32() + size_t(i) * Hkv * D);
      }
      prof.lap(prof.append);
      if (l == 0) {
        if (rows[i].lists) lists[i] = s.prepare_lists(rows[i].row);
        prof.lap(prof.prepare);
        if (s.opts_.record) {
          rows[i].rec = int(s.records_.size());
          s.records_.push_back({rows[i].row, {}, {}});
        }
      }
      if (!lists[i] && selects_by_query(s.opts_.meth) && qh.empty()) qh = q.host(dtype::f32);
      const float* qi = lists[i] || qh.empty() ? nullptr : qh.f32() + size_t(i) * Hq * D;
      Tensor out_i = att.slice_rows(i, i + 1);
      if (lists[i]) {  // selection, lists and attention where the pool is, after this loop for all such rows
        backend::lists_call call;
        call.row = i;
        call.pool = &cache.pool(l);
        call.host = cache.host(l);
        if (cache.layout().page_summaries) call.summary = &cache.page_summary(l);
        call.prepared = lists[i].get();
        call.select = s.lists_select(l);
        GSA_ASSERT(calls.empty() || cache.layout().page_size == lists_page_rows, "one page size per step's lists");
        lists_page_rows = cache.layout().page_size;
        calls.push_back(std::move(call));
        continue;
      }
      s.select_keys(l, rows[i].row, qi, keys);
      for (int hk = 0; hk < Hkv; hk++) {
        attended[i] += double(keys[hk].size());
        s.stats_.bytes_read += int64_t(keys[hk].size()) * 2 * D * s.kv_elem_bytes();
      }
      const bool h2o = s.opts_.meth == method::h2o;
      if (cache.pooled()) {  // the lists as pool rows; the attention runs where the pool is
        indptr.assign(1, 0);
        indices.clear();
        for (int hk = 0; hk < Hkv; hk++) {
          for (int32_t p : keys[hk]) indices.push_back(int32_t(cache.pool_row(l, s.addr_[p])));
          indptr.push_back(int64_t(indices.size()));
        }
        be.decode_attention(out_i, q.slice_rows(i, i + 1), cache.pool(l), cache.layout().page_size, indptr, indices,
                            cache.host(l), h2o ? &flat_weights : nullptr);
        if (h2o) {
          weights.resize(size_t(Hkv));
          for (int hk = 0; hk < Hkv; hk++)
            weights[size_t(hk)].assign(flat_weights.begin() + indptr[size_t(hk)],
                                       flat_weights.begin() + indptr[size_t(hk) + 1]);
          s.h2o_update(l, rows[i].row, weights);
        }
      } else {
        for (int hk = 0; hk < Hkv; hk++) {
          addrs[hk].resize(keys[hk].size());
          for (size_t j = 0; j < keys[hk].size(); j++) addrs[hk][j] = s.addr_[keys[hk][j]];
        }
        decode_attention(out_i.f32(), qi ? qi : q.f32() + size_t(i) * Hq * D, cache, l, addrs, Hq,
                         h2o ? &weights : nullptr);
        if (h2o) s.h2o_update(l, rows[i].row, weights);
      }
      if (s.opts_.record) {
        auto& rec = s.records_[size_t(rows[i].rec)].keys;
        for (auto& kk : keys) rec.push_back(std::move(kk));
      }
    }
    if (l == 0) {  // every lists row is prepared now: one buffer for what they select, one for its counts
      int64_t total = 0, total_stats = 0;
      for (int i = 0; i < M; i++)
        if (lists[i] && rows[i].s->dl_selects_) {
          sel_off[i] = total;
          total += L * rows[i].s->dl_.selected_size();
          stats_off[i] = total_stats;
          total_stats += L * rows[i].s->dl_.stats_size();
        }
      if (total > 0) {
        sel_all = be.alloc({total}, dtype::i32);
        stats_all = be.alloc({total_stats}, dtype::i32);
      }
    }
    for (backend::lists_call& call : calls)
      if (call.select) {
        const decode_lists& d = rows[size_t(call.row)].s->dl_;
        const int64_t n_sel = d.selected_size(), n_st = d.stats_size();
        const int64_t at = sel_off[size_t(call.row)] + l * n_sel, at_st = stats_off[size_t(call.row)] + l * n_st;
        call.selected = sel_all.slice_rows(at, at + n_sel);
        call.stats = stats_all.slice_rows(at_st, at_st + n_st);
      }
    if (!calls.empty()) {
      prof.lap(prof.rest);
      be.decode_attention_lists_batch(att, q, lists_page_rows, calls);
      prof.lap(prof.attention);
    }
  }
  segment(L);
  std::vector<int32_t> need;  // the rows whose logits the step returns
  for (int i = 0; i < M; i++) {
    const session& s = *rows[i].s;
    if (s.opts_.record || (rows[i].last && !s.has_pending())) need.push_back(i);
  }
  prof.lap(prof.rest);
  auto recorded = [&](int32_t i) {  // after row i's logits are in its session's logits_
    session& s = *rows[size_t(i)].s;
    if (s.opts_.record) s.records_[size_t(rows[size_t(i)].rec)].logits = s.logits_;
  };
  if (m.on_host()) {  // straight into each session's logits, with the rounding of a one-row product
    for (int32_t i : need) {
      rows[size_t(i)].s->row_logits(h.slice_rows(i, i + 1));
      recorded(i);
    }
  } else if (!need.empty()) {
    // On a device: one LM-head product over the rows that need logits and one copy to the host (a product and a
    // synchronising copy per session dominated a batched step's time). Rows not in one range are gathered with the
    // embedding op (a row gather).
    const int64_t V = c.vocab_size, n = int64_t(need.size());
    Tensor hn;
    if (need.back() - need.front() + 1 == n) {
      hn = h.slice_rows(need.front(), need.back() + 1);
    } else {
      hn = be.alloc({n, C}, at);
      be.embedding_forward(hn, upload_i32(be, need), h);
    }
    Tensor out = be.alloc({n, V}, at);
    be.matmul_forward(out, hn, m.lm_head(), nullptr);
    // Copied as stored (bf16: half the bytes) and widened straight into each session's logits.
    const Tensor host = out.host(out.type());
    const size_t row_bytes = size_t(V) * dtype_size(host.type());
    for (int64_t j = 0; j < n; j++) {
      std::vector<float>& lg = rows[size_t(need[size_t(j)])].s->logits_;
      lg.resize(size_t(V));
      convert_to_f32(lg.data(), static_cast<const char*>(host.raw()) + size_t(j) * row_bytes, host.type(), size_t(V));
      recorded(need[size_t(j)]);
    }
  }
  prof.lap(prof.logits);
  be.synchronize();
  prof.lap(prof.rest);
  bool want_ids = false;
  for (int i = 0; i < M; i++) want_ids = want_ids || (sel_off[i] >= 0 && rows[i].s->wants_ids());
  const Tensor stats_host = stats_all.empty() ? Tensor() : stats_all.host(dtype::i32);
  const Tensor sel_host = want_ids ? sel_all.host(dtype::i32) : Tensor();
  for (int i = 0; i < M; i++) {
    if (!lists[i]) continue;
    session& s = *rows[i].s;
    const bool sel = sel_off[i] >= 0;
    s.lists_done(sel ? static_cast<const int32_t*>(stats_host.raw()) + stats_off[i] : nullptr,
                 sel && s.wants_ids() ? static_cast<const int32_t*>(sel_host.raw()) + sel_off[i] : nullptr);
  }
  prof.lap(prof.done);
  prof.print(M);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  for (int i = 0; i < M; i++) {
    step_stats& st = rows[i].s->stats_;
    st.rows++;
    if (rows[i].last) st.ms += ms;
    st.attended_tokens += attended[i] / (double(L) * Hkv);
  }
}

}  // namespace gsa::infer
