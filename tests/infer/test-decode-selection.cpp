// Decode selection, checked independently (issue 12). Session.DecodeEqualsOneForwardWithTheSameVisibility replays
// the session's own key lists, so a wrong selection would be replayed too. Here every decoded row's lists (per
// layer and KV head) are compared with lists built from gist/ alone: the visibility functor (gist/visibility.h)
// with the chunks that gist::select_chunks / gist::select_hierarchical choose from gist::score_units over that
// layer's q and k, for flat and hierarchical selection, fixed / adaptive / top-p k, union and group scoring; and
// the baselines' lists from their definitions, with Quest / MoBA page summaries computed from the keys themselves
// rather than read from the cache. The layer's q and k come from one forward pass over the session's stream that
// attends the recorded lists: layer l's check uses q and k computed with the lists of layers < l, which the
// earlier checks verified. (H2O is left out: its kept set follows accumulated attention weights.)
#include <algorithm>
#include <limits>

#include <fmt/format.h>

#include "gist/select.h"
#include "gist/stream.h"
#include "gist/visibility.h"
#include "infer/generate.h"
#include "infer/session.h"
#include "model/gsa-plans.h"
#include "session-replay.h"
#include "test-models.h"
#include "test-util.h"

namespace gsa::infer {
namespace {

constexpr int kV = test::tiny_vocab;

struct counts {
  int lists = 0;       // (row, layer, KV head) lists compared
  int selections = 0;  // rows x layers that selected chunks or pages from scores
  int unfolding = 0;   // lists that unfolded at least one chunk or page beyond the minimum
  int mismatches = 0;
  std::string first;
};

std::vector<int32_t> top_pages(const std::vector<float>& s, int n) {  // top n, ties -> lower index, ascending
  std::vector<int32_t> idx(s.size());
  for (size_t i = 0; i < idx.size(); i++) idx[i] = int32_t(i);
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return s[a] > s[b]; });
  idx.resize(size_t(std::clamp(n, 0, int(s.size()))));
  std::sort(idx.begin(), idx.end());
  return idx;
}

// The expected lists (Hkv) of row pos in layer `layer`, from q (T, Hq, D) and k (T, Hkv, D) of that layer.
std::vector<std::vector<int32_t>> expected_lists(const llama_model& m, const session& s, method meth,
                                                 const gist::gsa_config* cfg, int layer, int pos, const float* q,
                                                 const float* k, counts& n) {
  const int Hq = int(m.config.num_attention_heads), Hkv = int(m.config.num_key_value_heads);
  const int D = int(m.config.head_dim), G = Hq / Hkv, T = s.stream().size();
  const float* qr = q + size_t(pos) * Hq * D;
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(Hkv));
  auto all_upto = [&](std::vector<int32_t>& v, int32_t a, int32_t b) {
    for (int32_t p = a; p < b; p++) v.push_back(p);
  };
  switch (meth) {
    case method::full:
      for (auto& v : out) all_upto(v, 0, pos + 1);
      return out;
    case method::streaming: {  // the first `sink` tokens and the most recent budget - sink ones
      const int64_t B = s.budget(), sink = std::min<int64_t>(cfg ? cfg->sink : 4, B);
      for (auto& v : out)
        for (int32_t p = 0; p <= pos; p++)
          if (p < sink || p > pos - (B - sink)) v.push_back(p);
      return out;
    }
    case method::quest:
    case method::moba: {  // page summaries from the keys themselves; the row's own page always
      const int P = s.unit_tokens(), cur = pos / P;
      const int64_t own = pos - int64_t(cur) * P + 1;
      const int n_pages = int(std::max<int64_t>(0, s.budget() - own) / P);
      for (int h = 0; h < Hkv; h++) {
        if (n_pages >= cur) {
          all_upto(out[h], 0, pos + 1);
          continue;
        }
        std::vector<float> sc(size_t(cur), -std::numeric_limits<float>::infinity());
        for (int p = 0; p < cur; p++)
          for (int i = 0; i < G; i++) {
            const float* qh = qr + size_t(h * G + i) * D;
            float v = 0;
            for (int d = 0; d < D; d++) {
              float mn = std::numeric_limits<float>::infinity(), mx = -mn, mean = 0;
              for (int t = p * P; t < (p + 1) * P; t++) {
                const float x = k[(size_t(t) * Hkv + h) * D + d];
                mn = std::min(mn, x);
                mx = std::max(mx, x);
                mean += x / float(P);
              }
              v += meth == method::quest ? std::max(qh[d] * mn, qh[d] * mx) : qh[d] * mean;
            }
            sc[size_t(p)] = std::max(sc[size_t(p)], v);
          }
        n.selections += h == 0;
        const auto sel = top_pages(sc, n_pages);
        n.unfolding += !sel.empty();
        for (int32_t p : sel) all_upto(out[h], p * P, (p + 1) * P);
        all_upto(out[h], cur * P, pos + 1);
      }
      return out;
    }
    default: break;
  }
  // gist, gsa, hgsa: the gist mask plus the chunks selected from the gist scores.
  const gist::stream& str = s.stream();
  const gist::visibility vis(str, *cfg);
  const int lev = str.level[size_t(pos)], mq = str.chunk[size_t(pos)], g = cfg->gists_per_chunk;
  const bool dense = std::count(cfg->dense_layers.begin(), cfg->dense_layers.end(), layer) > 0;
  const int n_cand = meth == method::gist || dense || lev > 0
                         ? 0
                         : gist::candidate_count(mq, gist::complete_chunk_count(str), cfg->local_chunks);
  std::vector<std::vector<int32_t>> sel(static_cast<size_t>(Hkv));
  if (n_cand > 0) {
    n.selections++;
    const int64_t raw_before = int64_t(mq) * cfg->chunk[0];
    if (meth == method::gsa) {
      std::vector<int32_t> first(static_cast<size_t>(n_cand));
      for (int c = 0; c < n_cand; c++) first[size_t(c)] = str.chunk_gist_begin[size_t(c)];
      std::vector<float> sc(size_t(Hq) * n_cand);
      gist::score_units(sc.data(), qr, 1, Hq, k, T, Hkv, D, first.data(), n_cand, g);
      sel = gist::select_chunks(sc.data(), Hq, Hkv, n_cand, raw_before, *cfg);
    } else {
      gist::unit_scorer scorer = [&](int lv, int h, const std::vector<int32_t>& units, float* o) {
        std::vector<int32_t> first(units.size());
        for (size_t i = 0; i < units.size(); i++) first[i] = gist::unit_gist_position(str, *cfg, lv, units[i]);
        std::vector<float> sc(size_t(Hq) * units.size());
        gist::score_units(sc.data(), qr, 1, Hq, k, T, Hkv, D, first.data(), int(units.size()), g);
        std::copy(sc.begin() + size_t(h) * G * units.size(), sc.begin() + size_t(h + 1) * G * units.size(), o);
      };
      sel = gist::select_hierarchical(n_cand, Hq, Hkv, gist::hierarchy_k(*cfg, raw_before, G, n_cand), *cfg,
                                      scorer)
                .chunks;
    }
  }
  for (int h = 0; h < Hkv; h++) {
    n.unfolding += !sel[size_t(h)].empty();
    for (int32_t p = 0; p <= pos; p++)
      if (vis(pos, p, sel[size_t(h)])) out[size_t(h)].push_back(p);
  }
  return out;
}

// Runs a recording session (prefill, a question, greedy decoding) and checks every decoded row's lists.
counts check(const llama_model& m, session_options o) {
  o.record = true;
  session s(m, o);
  s.prefill(test::tiny_tokens(45, 1));
  s.append(test::tiny_tokens(6, 2));
  generate_options go;
  go.max_tokens = 24;
  generate({&s}, go);
  std::optional<gist::gsa_config> cfg;
  if (!m.config.gsa.is_null()) cfg = gist::gsa_config_from_json(m.config.gsa);

  const int Hkv = int(m.config.num_key_value_heads);
  std::vector<cpu::attn_plan> plans = test_replay::recorded_plans(m, s);
  counts n;
  plan_provider checker = [&](int layer, const layer_qk& qk) {
    for (const row_record& r : s.records()) {
      const auto want = expected_lists(m, s, o.meth, cfg ? &*cfg : nullptr, layer, r.pos, qk.host_q(),
                                       qk.host_k(), n);
      for (int h = 0; h < Hkv; h++) {
        n.lists++;
        if (r.keys[size_t(layer) * Hkv + h] != want[size_t(h)] && n.mismatches++ == 0)
          n.first = fmt::format("row {} layer {} head {}: session attends {} keys, the reference {}", r.pos, layer,
                                h, r.keys[size_t(layer) * Hkv + h].size(), want[size_t(h)].size());
      }
    }
    return plans[size_t(layer)];
  };
  forward_state st;
  forward(m, st, s.stream().ids, s.stream().pos, {}, &checker);
  return n;
}

llama_model model_with(std::vector<int> chunk, gist::select_rule rule, int topk = 2, bool group = false,
                       bool gists_all = false, float top_p = 0.6f) {
  model_config c = test::tiny_config(kV, 3, 512);
  gist::gsa_config g = test::tiny_gsa(kV, chunk);
  g.select = rule;
  g.topk = topk;
  g.top_p = top_p;
  g.group_scoring = group;
  g.gists_all = gists_all;
  c.gsa = gist::gsa_config_to_json(g);
  llama_model m(c);
  m.init_random(7, 0.3f);
  return m;
}

TEST(DecodeSelection, GistMethodsEqualAnIndependentConstruction) {
  using gist::select_rule;
  struct c {
    const char* name;
    method meth;
    llama_model m;
  };
  const c cases[] = {
      {"gsa fixed union", method::gsa, model_with({4}, select_rule::fixed, 2)},
      {"gsa adaptive union", method::gsa, model_with({4}, select_rule::adaptive)},
      {"gsa top-p union", method::gsa, model_with({4}, select_rule::top_p, 2, false, false, 0.6f)},
      {"gsa fixed group", method::gsa, model_with({4}, select_rule::fixed, 2, true)},
      {"gsa top-p group", method::gsa, model_with({4}, select_rule::top_p, 2, true, false, 0.5f)},
      {"gsa adaptive gists_all", method::gsa, model_with({4}, select_rule::adaptive, 2, false, true)},
      {"gsa over two levels", method::gsa, model_with({3, 2}, select_rule::fixed, 2)},
      {"hgsa fixed", method::hgsa, model_with({3, 2}, select_rule::fixed, 1)},
      {"hgsa adaptive", method::hgsa, model_with({3, 2}, select_rule::adaptive)},
      {"hgsa top-p group", method::hgsa, model_with({3, 2}, select_rule::top_p, 2, true, false, 0.6f)},
      {"gist", method::gist, model_with({4}, select_rule::fixed, 2)},
  };
  for (const auto& cs : cases) {
    SCOPED_TRACE(cs.name);
    session_options o;
    o.meth = cs.meth;
    const counts n = check(cs.m, o);
    EXPECT_EQ(n.mismatches, 0) << n.first << " (" << n.mismatches << " of " << n.lists << " lists differ)";
    EXPECT_GE(n.lists, 100);
    if (cs.meth != method::gist) {
      EXPECT_GE(n.selections, 20) << "too few rows selected: the check would be weak";
      EXPECT_GE(n.unfolding, 20);
    }
  }
}

TEST(DecodeSelection, BaselinesEqualTheirDefinitions) {
  for (method meth : {method::full, method::streaming, method::quest, method::moba}) {
    SCOPED_TRACE(method_name(meth));
    llama_model m = test::tiny_model({4});
    session_options o;
    o.meth = meth;
    o.budget = meth == method::full ? -1 : 13;
    o.page_size = 4;
    const counts n = check(m, o);
    EXPECT_EQ(n.mismatches, 0) << n.first << " (" << n.mismatches << " of " << n.lists << " lists differ)";
    EXPECT_GE(n.lists, 100);
    if (meth == method::quest || meth == method::moba) {
      EXPECT_GE(n.unfolding, 20);
    }
  }
}

}  // namespace
}  // namespace gsa::infer
