// Plans at 128k raw tokens (about 139k stream rows): a plan names chunks and gist ranges, so its memory is
// O(T k / c + T / c). A compress plan (c = 16, g = 1, and the two-level c = 16, 4) and a per-chunk unfold plan stay
// under 64 MiB (a list of key positions would need O(T^2 / c): several GiB), and their key sets equal the
// visibility functor on sampled rows.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <numeric>

#include "core/rng.h"
#include "gist/plan.h"
#include "gist/visibility.h"

using namespace gsa::gist;

namespace {

constexpr int kRaw = 131072;
constexpr size_t kMaxBytes = size_t(64) << 20;

gsa_config make_cfg(std::vector<int> chunk) {
  gsa_config c;
  c.chunk = std::move(chunk);
  for (int l = 0; l < c.levels(); l++) c.gist_token_ids.push_back(500 + l);
  return c;
}

stream make_stream(int n, const gsa_config& cfg) {
  std::vector<int32_t> raw(n);
  std::iota(raw.begin(), raw.end(), 0);
  return build_stream(raw.data(), n, cfg);
}

// Rows to check: the first and last rows, the rows around a few chunk boundaries, and random ones.
std::vector<int> sample_rows(const stream& s, gsa::rng& r) {
  std::vector<int> rows = {0, 1, s.size() - 1, s.size() / 2};
  for (int m : {1, 2, 15, 16, 17, 4095, s.n_chunks() - 1}) {
    if (m >= s.n_chunks()) continue;
    rows.push_back(s.chunk_raw_begin[m]);
    if (s.chunk_gist_begin[m] >= 0) rows.push_back(s.chunk_gist_begin[m]);
    if (s.chunk_gist_begin[m] >= 0 && s.chunk_gist_begin[m] + 1 < s.size()) rows.push_back(s.chunk_gist_begin[m] + 1);
  }
  for (int i = 0; i < 40; i++) rows.push_back(int(r.below(uint64_t(s.size()))));
  return rows;
}

// For row q of plan p: { k in list(block(q), h) : k <= q } == { k : want(k) }, every k <= q.
template <typename Want>
void check_row(const gsa::cpu::attn_plan& p, int q, int h, Want want) {
  const int b = int(std::upper_bound(p.block_q.begin(), p.block_q.end(), q) - p.block_q.begin()) - 1;
  ASSERT_TRUE(b >= 0 && b < p.n_blocks() && p.block_q[b] <= q && q < p.block_q[b + 1]);
  std::vector<uint8_t> listed(size_t(q) + 1, 0);
  p.for_each_key(b, h, [&](int32_t k) {
    if (k <= q) listed[size_t(k)] = 1;
  });
  for (int k = 0; k <= q; k++)
    if (bool(listed[size_t(k)]) != want(k)) {
      ADD_FAILURE() << "row " << q << " head " << h << " key " << k << ": listed " << int(listed[size_t(k)]);
      return;
    }
}

}  // namespace

TEST(GistPlanScale, CompressAt128kIsSmallAndExact) {
  for (auto chunk : {std::vector<int>{16}, std::vector<int>{16, 4}}) {
    gsa_config cfg = make_cfg(chunk);
    SCOPED_TRACE(chunk.size() == 1 ? "c = 16" : "c = 16, 4");
    stream s = make_stream(kRaw, cfg);
    ASSERT_GE(s.size(), 128 * 1024);
    auto p = plan_compress(s, cfg);
    std::printf("compress plan, %d stream rows, %zu levels: %zu bytes (%.2f MiB), %zu segments\n", s.size(),
                chunk.size(), p.bytes(), double(p.bytes()) / (1 << 20), p.segs.size());
    EXPECT_LT(p.bytes(), kMaxBytes);
    // O(T / c) segments: at most 3 + levels per block.
    EXPECT_LE(p.segs.size(), size_t(p.n_blocks()) * (3 + chunk.size()));
    ASSERT_NO_THROW(gsa::cpu::validate_plan(p, s.size(), s.size(), 0, 1));
    visibility vis(s, cfg);
    gsa::rng r(7);
    for (int q : sample_rows(s, r)) check_row(p, q, 0, [&](int k) { return vis(q, k); });
  }
}

TEST(GistPlanScale, PerChunkUnfoldAt128kIsSmallAndExact) {
  for (auto chunk : {std::vector<int>{16}, std::vector<int>{16, 4}}) {
    gsa_config cfg = make_cfg(chunk);
    SCOPED_TRACE(chunk.size() == 1 ? "c = 16" : "c = 16, 4");
    stream s = make_stream(kRaw, cfg);
    auto base = plan_compress(s, cfg);
    const int H = 2, k = 8, nb = base.n_blocks();
    gsa::rng r(8);
    std::vector<std::vector<int32_t>> sel(size_t(nb) * H);
    for (int b = 0; b < nb; b++) {
      if (s.level[base.block_q[b]] > 0) continue;  // gist-of-gist blocks do not select (as in training)
      const int m = s.chunk[base.block_q[b]] - cfg.local_chunks;  // candidates: chunks before the local window
      for (int h = 0; h < H && m > 0; h++) {
        auto& v = sel[size_t(b) * H + h];
        for (int i = 0; i < k; i++) v.push_back(int32_t(r.below(uint64_t(m))));
        std::sort(v.begin(), v.end());
        v.erase(std::unique(v.begin(), v.end()), v.end());
      }
    }
    auto p = plan_unfold(s, cfg, base, sel, H);
    std::printf("unfold plan, %zu levels (k = %d per block and KV head, %d KV heads): %zu bytes (%.2f MiB)\n",
                chunk.size(), k, H, p.bytes(), double(p.bytes()) / (1 << 20));
    EXPECT_LT(p.bytes(), kMaxBytes);
    // O(T k / c): per list the compress segments plus one range per unfolded chunk (raw tokens and, when no gist
    // segment holds it, the chunk's gist right after them).
    EXPECT_LE(p.segs.size(), size_t(nb) * H * (3 + chunk.size() + k));
    ASSERT_NO_THROW(gsa::cpu::validate_plan(p, s.size(), s.size(), 0, H));
    visibility vis(s, cfg);
    for (int q : sample_rows(s, r)) {
      const int b = int(std::upper_bound(p.block_q.begin(), p.block_q.end(), q) - p.block_q.begin()) - 1;
      for (int h = 0; h < H; h++)
        check_row(p, q, h, [&](int key) { return vis(q, key, sel[size_t(b) * H + h]); });
    }
  }
}
