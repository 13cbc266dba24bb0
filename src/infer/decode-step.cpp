// The batched decode step: one row per session through every layer, M = sessions (matmuls are M-row GEMMs, a
// mat-vec for one session); per session: RoPE at its position, append K/V to its cache, select its keys,
// decode attention over them. Logits only for a session's last queued row (or every row when recording).
#include <algorithm>
#include <chrono>

#include "backend/cpu/ops.h"
#include "core/error.h"
#include "infer/decode-attention.h"
#include "infer/session.h"

namespace gsa::infer {

namespace {

const float* opt(const Tensor& t) { return t.empty() ? nullptr : t.f32(); }

void add_inplace(float* y, const float* x, size_t n) {
  for (size_t i = 0; i < n; i++) y[i] += x[i];
}

}  // namespace

void session::h2o_update(int layer, int pos, const std::vector<std::vector<float>>& weights) {
  const int Hkv = int(m_.config.num_key_value_heads);
  const int64_t recent = budget_ / 2;
  for (int h = 0; h < Hkv; h++) {
    auto& kept = h2o_kept_[size_t(layer) * Hkv + h];
    auto& score = h2o_score_[size_t(layer) * Hkv + h];
    for (size_t j = 0; j < kept.size(); j++) score[j] += weights[h][j];
    while (int64_t(kept.size()) > budget_) {  // evict the lightest token outside the recent window
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
  for (;;) {
    std::vector<session*> ss;
    for (session* s : batch)
      if (s->has_pending()) ss.push_back(s);
    if (ss.empty()) return;
    const auto t0 = std::chrono::steady_clock::now();
    const llama_model& m = ss[0]->m_;
    const auto& c = m.config;
    for (session* s : ss) GSA_ASSERT(&s->m_ == &m, "sessions of one batch must share the model");
    const int M = int(ss.size()), C = int(c.hidden_size), I = int(c.intermediate_size);
    const int Hq = int(c.num_attention_heads), Hkv = int(c.num_key_value_heads), D = int(c.head_dim);
    const int L = int(c.num_hidden_layers), V = int(c.vocab_size);
    const float eps = float(c.rms_norm_eps);
    std::vector<int32_t> ids(M), pos(M), rows(M);
    for (int i = 0; i < M; i++) {
      session& s = *ss[i];
      auto tok = s.pending_.front();
      const int32_t rope_pos = tok.level < 0 ? s.raw_done_ : s.raw_done_ - 1;
      if (rope_pos >= c.max_position_embeddings)
        fail("the sequence reached the model's {} positions; shorten the context or the prompt, or lower "
             "--max-tokens", c.max_position_embeddings);
      s.pending_.pop_front();
      rows[i] = s.push_row(tok.id, tok.level);
      ids[i] = tok.id;
      pos[i] = s.s_.pos[rows[i]];
      s.resolve_budget();
      s.stats_.unfolded.assign(size_t(L) * Hkv, {});
    }
    std::vector<float> x(size_t(M) * C), h(size_t(M) * C), rstd(M), q(size_t(M) * Hq * D), k(size_t(M) * Hkv * D),
        v(size_t(M) * Hkv * D), att(size_t(M) * Hq * D), tmp(size_t(M) * C), gate(size_t(M) * I), up(size_t(M) * I);
    cpu::embedding_forward(x.data(), ids.data(), m.w.embed.f32(), M, C);
    std::vector<std::vector<int32_t>> keys;
    std::vector<std::vector<kv::kv_addr>> addrs(Hkv);
    std::vector<std::vector<float>> weights;
    std::vector<double> attended(M, 0.0);
    for (int l = 0; l < L; l++) {
      const layer_weights& lw = m.w.layers[l];
      cpu::rmsnorm_forward(h.data(), rstd.data(), x.data(), lw.attn_norm.f32(), M, C, eps);
      cpu::matmul_forward(q.data(), h.data(), lw.wq.f32(), opt(lw.bq), M, C, Hq * D);
      cpu::matmul_forward(k.data(), h.data(), lw.wk.f32(), opt(lw.bk), M, C, Hkv * D);
      cpu::matmul_forward(v.data(), h.data(), lw.wv.f32(), opt(lw.bv), M, C, Hkv * D);
      cpu::rope_forward(q.data(), pos.data(), m.inv_freq.data(), M, Hq, D);
      cpu::rope_forward(k.data(), pos.data(), m.inv_freq.data(), M, Hkv, D);
      for (int i = 0; i < M; i++) {
        session& s = *ss[i];
        const float* qi = q.data() + size_t(i) * Hq * D;
        s.store_kv(l, rows[i], k.data() + size_t(i) * Hkv * D, v.data() + size_t(i) * Hkv * D);
        s.select_keys(l, rows[i], qi, keys);
        for (int hk = 0; hk < Hkv; hk++) {
          addrs[hk].resize(keys[hk].size());
          for (size_t j = 0; j < keys[hk].size(); j++) addrs[hk][j] = s.addr_[keys[hk][j]];
          attended[i] += double(keys[hk].size());
          s.stats_.bytes_read += int64_t(keys[hk].size()) * 2 * D * int64_t(sizeof(float));
        }
        const bool h2o = s.opts_.meth == method::h2o;
        decode_attention(att.data() + size_t(i) * Hq * D, qi, *s.cache_, l, addrs, Hq, h2o ? &weights : nullptr);
        if (h2o) s.h2o_update(l, rows[i], weights);
        if (s.opts_.record) {
          if (l == 0) s.records_.push_back({rows[i], {}, {}});
          auto& rec = s.records_.back().keys;
          for (auto& kk : keys) rec.push_back(std::move(kk));
        }
      }
      cpu::matmul_forward(tmp.data(), att.data(), lw.wo.f32(), opt(lw.bo), M, Hq * D, C);
      add_inplace(x.data(), tmp.data(), x.size());
      cpu::rmsnorm_forward(h.data(), rstd.data(), x.data(), lw.mlp_norm.f32(), M, C, eps);
      cpu::matmul_forward(gate.data(), h.data(), lw.w_gate.f32(), nullptr, M, C, I);
      cpu::matmul_forward(up.data(), h.data(), lw.w_up.f32(), nullptr, M, C, I);
      cpu::swiglu_forward(gate.data(), gate.data(), up.data(), int64_t(M) * I);
      cpu::matmul_forward(tmp.data(), gate.data(), lw.w_down.f32(), nullptr, M, I, C);
      add_inplace(x.data(), tmp.data(), x.size());
    }
    cpu::rmsnorm_forward(h.data(), rstd.data(), x.data(), m.w.norm.f32(), M, C, eps);
    for (int i = 0; i < M; i++) {
      session& s = *ss[i];
      if (s.has_pending() && !s.opts_.record) continue;
      s.logits_.resize(V);
      cpu::matmul_forward(s.logits_.data(), h.data() + size_t(i) * C, m.lm_head().f32(), nullptr, 1, C, V);
      if (s.opts_.record) s.records_.back().logits = s.logits_;
    }
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    for (int i = 0; i < M; i++) {
      step_stats& st = ss[i]->stats_;
      st.rows++;
      st.ms += ms;
      st.attended_tokens += attended[i] / (double(L) * Hkv);
    }
  }
}

}  // namespace gsa::infer
