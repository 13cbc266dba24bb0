#include "train/sequence.h"

#include <algorithm>

#include "core/error.h"
#include "gist/select.h"
#include "model/gsa-plans.h"

namespace gsa {

train_sequence make_sequence(const train_sample& x, const gist::gsa_config* cfg, int suffix_tokens) {
  train_sequence q;
  const int n = int(x.raw.size());
  GSA_ASSERT(n >= 2, "a training sample needs at least two tokens");
  if (!cfg) {
    q.ids = x.raw;
    q.pos.resize(n);
    q.targets.assign(n, gist::ignore_label);
    for (int i = 0; i < n; i++) {
      q.pos[i] = i;
      if (i + 1 < n && i + 1 >= x.loss_begin) q.targets[i] = x.raw[i + 1];
    }
    if (x.loss_begin > 0 && x.loss_begin < n) q.answer_begin = x.loss_begin - 1;
    return q;
  }
  q.s = gist::build_stream(x.raw.data(), n, *cfg);
  q.ids = q.s.ids;
  q.pos = q.s.pos;
  q.targets = q.s.labels;
  for (int i = 0; i + 1 < q.s.size(); i++) {
    if (q.targets[i] == gist::ignore_label) continue;
    int r = q.s.raw_index[i + 1];  // the raw token predicted
    if (r < x.loss_begin) q.targets[i] = gist::ignore_label;
    else if (q.answer_begin < 0 && x.loss_begin > 0) q.answer_begin = i;
  }
  if (cfg->mode == gist::train_mode::suffix_unfold) {
    int ce = x.ctx_end >= 0 ? x.ctx_end : n - std::min(n - 1, std::max(1, suffix_tokens));
    ce = std::clamp(ce, 1, n - 1);
    q.ctx_end = gist::raw_position(q.s, cfg->chunk[0], ce);
  }
  return q;
}

namespace {

// One level's spec: candidates are the level's whole units [0, n_cand_0 / P) (P level-0 chunks each), as the
// top-down walk scores them (gist::select_block); level 0 is the flat rule's chunks.
route_spec level_route_spec(const train_sequence& seq, const gist::gsa_config& cfg, int n_layers, int level) {
  const gist::stream& s = seq.s;
  route_spec r;
  r.g = cfg.gists_per_chunk;
  r.level = level;
  r.span = gist::chunks_per_unit(cfg, level);
  r.weight = cfg.route_loss;
  r.layers.assign(size_t(std::max(0, n_layers)), 1);
  for (int l : cfg.dense_layers)
    if (l >= 0 && l < n_layers) r.layers[size_t(l)] = 0;
  const int complete = gist::complete_chunk_count(s);
  std::vector<int32_t> eligible, n_cand(size_t(s.size()), 0);  // (n_cand per stream row)
  for (int t = 0; t < s.size(); t++) {
    if (s.level[t] >= 0) continue;
    n_cand[size_t(t)] = gist::candidate_count(s.chunk[t], complete, cfg.local_chunks) / r.span;
    if (n_cand[size_t(t)] >= 2) eligible.push_back(t);
  }
  const size_t want = size_t(std::max(1, cfg.route_rows));
  std::vector<int32_t> rows;
  if (eligible.size() <= want) {
    rows = eligible;
  } else {
    // The answer's first rows (the question's last row predicts its first token), then an even spread.
    if (seq.answer_begin >= 0) {
      auto it = std::lower_bound(eligible.begin(), eligible.end(), seq.answer_begin);
      for (; it != eligible.end() && rows.size() < want / 4; ++it) rows.push_back(*it);
    }
    const size_t rest = want - rows.size();
    for (size_t i = 0; i < rest; i++) rows.push_back(eligible[i * eligible.size() / rest]);
    std::sort(rows.begin(), rows.end());
    rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  }
  int max_cand = 0;
  for (int32_t t : rows) {
    r.rows.push_back(t);
    r.n_cand.push_back(n_cand[size_t(t)]);
    max_cand = std::max(max_cand, n_cand[size_t(t)]);
  }
  // Teacher keys: the raw tokens of each candidate's chunks less the sink (always visible, and attention's usual
  // sink of mass).
  for (int c = 0; c < max_cand * r.span; c++) {
    int b = s.chunk_raw_begin[size_t(c)];
    const int e = s.chunk_raw_end[size_t(c)];
    while (b < e && s.raw_index[size_t(b)] < cfg.sink) b++;
    r.raw_begin.push_back(b);
    r.raw_end.push_back(e);
  }
  for (int u = 0; u < max_cand; u++) r.gist_begin.push_back(gist::unit_gist_position(s, cfg, level, u));
  return r;
}

}  // namespace

std::vector<route_spec> make_route_specs(const train_sequence& seq, const gist::gsa_config& cfg, int n_layers) {
  std::vector<route_spec> out;
  for (int l = 0; l < route_levels(cfg); l++) {
    route_spec r = level_route_spec(seq, cfg, n_layers, l);
    if (r.R() > 0) out.push_back(std::move(r));
  }
  return out;
}

int route_levels(const gist::gsa_config& cfg) { return gist::walks(cfg) ? cfg.levels() : 1; }

void prepare_route_specs(const llama_model& m, forward_state& st, const train_sequence& seq,
                         const gist::gsa_config& cfg, Tensor* route_kl) {
  if (!(cfg.route_loss > 0)) return;
  const int L = int(m.config.num_hidden_layers);
  st.route = make_route_specs(seq, cfg, L);
  for (route_spec& r : st.route) {
    if (route_kl) {
      GSA_ASSERT(route_kl->dim(0) > r.level, "a route KL accumulator of {} levels for level {}", route_kl->dim(0),
                 r.level);
      r.kl = route_kl->slice_rows(r.level, r.level + 1).view({route_kl->dim(1)});
    }
    m.ops().route_prepare(r, L);
  }
}

void forward_sequence(const llama_model& m, forward_state& st, const train_sequence& seq,
                      const gist::gsa_config* cfg, Tensor* route_kl) {
  if (!cfg) return forward(m, st, seq.ids, seq.pos, seq.targets, nullptr);
  prepare_route_specs(m, st, seq, *cfg, route_kl);
  plan_provider plans = make_gsa_plans(m, *cfg, seq.s, cfg->mode, seq.ctx_end);
  forward(m, st, seq.ids, seq.pos, seq.targets, &plans);
}

}  // namespace gsa
