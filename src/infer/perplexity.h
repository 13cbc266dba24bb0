// Teacher-forced scoring through a decode method: prefill `context` tokens, feed the next `predict` tokens one
// at a time through the method's decode path (selection, unfolding, eviction as in generation), and sum the
// negative log-likelihood each got from the previous stream row (a gist row when a chunk just ended).
#pragma once
#include <cstdint>
#include <vector>

#include "infer/session.h"

namespace gsa::infer {

struct nll_result {
  double nats = 0;          // summed negative log-likelihood of the scored tokens
  int64_t tokens = 0;       // scored tokens (predict - 1: the first is predicted by the prefill, not scored)
  double attended = 0;      // keys per layer and KV head, summed over the decoded rows
  int64_t rows = 0;         // decoded rows (tokens and inserted gists)
  std::vector<int32_t> scored_ids;  // the scored tokens, for byte counts
};

// ids holds at least context + predict tokens; budget as session_options::budget (-1: the method's default),
// gpu_kv_budget as session_options::gpu_kv_budget.
nll_result score_continuation(const llama_model& m, method meth, int64_t budget, const std::vector<int32_t>& ids,
                              int64_t context, int predict, int64_t gpu_kv_budget = 0);

}  // namespace gsa::infer
