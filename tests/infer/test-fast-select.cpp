// The fast path (gist/fast-select.h: decoding, training selection) against its gist/ reference: tiled scores equal gist::score_units
// bit for bit; top-k and hierarchical selection equal gist::select_top / select_hierarchical on random scores
// with many ties, NaN and -inf; a session's incrementally kept gist-mask list equals gist::compress_keys.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "gist/plan.h"
#include "gist/fast-select.h"
#include "gist/select.h"
#include "gist/stream.h"
#include "infer/generate.h"
#include "infer/session.h"
#include "kv/kv-cache.h"
#include "test-models.h"
#include "test-util.h"

namespace gsa::infer {
namespace {

using gist::score_unit_list;
using gist::score_unit_range;
using gist::select_hierarchical_fast;
using gist::select_top_fast;

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; }

TEST(FastSelect, TiledScoresEqualReferenceBitwise) {
  for (int D : {8, 64}) {
    for (int g : {1, 2, 3}) {
      SCOPED_TRACE(testing::Message() << "D " << D << " g " << g);
      const int Hkv = 2, Hq = 8, G = Hq / Hkv, n_units = 37;  // 37 g gists: the last tile is partial
      kv::cache_layout lay;
      lay.n_layers = 1, lay.n_kv_heads = Hkv, lay.head_dim = D, lay.gist_levels = 1;
      kv::kv_cache cache(lay);
      rng r(uint64_t(D * 10 + g));
      for (int i = 0; i < n_units * g; i++) {
        auto k = test::randn(size_t(Hkv) * D, r), v = test::randn(size_t(Hkv) * D, r);
        cache.append_gist(0, 0, k.data(), v.data());
      }
      auto q = test::randn(size_t(Hq) * D, r);
      std::vector<int32_t> begin(n_units);
      for (int u = 0; u < n_units; u++) begin[u] = u * g;
      std::vector<float> ref(size_t(Hq) * n_units);
      gist::score_units(ref.data(), q.data(), 1, Hq, cache.gist_keys(0, 0), cache.gist_count(0, 0), Hkv, D,
                        begin.data(), n_units, g);
      for (auto [u0, u1] : {std::pair{0, n_units}, std::pair{5, 6}, std::pair{7, 30}, std::pair{20, n_units}}) {
        std::vector<float> got(size_t(Hq) * (u1 - u0));
        for (int h = 0; h < Hkv; h++)
          score_unit_range(got.data() + size_t(h) * G * (u1 - u0), size_t(u1 - u0), q.data() + size_t(h) * G * D, G,
                           D, cache.gist_key_tiles(0, 0, h), g, u0, u1);
        for (int hq = 0; hq < Hq; hq++)
          for (int u = u0; u < u1; u++)
            ASSERT_TRUE(same_bits(got[size_t(hq) * (u1 - u0) + u - u0], ref[size_t(hq) * n_units + u]))
                << "head " << hq << " unit " << u << ": " << got[size_t(hq) * (u1 - u0) + u - u0] << " vs "
                << ref[size_t(hq) * n_units + u];
      }
      const std::vector<int32_t> units = {0, 1, 2, 9, 15, 16, 17, 18, 36};
      for (int h = 0; h < Hkv; h++) {
        std::vector<float> got(size_t(G) * units.size());
        score_unit_list(got.data(), q.data() + size_t(h) * G * D, G, D, cache.gist_key_tiles(0, 0, h), g, units);
        for (int i = 0; i < G; i++)
          for (size_t j = 0; j < units.size(); j++)
            ASSERT_TRUE(same_bits(got[i * units.size() + j], ref[size_t(h * G + i) * n_units + units[j]]));
      }
    }
  }
}

// Scores from a few values so that ties are everywhere; some NaN and -inf.
std::vector<float> tied_scores(size_t n, rng& r) {
  std::vector<float> s(n);
  for (auto& x : s) {
    const uint64_t v = r.below(9);
    x = v == 0 ? NAN : v == 1 ? -INFINITY : float(v % 4);
  }
  return s;
}

TEST(FastSelect, TopKEqualsReferenceWithTies) {
  rng r(3);
  const int Hq = 8, Hkv = 2;
  for (int n : {1, 2, 5, 17, 64, 65, 300}) {
    for (int k : {0, 1, 3, 63, 64, 65, 100, n - 1, n, n + 3}) {
      for (int grouped = 0; grouped < 2; grouped++) {
        for (int smooth = 0; smooth < 2; smooth++) {
          SCOPED_TRACE(testing::Message() << "n " << n << " k " << k << " group " << grouped << " smooth " << smooth);
          gist::gsa_config cfg;
          cfg.select = gist::select_rule::fixed;
          cfg.group_scoring = grouped;
          auto s = smooth ? test::randn(size_t(Hq) * n, r) : tied_scores(size_t(Hq) * n, r);
          std::vector<std::vector<int32_t>> got;
          select_top_fast(s.data(), Hq, Hkv, n, k, cfg, got);
          EXPECT_EQ(got, gist::select_top(s.data(), Hq, Hkv, n, k, cfg));
        }
      }
    }
  }
  // All equal: the lowest indices win.
  std::vector<float> flat(size_t(Hq) * 10, 1.0f);
  std::vector<std::vector<int32_t>> got;
  gist::gsa_config cfg;
  select_top_fast(flat.data(), Hq, Hkv, 10, 3, cfg, got);
  EXPECT_EQ(got[0], (std::vector<int32_t>{0, 1, 2}));
  // top_p goes to the reference.
  cfg.select = gist::select_rule::top_p;
  cfg.top_p = 0.5f;
  auto s = test::randn(size_t(Hq) * 40, r);
  select_top_fast(s.data(), Hq, Hkv, 40, 40, cfg, got);
  EXPECT_EQ(got, gist::select_top(s.data(), Hq, Hkv, 40, 40, cfg));
}

TEST(FastSelect, HierarchicalEqualsReference) {
  rng r(5);
  const int Hq = 8, Hkv = 2, G = Hq / Hkv;
  for (auto chunk : {std::vector<int>{16, 4}, std::vector<int>{4, 3, 2}, std::vector<int>{8}}) {
    gist::gsa_config cfg;
    cfg.chunk = chunk;
    for (int n_cand : {0, 1, 5, 13, 50, 200}) {
      for (int k : {0, 1, 2, 4, 70}) {
        for (int grouped = 0; grouped < 2; grouped++) {
          SCOPED_TRACE(testing::Message() << "levels " << chunk.size() << " n " << n_cand << " k " << k);
          cfg.group_scoring = grouped;
          // A fixed random score per (level, KV head, unit, query head), tied often.
          std::vector<std::vector<float>> table(cfg.levels());
          for (auto& t : table) t = tied_scores(size_t(Hkv) * 256 * G, r);
          auto scorer = [&](int lv, int h, const std::vector<int32_t>& units, float* out) {
            for (int i = 0; i < G; i++)
              for (size_t j = 0; j < units.size(); j++)
                out[i * units.size() + j] = table[lv][(size_t(h) * 256 + units[j]) * G + i];
          };
          std::vector<int> ks(cfg.levels(), k);
          auto got = select_hierarchical_fast(n_cand, Hq, Hkv, ks, cfg, scorer);
          auto want = gist::select_hierarchical(n_cand, Hq, Hkv, ks, cfg, scorer);
          EXPECT_EQ(got.chunks, want.chunks);
          EXPECT_EQ(got.keys_scored, want.keys_scored);
        }
      }
    }
  }
}

// The session extends its gist-mask list row by row inside a chunk; every decoded row's list must still be
// gist::compress_keys of the stream (the final stream: later rows lie past the row and are cut).
TEST(FastSelect, IncrementalGistMaskEqualsCompressKeys) {
  for (auto chunk : {std::vector<int>{4}, std::vector<int>{3, 2}}) {
    model_config c = test::tiny_config(64);
    gist::gsa_config g;
    g.chunk = chunk;
    for (size_t l = 0; l < chunk.size(); l++) g.gist_token_ids.push_back(63 - int(l));
    g.local_chunks = 1;
    g.sink = 2;
    c.gsa = gist::gsa_config_to_json(g);
    llama_model m(c);
    m.init_random(11, 0.3f);
    session_options o;
    o.meth = method::gist;
    o.record = true;
    session s(m, o);
    rng r(9);
    std::vector<int32_t> ctx(21), q(30);
    for (auto& x : ctx) x = int32_t(r.below(60));
    for (auto& x : q) x = int32_t(r.below(60));
    s.prefill(ctx);
    s.append(q);
    run_pending({&s});
    ASSERT_GE(s.records().size(), 30u);
    std::vector<int32_t> want;
    for (const auto& rec : s.records()) {
      const int pos = rec.pos;
      gist::compress_keys(want, s.stream(), g, s.stream().chunk[pos], s.stream().level[pos], pos);
      for (const auto& k : rec.keys) ASSERT_EQ(k, want) << "row " << pos;
    }
  }
}

}  // namespace
}  // namespace gsa::infer
