#include "infer/perplexity.h"

#include <cmath>

#include "core/error.h"

namespace gsa::infer {

static double nll_of(const std::vector<float>& logits, int32_t target) {
  float mx = -INFINITY;
  for (float x : logits) mx = std::max(mx, x);
  double s = 0;
  for (float x : logits) s += std::exp(double(x - mx));
  return std::log(s) + mx - logits[size_t(target)];
}

nll_result score_continuation(const llama_model& m, method meth, int64_t budget, const std::vector<int32_t>& ids,
                              int64_t context, int predict, int64_t gpu_kv_budget) {
  if (context < 1 || predict < 1 || int64_t(ids.size()) < context + predict)
    fail("score_continuation: need context >= 1, predict >= 1 and {} tokens (got {})", context + predict,
         ids.size());
  session_options o;
  o.meth = meth;
  o.budget = budget;
  o.gpu_kv_budget = gpu_kv_budget;
  o.record = true;
  session s(m, o);
  s.prefill(std::vector<int32_t>(ids.begin(), ids.begin() + context));
  s.take_stats();
  s.append(std::vector<int32_t>(ids.begin() + context, ids.begin() + context + predict));
  run_pending({&s});
  step_stats st = s.take_stats();
  nll_result r;
  const auto& str = s.stream();
  for (const auto& rec : s.records()) {
    int next = rec.pos + 1;
    if (next >= str.size() || str.is_gist(next)) continue;
    int32_t raw = str.raw_index[next];
    if (raw <= context || raw >= context + predict) continue;
    r.nats += nll_of(rec.logits, str.ids[next]);
    r.tokens++;
    r.scored_ids.push_back(str.ids[next]);
  }
  r.attended = st.attended_tokens * st.rows;
  r.rows = st.rows;
  return r;
}

}  // namespace gsa::infer
