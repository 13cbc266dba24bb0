// Length-targeted context assembly (see context-builder.h).
//
// Tokens are nearly additive over pieces joined by a separator: each unit is costed as `sep + unit`,
// summed to fill the budget, and the measured total of the assembled text corrects the budget for the
// next round. Units stay whole, so the result lands within about one unit of the target.
#include "eval/context-builder.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

#include "core/error.h"
#include "eval/text-util.h"

namespace gsa::eval {

token_counter whitespace_counter() {
  return [](std::string_view s) {
    return std::vector<int32_t>(split_ws(s).size(), 0);
  };
}

namespace {

struct selection {
  size_t full = 0;       // whole units 0..full-1
  std::string extra;     // one later whole unit that fits the budget left, or empty
  int64_t extra_cost = 0;
  int64_t estimate = 0;  // estimated filler tokens
};

// How far past the first unit that does not fit the builder looks for one that does.
constexpr size_t k_extra_lookahead = 64;

class builder {
 public:
  builder(const context_plan& plan, const token_counter& count) : plan_(plan), count_(count) {
    base_ = int64_t(count_("").size());
  }

  int64_t tokens(std::string_view s) { return std::max<int64_t>(0, int64_t(count_(s).size()) - base_); }

  // Cost of unit i, estimated as it appears after a separator. At least 1: filling a budget with units that
  // measure nothing (blank text under a word counter) would never end.
  int64_t unit_cost(size_t i) {
    while (costs_.size() <= i) {
      std::string u = plan_.unit(costs_.size());
      auto it = cache_.find(u);
      int64_t c = it != cache_.end() ? it->second : (cache_[u] = std::max<int64_t>(1, tokens(plan_.sep + u)));
      costs_.push_back(c);
      cum_.push_back(cum_.back() + c);
      units_.push_back(std::move(u));
    }
    return costs_[i];
  }

  selection select(int64_t budget) {
    selection s;
    while (true) {
      int64_t c = unit_cost(s.full);
      if (cum_[s.full] + c > budget) break;
      s.full++;
    }
    int64_t left = budget - cum_[s.full];
    // Units are never cut (a needle after half a sentence reads "green. The The pass key is"); the budget left
    // goes to the first of the next units that fits whole.
    if (plan_.allow_extra && left > 0)
      for (size_t k = s.full + 1; k <= s.full + k_extra_lookahead; k++)
        if (unit_cost(k) <= left) {
          s.extra = units_[k];
          s.extra_cost = costs_[k];
          break;
        }
    s.estimate = cum_[s.full] + s.extra_cost;
    return s;
  }

  built_context assemble(const selection& s) {
    size_t n_pieces = s.full + (s.extra.empty() ? 0 : 1);
    // Estimated filler tokens before each boundary b (b = 0..n_pieces).
    std::vector<double> before(n_pieces + 1, 0.0);
    for (size_t b = 1; b <= n_pieces; b++)
      before[b] = before[b - 1] + double(b - 1 < s.full ? costs_[b - 1] : s.extra_cost);
    std::vector<std::vector<size_t>> at(n_pieces + 1);
    for (size_t k = 0; k < plan_.needles.size(); k++) {
      double want = plan_.depths[k] * before[n_pieces];
      size_t best = 0;
      for (size_t b = 1; b <= n_pieces; b++)
        if (std::fabs(before[b] - want) < std::fabs(before[best] - want)) best = b;
      at[best].push_back(k);
    }
    built_context out;
    out.needle_offsets.assign(plan_.needles.size(), 0);
    out.context = plan_.head;
    size_t ordinal = 0;
    auto put = [&](const std::string& text, long needle) {
      ordinal++;
      std::string piece = plan_.decorate ? plan_.decorate(ordinal, text) : text;
      if (ordinal > 1) out.context += plan_.sep;
      if (needle >= 0) out.needle_offsets[size_t(needle)] = out.context.size() + piece.find(text);
      out.context += piece;
    };
    for (size_t b = 0; b <= n_pieces; b++) {
      for (size_t k : at[b]) put(plan_.needles[k], long(k));
      if (b < s.full) put(units_[b], -1);
      else if (b < n_pieces) put(s.extra, -1);
    }
    out.context += plan_.tail;
    out.tokens = tokens(out.context);
    return out;
  }

 private:
  const context_plan& plan_;
  const token_counter& count_;
  int64_t base_ = 0;
  std::vector<std::string> units_;
  std::vector<int64_t> costs_;
  std::vector<int64_t> cum_{0};
  std::unordered_map<std::string, int64_t> cache_;
};

}  // namespace

built_context build_context(const context_plan& plan, int64_t target_tokens, const token_counter& count,
                            std::string_view task) {
  GSA_ASSERT(plan.needles.size() == plan.depths.size());
  GSA_ASSERT(bool(plan.unit));
  if (target_tokens <= 0) fail("task {}: the length must be a positive number of tokens, got {}", task, target_tokens);
  builder b(plan, count);
  built_context fixed = b.assemble(selection{});
  if (fixed.tokens > target_tokens)
    fail("task {}: a length of {} tokens is too small: the instruction and needles alone take {} tokens; "
         "ask for at least {} tokens",
         task, target_tokens, fixed.tokens, fixed.tokens + std::max<int64_t>(16, fixed.tokens / 4));
  // Stop when within 0.5% below the target; otherwise keep the closest result not above it.
  int64_t tol = std::max<int64_t>(1, target_tokens / 200);
  int64_t budget = target_tokens - fixed.tokens;
  built_context best = fixed;
  built_context over;
  for (int round = 0; round < 8; round++) {
    selection sel = b.select(budget);
    built_context c = b.assemble(sel);
    int64_t measured = c.tokens;
    if (c.tokens <= target_tokens) {
      if (c.tokens > best.tokens) best = std::move(c);
      if (best.tokens >= target_tokens - tol) break;
    } else if (over.context.empty() || c.tokens < over.tokens) {
      over = std::move(c);
    }
    // Per-unit estimates are off by a roughly constant factor (a separator that merges with its
    // neighbour, a word split differently at a boundary): rescale the budget by measured / estimated
    // filler, then fall back to shifting it by the remaining difference.
    int64_t filler = measured - fixed.tokens;
    int64_t next = filler > 0 && sel.estimate > 0
                       ? int64_t(std::llround(double(sel.estimate) * double(target_tokens - fixed.tokens) /
                                              double(filler)))
                       : budget + (target_tokens - measured);
    if (next == budget) next = budget + (target_tokens - measured);
    if (next == budget) break;
    budget = next;
  }
  // Whole units (JSON pairs) may straddle the target; prefer the nearer side then.
  if (!over.context.empty() && over.tokens - target_tokens < target_tokens - best.tokens) return over;
  return best;
}

}  // namespace gsa::eval
