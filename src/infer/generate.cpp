// Sampling and the batched generation loop; contract in generate.h.
#include "infer/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace gsa::infer {

void sampling::validate() const {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature)) fail("--temperature {} must be >= 0", temperature);
  if (top_k < 0) fail("--top-k {} must be >= 0 (0 = no limit)", top_k);
  if (!(top_p > 0.0f && top_p <= 1.0f)) fail("--top-p {} must be in (0, 1]", top_p);
}

sampler::sampler(const sampling& s) : s_(s), r_(s.seed) { s.validate(); }

int32_t sampler::sample(const float* logits, int V) {
  if (s_.temperature == 0.0f) return int32_t(std::max_element(logits, logits + V) - logits);
  std::vector<int32_t> idx(V);
  std::iota(idx.begin(), idx.end(), 0);
  int n = V;
  if (s_.top_k > 0 && s_.top_k < V) {
    n = s_.top_k;
    std::partial_sort(idx.begin(), idx.begin() + n, idx.end(),
                      [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  } else {
    std::sort(idx.begin(), idx.end(),
              [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  }
  std::vector<double> p(n);
  const double mx = logits[idx[0]];
  double z = 0;
  for (int i = 0; i < n; i++) z += p[i] = std::exp((double(logits[idx[i]]) - mx) / s_.temperature);
  double cum = 0;
  int keep = n;
  for (int i = 0; i < n; i++) {
    cum += p[i] / z;
    if (cum >= double(s_.top_p) * (1 - 1e-12)) {
      keep = i + 1;
      break;
    }
  }
  double zk = 0;
  for (int i = 0; i < keep; i++) zk += p[i];
  double u = double(r_.uniform()) * zk;
  for (int i = 0; i < keep; i++) {
    u -= p[i];
    if (u < 0) return idx[i];
  }
  return idx[keep - 1];
}

std::vector<generation> generate(const std::vector<session*>& batch, const generate_options& opts) {
  if (opts.max_tokens < 0) fail("--max-tokens {} must be >= 0", opts.max_tokens);
  const int B = int(batch.size());
  std::vector<generation> out(B);
  std::vector<sampler> samplers;
  for (int i = 0; i < B; i++) {
    sampling s = opts.samp;
    s.seed += uint64_t(i);  // independent streams per session, reproducible
    samplers.emplace_back(s);
  }
  for (session* s : batch) s->reserve_tokens(opts.max_tokens);  // no pool growth while decoding
  run_pending(batch);
  for (session* s : batch)
    if (s->logits().empty()) fail("generate: a session has no tokens; prefill a context or append a prompt first");
  for (auto* s : batch) s->take_stats();
  std::vector<session*> active(batch);
  std::vector<int> index(B);
  std::iota(index.begin(), index.end(), 0);
  if (opts.max_tokens == 0) {
    for (auto& g : out) g.finish_reason = "length";
    return out;
  }
  while (!active.empty()) {
    std::vector<session*> next;
    std::vector<int> next_index;
    for (size_t a = 0; a < active.size(); a++) {
      const int i = index[a];
      session* s = active[a];
      const int32_t tok = samplers[i].sample(s->logits().data(), int(s->logits().size()));
      out[i].ids.push_back(tok);
      if (std::find(opts.stop_ids.begin(), opts.stop_ids.end(), tok) != opts.stop_ids.end()) {
        out[i].finish_reason = "stop_id";
      } else if (opts.stop && opts.stop(i, out[i].ids)) {
        out[i].finish_reason = "stop";
      } else if (int(out[i].ids.size()) >= opts.max_tokens) {
        out[i].finish_reason = "length";
      } else {
        s->append({tok});
        next.push_back(s);
        next_index.push_back(i);
      }
    }
    run_pending(next);
    for (size_t a = 0; a < next.size(); a++)
      if (opts.on_step) opts.on_step(next_index[a], next[a]->take_stats());
    active = std::move(next);
    index = std::move(next_index);
  }
  return out;
}

}  // namespace gsa::infer
