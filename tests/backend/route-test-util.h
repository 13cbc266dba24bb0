// A routing-loss spec (backend/route-loss.h) over a synthetic stream for the host and CUDA tests: chunks of c raw
// tokens, each followed by its g gists (chunk u's raw keys at [u (c + g), u (c + g) + c)); candidates: units of
// `span` chunks, whose gists are taken to be those after the unit's last chunk; rows: every row_stride-th raw row of
// chunks 2 span.., with the whole units before their chunk as candidates; chunk 0 loses `sink` raw keys to the sink.
#pragma once
#include "backend/route-loss.h"

namespace gsa::test {

inline route_spec synthetic_route_spec(int c, int g, int chunks, int sink, int row_stride, int span = 1) {
  route_spec s;
  s.g = g;
  s.span = span;
  for (int u = 2 * span; u < chunks; u++)
    for (int i = 0; i < c; i += row_stride) {
      s.rows.push_back(u * (c + g) + i);
      s.n_cand.push_back(u / span);
    }
  const int units = (chunks - 1) / span;
  for (int u = 0; u < units * span; u++) {
    s.raw_begin.push_back(u * (c + g) + (u == 0 ? sink : 0));
    s.raw_end.push_back(u * (c + g) + c);
  }
  for (int v = 0; v < units; v++) s.gist_begin.push_back(((v + 1) * span - 1) * (c + g) + c);
  return s;
}

}  // namespace gsa::test
