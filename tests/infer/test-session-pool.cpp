// The device path of a session (K/V rows in pools on the model's backend, kv-cache.h pool mode) run through the
// CPU backend: the same code a GPU session runs, minus the CUDA kernels. It must give the host engine's results
// bit for bit (the CPU backend's decode attention is the host engine's kernel): same key lists, same logits,
// same tokens, alone and batched, for every method (h2o's accumulated weights come from the backend's decode
// attention too).
#include <algorithm>
#include <cmath>
#include <string>

#include "backend/backend.h"
#include "core/error.h"
#include "core/rng.h"
#include "infer/generate.h"
#include "infer/session.h"
#include "infer/session-runs.h"
#include "test-models.h"
#include "test-util.h"

namespace gsa::infer {
namespace {

using test::tiny_model;

// f throws a gsa::error whose message contains what.
using test_runs::expect_error;
using test_runs::expect_same;
using test_runs::run;

// The same recorded run on the host cache, then in pools on the CPU backend.
std::pair<std::unique_ptr<session>, std::unique_ptr<session>> host_and_pool(const llama_model& m, session_options o,
                                                                            int ctx, int question, int gen) {
  o.kv_pool = false;
  auto host = run(m, o, ctx, question, gen);
  o.kv_pool = true;
  return {std::move(host), run(m, o, ctx, question, gen)};
}

// The pool-mode cache itself, on the CPU backend: every appended row reads back at pool_row (K) and pool_row + P
// (V) after the pool has grown several times, the gist tiles equal the host cache's, bytes count the pool.
TEST(SessionPool, PoolRowsAndTilesReadBack) {
  kv::cache_layout lay;
  lay.n_layers = 2;
  lay.n_kv_heads = 2;
  lay.head_dim = 4;
  lay.page_size = 3;
  lay.gist_levels = 2;
  kv::kv_cache host(lay);
  lay.rows_on = &cpu_backend();
  kv::kv_cache pool(lay);
  rng r(5);
  const int row = 8;
  std::vector<kv::kv_addr> at;
  int raw = 0, gists[2] = {0, 0};
  for (int i = 0; i < 70; i++) {
    const int level = i % 5 == 4 ? (i % 10 == 9 ? 1 : 0) : -1;
    at.push_back({int8_t(level), level < 0 ? raw++ : gists[level]++});
  }
  for (int l = 0; l < 2; l++) {
    Tensor k({int64_t(at.size()), 2, 4}), v({int64_t(at.size()), 2, 4});
    for (int64_t i = 0; i < k.numel(); i++) k.f32()[i] = r.normal(), v.f32()[i] = r.normal();
    // In pieces of 1..9 rows, so the pool grows between appends.
    for (size_t i0 = 0, n = 1; i0 < at.size(); i0 += n, n = n % 9 + 1) {
      const size_t i1 = std::min(at.size(), i0 + n);
      pool.append_rows(l, std::vector<kv::kv_addr>(at.begin() + i0, at.begin() + i1), k.slice_rows(i0, i1),
                       v.slice_rows(i0, i1));
    }
    for (size_t i = 0; i < at.size(); i++) {
      if (at[i].level < 0) host.append_raw(l, k.f32() + i * row, v.f32() + i * row);
      else host.append_gist(l, at[i].level, k.f32() + i * row, v.f32() + i * row);
    }
    for (size_t i = 0; i < at.size(); i++) {
      const int64_t pr = pool.pool_row(l, at[i]);
      for (int e = 0; e < row; e++) {
        ASSERT_EQ(pool.pool(l).f32()[pr * row + e], k.f32()[i * row + e]) << i;
        ASSERT_EQ(pool.pool(l).f32()[(pr + 3) * row + e], v.f32()[i * row + e]) << i;
      }
    }
    for (int lv = 0; lv < 2; lv++) {
      EXPECT_EQ(pool.gist_count(l, lv), host.gist_count(l, lv));
      for (int h = 0; h < 2; h++) {
        const int tiles = (host.gist_count(l, lv) + kv::gist_tile - 1) / kv::gist_tile;
        const float* a = pool.gist_key_tiles(l, lv, h);
        const float* b = host.gist_key_tiles(l, lv, h);
        EXPECT_TRUE(std::equal(a, a + size_t(tiles) * 4 * kv::gist_tile, b));
      }
    }
  }
  EXPECT_EQ(pool.raw_count(1), raw);
  EXPECT_EQ(pool.bytes().device, pool.pool(0).nbytes() + pool.pool(1).nbytes());
  EXPECT_EQ(pool.bytes().resident, 0);
}

// A GPU session's keys reach reserve_rows in bf16: the host widens only the rows it keeps (gist rows for the
// scoring tiles, raw rows for page summaries), which must equal what the same keys give in f32.
TEST(SessionPool, Bf16KeysGiveTheF32TilesAndSummaries) {
  kv::cache_layout lay;
  lay.n_layers = 1;
  lay.n_kv_heads = 2;
  lay.head_dim = 8;
  lay.page_size = 4;
  lay.gist_levels = 1;
  lay.page_summaries = true;
  lay.rows_on = &cpu_backend();
  kv::kv_cache a(lay), b(lay);
  std::vector<kv::kv_addr> at;
  int raw = 0, gists = 0;
  for (int i = 0; i < 45; i++) at.push_back(i % 5 == 4 ? kv::kv_addr{0, gists++} : kv::kv_addr{-1, raw++});
  rng r(9);
  Tensor k({int64_t(at.size()), 2, 8});
  for (int64_t i = 0; i < k.numel(); i++) k.f32()[i] = r.normal();
  const Tensor kb = k.to(dtype::bf16), kf = kb.to(dtype::f32);  // values bf16 holds exactly
  a.reserve_rows(0, at, kf);
  b.reserve_rows(0, at, kb);
  ASSERT_EQ(a.gist_count(0, 0), gists);
  for (int h = 0; h < 2; h++) {
    const float *x = a.gist_key_tiles(0, 0, h), *y = b.gist_key_tiles(0, 0, h);
    EXPECT_TRUE(std::equal(x, x + size_t((gists + kv::gist_tile - 1) / kv::gist_tile) * 8 * kv::gist_tile, y));
  }
  const size_t n = size_t(a.complete_pages(0)) * 2 * 8;
  ASSERT_EQ(n, size_t(raw / 4) * 16);
  EXPECT_TRUE(std::equal(a.page_kmin(0), a.page_kmin(0) + n, b.page_kmin(0)));
  EXPECT_TRUE(std::equal(a.page_kmax(0), a.page_kmax(0) + n, b.page_kmax(0)));
  EXPECT_TRUE(std::equal(a.page_kmean(0), a.page_kmean(0) + n, b.page_kmean(0)));
  // And they are the keys: the first gist row's tile column is its K row.
  EXPECT_EQ(a.gist_key_tiles(0, 0, 1)[0], kf.f32()[size_t(4) * 16 + 8]);
}

TEST(SessionPool, EqualsTheHostCacheBitForBit) {
  struct c {
    method meth;
    std::vector<int> chunk;
    int64_t budget;
    prefill_mode prefill;
  };
  const c cases[] = {{method::full, {4}, -1, prefill_mode::automatic},
                     {method::gist, {4}, -1, prefill_mode::automatic},
                     {method::gsa, {4}, -1, prefill_mode::automatic},
                     {method::gsa, {4}, -1, prefill_mode::unfold},
                     {method::hgsa, {3, 2}, -1, prefill_mode::automatic},
                     {method::gsa, {3, 2}, -1, prefill_mode::automatic},
                     {method::streaming, {4}, 12, prefill_mode::automatic},
                     {method::quest, {4}, 12, prefill_mode::automatic},
                     {method::moba, {4}, 12, prefill_mode::automatic}};
  for (const auto& cs : cases) {
    SCOPED_TRACE(std::string(method_name(cs.meth)) + " " + prefill_mode_name(cs.prefill));
    llama_model m = tiny_model(cs.chunk);
    session_options o;
    o.meth = cs.meth;
    o.budget = cs.budget;
    o.prefill = cs.prefill;
    o.page_size = 4;
    auto [host, pooled] = host_and_pool(m, o, 37, 6, 12);
    ASSERT_GE(pooled->records().size(), 17u);
    expect_same(*host, *pooled);
    // Every method here builds its decode rows' lists through the backend (quest and moba: the page summaries
    // in the pool's memory), not on the host.
    EXPECT_GE(pooled->listed_rows(), 17);
    EXPECT_EQ(host->listed_rows(), 0);
    EXPECT_GT(pooled->cache().bytes().device, 0);
    EXPECT_EQ(host->cache().bytes().device, 0);
  }
}

// h2o on the pool: the decode attention of the backend returns each listed key's weight (backend::decode_attention
// with weights), which the eviction accumulates; the first eviction's observation window attends through it too.
// The same kept tokens, logits and greedy tokens as the host cache, bit for bit, alone and after a longer run
// where tokens are evicted.
TEST(SessionPool, H2oEqualsTheHostCacheBitForBit) {
  for (int64_t budget : {12, 20}) {
    SCOPED_TRACE("budget " + std::to_string(budget));
    llama_model m = tiny_model({4});
    session_options o;
    o.meth = method::h2o;
    o.budget = budget;
    o.page_size = 4;
    auto [host, pooled] = host_and_pool(m, o, 60, 6, 16);
    ASSERT_GE(pooled->records().size(), 21u);
    expect_same(*host, *pooled);
    // Eviction happened: every list holds the budget (the row itself included), and older tokens were dropped
    // unevenly (the heavy hitters kept are not just the most recent ones).
    bool gap = false;
    for (const auto& r : pooled->records())
      for (const auto& k : r.keys) {
        EXPECT_EQ(int64_t(k.size()), budget) << "row " << r.pos;
        for (size_t j = 1; j < k.size(); j++) gap |= k[j] > k[j - 1] + 1;
      }
    EXPECT_TRUE(gap);
    EXPECT_GT(pooled->cache().bytes().device, 0);
  }
}

// The selecting rows of gsa and hgsa take the backend's decode lists in pool mode (backend/decode-lists.h: the backend
// scores, selects and builds the lists; here the host reference): equal to the host engine's selection bit for
// bit under every rule, with group scoring, with two gists per chunk, with a sink that overlaps chunk 0, and for
// models whose selecting rows see every gist ("gists": "all": decode-lists.h sel_base in the selecting layers,
// the plain gist mask in dense layer 0).
TEST(SessionPool, DecodeListsEqualTheHostSelectionUnderEveryRule) {
  struct c {
    method meth;
    gist::select_rule rule;
    bool group;
    int g;
    int sink;
    bool gists_all = false;
  };
  using R = gist::select_rule;
  const c cases[] = {{method::gsa, R::fixed, false, 1, 2},     {method::gsa, R::fixed, true, 1, 2},
                     {method::gsa, R::adaptive, false, 1, 0},  {method::gsa, R::adaptive, true, 2, 6},
                     {method::gsa, R::top_p, false, 1, 2},     {method::gsa, R::top_p, true, 2, 0},
                     {method::hgsa, R::fixed, false, 1, 2},    {method::hgsa, R::adaptive, true, 2, 6},
                     {method::hgsa, R::adaptive, false, 1, 0}, {method::hgsa, R::top_p, false, 1, 2},
                     {method::gsa, R::fixed, false, 1, 2, true},  {method::gsa, R::adaptive, true, 2, 6, true},
                     {method::hgsa, R::fixed, false, 1, 2, true}, {method::hgsa, R::adaptive, true, 2, 0, true}};
  for (const auto& cs : cases) {
    SCOPED_TRACE(std::string(method_name(cs.meth)) + " " + gist::select_rule_name(cs.rule) +
                 (cs.group ? " group" : " union") + " g " + std::to_string(cs.g) + " sink " + std::to_string(cs.sink) +
                 (cs.gists_all ? " gists all" : ""));
    model_config mc = test::tiny_config(test::tiny_vocab, 3);
    gist::gsa_config gc = test::tiny_gsa(test::tiny_vocab, cs.meth == method::hgsa ? std::vector<int>{4, 2}
                                                                                  : std::vector<int>{4});
    gc.select = cs.rule;
    gc.group_scoring = cs.group;
    gc.gists_per_chunk = cs.g;
    gc.sink = cs.sink;
    gc.top_p = 0.6f;
    gc.gists_all = cs.gists_all;
    llama_model m = test::model_with_gsa(mc, gc, 11);
    session_options o;
    o.meth = cs.meth;
    o.page_size = 4;
    auto [host, pooled] = host_and_pool(m, o, 45, 6, 14);
    expect_same(*host, *pooled);
    EXPECT_GE(pooled->listed_rows(), 10) << "the decoded rows through the backend's lists";
    // Selection happened: some row unfolded chunks (a list longer than the gist mask of its row).
    size_t longest = 0;
    for (const auto& r : pooled->records())
      for (const auto& k : r.keys) longest = std::max(longest, k.size());
    EXPECT_GT(longest, pooled->records().front().keys.front().size());
  }
}

TEST(SessionPool, BatchEqualsTheHostBatch) {
  llama_model m = tiny_model({4});
  auto batch = [&](bool pool) {
    std::vector<std::unique_ptr<session>> ss;
    for (int i = 0; i < 3; i++) {
      session_options o;
      o.meth = i == 0 ? method::gsa : i == 1 ? method::full : method::gist;
      o.record = true;
      o.kv_pool = pool;
      ss.push_back(std::make_unique<session>(m, o));
      ss.back()->prefill(test::tiny_tokens(20 + 7 * i, 10 + i));
    }
    generate_options g;
    g.max_tokens = 9;
    generate({ss[0].get(), ss[1].get(), ss[2].get()}, g);
    return ss;
  };
  auto host = batch(false), pooled = batch(true);
  for (int i = 0; i < 3; i++) expect_same(*host[i], *pooled[i]);
}

TEST(SessionPool, RandomFillDecodes) {
  llama_model m = tiny_model({4});
  session_options o;
  o.meth = method::gsa;
  o.kv_pool = true;
  session s(m, o);
  s.fill_random(300, 3);
  s.append({5, 6, 7, 8});  // completes a chunk: 4 raw rows and its gist
  run_pending({&s});
  const auto st = s.take_stats();
  EXPECT_EQ(st.rows, 5);
  EXPECT_TRUE(std::all_of(s.logits().begin(), s.logits().end(), [](float x) { return std::isfinite(x); }));
}

// generate() reserves room for its tokens up front (session::reserve_tokens): the pools do not grow while it
// decodes (a growth copies the whole pool), where a session decoding as many rows without the reservation grows
// them; the tokens are still the host engine's.
TEST(SessionPool, GenerateReservesItsTokensUpFront) {
  for (method meth : {method::hgsa, method::full, method::quest}) {
    SCOPED_TRACE(method_name(meth));
    llama_model m = tiny_model({3, 2});
    session_options o;
    o.meth = meth;
    o.page_size = 3;
    o.record = true;
    session host(m, o);
    o.kv_pool = true;
    session reserved(m, o), grown(m, o);
    for (session* s : {&host, &reserved, &grown}) s->prefill(test::tiny_tokens(40, 1));
    const int n = 150;
    const void* before = reserved.cache().pool(0).raw();
    const int64_t capacity = reserved.cache().pool(0).dim(0);
    reserved.reserve_tokens(n);
    const void* after_reserve = reserved.cache().pool(0).raw();
    EXPECT_GT(reserved.cache().pool(0).dim(0), capacity);
    EXPECT_NE(after_reserve, before);
    generate_options g;
    g.max_tokens = n;
    generate({&reserved}, g);
    generate({&host}, g);
    EXPECT_EQ(reserved.cache().pool(0).raw(), after_reserve) << "a pool grew while decoding";
    for (int l = 0; l < m.config.num_hidden_layers; l++)
      EXPECT_GE(reserved.cache().pool(l).dim(0), reserved.cache().frames_taken(l) * 2 * 3);
    test_runs::expect_same(host, reserved);
    // Without the reservation the same number of decoded rows grows the pool.
    const void* grown_before = grown.cache().pool(0).raw();
    const int64_t grown_capacity = grown.cache().pool(0).dim(0);
    for (int i = 0; i < n; i++) {
      grown.append({int32_t(3 + i % 7)});
      run_pending({&grown});
    }
    EXPECT_NE(grown.cache().pool(0).raw(), grown_before);
    EXPECT_GT(grown.cache().pool(0).dim(0), grown_capacity);
  }
}

// A KV cache that cannot be allocated: the error keeps the allocator's message and adds what the context needs
// and what to change; the session keeps what it held and decodes on.
TEST(SessionPool, OutOfMemorySaysWhatTheContextNeeds) {
  llama_model m = tiny_model({4});
  session_options o;
  o.meth = method::gsa;
  o.kv_pool = true;
  o.page_size = 4;
  session s(m, o);
  s.prefill(test::tiny_tokens(40, 1));
  try {
    s.reserve_tokens(int64_t(1) << 42);  // pools of petabytes
    ADD_FAILURE() << "no error";
  } catch (const out_of_memory& e) {
    const std::string w = e.what();
    for (const char* part : {"out of memory allocating", "A context of 4398046511144 tokens needs about",
                             "GiB of KV cache", "shorten the context"})
      EXPECT_NE(w.find(part), std::string::npos) << part << " in: " << w;
  }
  s.append(test::tiny_tokens(3, 2));
  generate_options g;
  g.max_tokens = 4;
  EXPECT_NO_THROW(generate({&s}, g));
  EXPECT_GE(s.raw_count(), 40 + 3 + 3);
}

TEST(SessionPool, UnsupportedTiersAreRefused) {
  llama_model m = tiny_model({4});
  session_options o;
  o.meth = method::gist;
  o.kv_pool = true;
  o.tier = kv::page_tier::drop;
  expect_error([&] { session s(m, o); }, "--kv-tier memory");
}


// bytes_read counts what a full-attention row reads: every attended K and V row of every layer and KV head, in
// the bytes the cache stores (f32 here: host cache and the CPU backend's pool alike).
TEST(SessionPool, BytesReadCountsEveryAttendedRow) {
  llama_model m = tiny_model({4});
  const auto& c = m.config;
  const int64_t row_bytes = int64_t(2) * c.head_dim * int64_t(sizeof(float));
  for (bool pooled : {false, true}) {
    SCOPED_TRACE(pooled ? "pool" : "host");
    session_options o;
    o.meth = method::full;
    o.kv_pool = pooled;
    session s(m, o);
    s.prefill(test::tiny_tokens(40, 1));
    (void)s.take_stats();
    s.append({5});
    run_pending({&s});
    const auto st = s.take_stats();
    ASSERT_EQ(st.rows, 1);
    EXPECT_DOUBLE_EQ(st.attended_tokens, 41.0);  // the prompt and the row itself
    EXPECT_EQ(st.bytes_read, int64_t(41) * c.num_hidden_layers * c.num_key_value_heads * row_bytes);
  }
}

// A selecting method's counts on the pool's decode lists (session::lists_done: each selected chunk's raw rows and
// gists, the gist keys scored) equal the host engine's, row by row.
// Without tracking the unfolded ids (session::track_unfolded(false): the step copies back only the decode lists'
// stats), the counts are the same and only `unfolded` stays empty.
TEST(SessionPool, SelectingRowsCountAsTheHostEngine) {
  for (method meth : {method::gsa, method::hgsa, method::quest}) {
    SCOPED_TRACE(method_name(meth));
    llama_model m = tiny_model(meth == method::hgsa ? std::vector<int>{3, 2} : std::vector<int>{4});
    session_options o;
    o.meth = meth;
    if (meth == method::quest) o.budget = 24;
    session host(m, o);
    o.kv_pool = true;
    session pooled(m, o);
    o.track_unfolded = false;
    session counted(m, o);
    for (session* s : {&host, &pooled, &counted}) s->prefill(test::tiny_tokens(90, 3));
    size_t selections = 0;
    for (int i = 0; i < 6; i++) {
      for (session* s : {&host, &pooled, &counted}) {
        s->append({int32_t(5 + i)});
        run_pending({s});
      }
      const auto a = host.take_stats(), b = pooled.take_stats(), n = counted.take_stats();
      EXPECT_GT(b.attended_tokens, 0.0);
      EXPECT_DOUBLE_EQ(b.attended_tokens, a.attended_tokens) << "row " << i;
      EXPECT_EQ(b.bytes_read, a.bytes_read) << "row " << i;
      EXPECT_EQ(b.unfolded, a.unfolded) << "row " << i;
      EXPECT_DOUBLE_EQ(n.attended_tokens, a.attended_tokens) << "row " << i << ", ids not tracked";
      EXPECT_EQ(n.bytes_read, a.bytes_read) << "row " << i << ", ids not tracked";
      for (const auto& ids : n.unfolded) EXPECT_TRUE(ids.empty()) << "row " << i << ", ids not tracked";
      for (const auto& ids : a.unfolded) selections += !ids.empty();
    }
    EXPECT_GT(selections, 0u) << "some layer selected chunks or pages";
    EXPECT_GT(pooled.listed_rows(), 0) << "the pool's rows went through the decode lists";
    EXPECT_GT(counted.listed_rows(), 0) << "the pool's rows went through the decode lists";
  }
}

}  // namespace
}  // namespace gsa::infer
