// Who sees whom (DESIGN 1.2, 1.4): the one definition of the gist mask over stream positions. Plans
// (plan.h) are built directly for speed and are tested against this functor; nothing else should re-derive
// the rules.
//
// Notation: m(i) = level-0 chunk of stream position i (a gist belongs to the chunk before it), l(i) = level
// (-1 raw), P_l = level-0 chunks per level-l unit (stream.h), L = number of levels, "top" = level L-1.
// For a level-j gist key k (j < top), its group is its level-(j+1) unit p(k) = m(k) / P_{j+1}; the query's
// current level-(j+1) unit is p(q) = m(q) / P_{j+1}.
//
// gist_rule(q, k) for a gist key k of level j:  j == top  or  p(k) in {p(q) - 1, p(q)}.
//   The top level is visible to all later tokens; a lower level is visible inside the query's current
//   higher-level group AND the previous one. Choice (the design leaves it open for raw queries): keeping the
//   previous group avoids a blind spot at group starts, where otherwise the first chunk of a level-1 group
//   would see the whole previous group through its g level-1 gists only; with it every query keeps between
//   c_1 and 2 c_1 - 1 chunks of level-0 resolution behind it. It is also exactly the rule DESIGN 1.4 gives a
//   level-l gist for its level-(l-1) keys, so one rule serves all queries.
//
// visible(q, k) is false for k > q. For k <= q:
// * raw query or level-0 gist query (they share their chunk's view, as in 1.2):
//     raw key:  m(k) == m(q) (own chunk), or m(q) - local_chunks <= m(k) < m(q), or raw_index(k) < sink;
//     gist key: gist_rule(q, k) (own chunk's earlier gists included: p(k) == p(q)).
// * level-l gist query, l >= 1 (a gist of gists, DESIGN 1.4): no raw key, no gist of level < l-1;
//     gist key of level >= l-1: gist_rule(q, k). So it sees the level-(l-1) gists of its own group (its unit)
//     and of the previous one, its own earlier siblings, earlier level-l gists of the current and previous
//     level-(l+1) group, and higher levels by the same rule.
// With one level (L = 1) every gist is top-level and this is exactly DESIGN 1.2.
//
// Unfolding (DESIGN 1.3): a query that unfolds a set S of chunks additionally sees (causally) the raw tokens
// and level-0 gists of every chunk in S, and with gists_all every gist of every level.
#pragma once
#include <cstdint>
#include <vector>

#include "gist/config.h"
#include "gist/stream.h"

namespace gsa::gist {

class visibility {
 public:
  // Keeps references: s and cfg must outlive the functor.
  visibility(const stream& s, const gsa_config& cfg);

  // Gist mask (compress mode, and prefill of context).
  bool operator()(int q, int k) const;
  // Unfolding query: `unfolded` = sorted chunk ids the query unfolds.
  bool operator()(int q, int k, const std::vector<int32_t>& unfolded) const;

  // The gist rule alone for a gist key of level j in chunk mk, seen from a query in chunk mq.
  bool gist_rule(int mq, int mk, int j) const;

 private:
  const stream& s_;
  const gsa_config& cfg_;
  std::vector<int> span_;  // P_l
};

}  // namespace gsa::gist
