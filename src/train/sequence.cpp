#include "train/sequence.h"

#include <algorithm>

#include "core/error.h"
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

void forward_sequence(const llama_model& m, forward_state& st, const train_sequence& seq,
                      const gist::gsa_config* cfg) {
  if (!cfg) return forward(m, st, seq.ids, seq.pos, seq.targets, nullptr);
  plan_provider plans = make_gsa_plans(m, *cfg, seq.s, cfg->mode, seq.ctx_end);
  forward(m, st, seq.ids, seq.pos, seq.targets, &plans);
}

}  // namespace gsa
