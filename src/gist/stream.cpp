// build_stream and the unit helpers: see stream.h for the layout this produces.
#include "gist/stream.h"

#include <algorithm>

#include "core/error.h"

namespace gsa::gist {

int chunks_per_unit(const gsa_config& cfg, int level) {
  GSA_ASSERT(level >= 0 && level < cfg.levels(), "level {} of {}", level, cfg.levels());
  int p = 1;
  for (int l = 1; l <= level; l++) p *= cfg.chunk[l];
  return p;
}

int complete_chunk_count(const stream& s) {
  int m = s.n_chunks();
  while (m > 0 && s.chunk_gist_begin[m - 1] < 0) m--;
  return m;
}

int unit_count(const stream& s, const gsa_config& cfg, int level) {
  return complete_chunk_count(s) / chunks_per_unit(cfg, level);
}

int unit_gist_position(const stream& s, const gsa_config& cfg, int level, int unit) {
  if (unit < 0 || unit >= unit_count(s, cfg, level)) return -1;
  return unit_gist_position(s.chunk_gist_begin.data(), cfg, level, unit);
}

int unit_gist_position(const int32_t* chunk_gist_begin, const gsa_config& cfg, int level, int unit) {
  const int64_t last = int64_t(unit + 1) * chunks_per_unit(cfg, level) - 1;
  return chunk_gist_begin[last] + level * cfg.gists_per_chunk;
}

std::vector<std::vector<int32_t>> unit_gist_tables(const stream& s, const gsa_config& cfg) {
  std::vector<std::vector<int32_t>> t(size_t(cfg.levels()));
  for (int l = 0; l < cfg.levels(); l++) {
    t[size_t(l)].resize(size_t(unit_count(s, cfg, l)));
    for (int u = 0; u < int(t[size_t(l)].size()); u++) t[size_t(l)][size_t(u)] = unit_gist_position(s, cfg, l, u);
  }
  return t;
}

stream build_stream(const int32_t* raw, int n, const gsa_config& cfg) {
  cfg.validate();
  if (n < 0) fail("build_stream: negative token count {}", n);
  const int c0 = cfg.chunk[0], g = cfg.gists_per_chunk, L = cfg.levels();
  std::vector<int> span(L);
  for (int l = 0; l < L; l++) span[l] = chunks_per_unit(cfg, l);

  const int n_chunks = (n + c0 - 1) / c0;
  // Upper bound on gists: g per level per unit; exact count is cheap to reserve generously.
  int64_t n_gists = 0;
  for (int l = 0; l < L; l++) n_gists += int64_t(n / c0 / span[l]) * g;
  if (int64_t(n) + n_gists > INT32_MAX) fail("build_stream: {} raw tokens make a stream too long for int32", n);
  const int total = int(n + n_gists);

  stream s;
  s.ids.reserve(total);
  s.pos.reserve(total);
  s.level.reserve(total);
  s.chunk.reserve(total);
  s.raw_index.reserve(total);
  s.chunk_raw_begin.resize(n_chunks);
  s.chunk_raw_end.resize(n_chunks);
  s.chunk_gist_begin.assign(n_chunks, -1);

  auto push = [&](int32_t id, int32_t pos, int8_t lev, int32_t m, int32_t ri) {
    s.ids.push_back(id);
    s.pos.push_back(pos);
    s.level.push_back(lev);
    s.chunk.push_back(m);
    s.raw_index.push_back(ri);
  };
  for (int m = 0; m < n_chunks; m++) {
    const int t0 = m * c0, t1 = std::min(n, t0 + c0);
    s.chunk_raw_begin[m] = s.size();
    for (int t = t0; t < t1; t++) push(raw[t], t, -1, m, t);
    s.chunk_raw_end[m] = s.size();
    if (t1 - t0 < c0) break;  // incomplete: no gist
    s.chunk_gist_begin[m] = s.size();
    for (int l = 0; l < L && (m + 1) % span[l] == 0; l++)
      for (int r = 0; r < g; r++) push(cfg.gist_token_ids[l], t1 - 1, int8_t(l), m, -1);
  }
  GSA_ASSERT(s.size() == total, "stream size {} != {}", s.size(), total);

  s.labels.assign(total, ignore_label);
  for (int i = 0; i + 1 < total; i++)
    if (s.level[i + 1] < 0) s.labels[i] = s.ids[i + 1];
  return s;
}

}  // namespace gsa::gist
