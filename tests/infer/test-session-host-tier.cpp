// Raw pages off the device (kv-cache.h tier host, `--gpu-kv-budget`), through the CPU backend: the same cache
// and session code a GPU session runs, with the "host part" plain memory. Moving pages out of the pool must change
// no result: the same key lists (as stream positions), logits and tokens as the all-in-pool session, for every
// method of the device path, alone and batched; the pages really move (page states, pinned bytes, device frames
// reused), and a budget too small for the gists and the window is a clear error.
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

using test_runs::expect_error;
using test_runs::expect_same;

// A recorded run on the device path (pool mode through the CPU backend).
std::unique_ptr<session> run(const llama_model& m, session_options o, int ctx, int question, int gen) {
  o.kv_pool = true;
  return test_runs::run(m, o, ctx, question, gen);
}

// Pages of layer 0 that left the pool.
int pages_off(const session& s) {
  int n = 0;
  for (int p = 0; p < s.cache().complete_pages(0); p++) n += s.cache().page_state(0, p) == kv::page_tier::host;
  return n;
}

TEST(SessionHostTier, EqualsAllInThePoolForEveryMethod) {
  struct c {
    method meth;
    std::vector<int> chunk;
    int64_t budget;
  };
  const c cases[] = {{method::gsa, {4}, -1},       {method::hgsa, {3, 2}, -1},   {method::full, {4}, -1},
                     {method::gist, {4}, -1},      {method::streaming, {4}, 12}, {method::quest, {4}, 12},
                     {method::moba, {4}, 12},      {method::gsa, {4}, 20},       {method::h2o, {4}, 12}};
  for (const auto& cs : cases) {
    SCOPED_TRACE(std::string(method_name(cs.meth)) + " budget " + std::to_string(cs.budget));
    llama_model m = tiny_model(cs.chunk);
    session_options o;
    o.meth = cs.meth;
    o.budget = cs.budget;
    o.page_size = 4;
    auto all = run(m, o, 61, 6, 12);
    o.gpu_kv_budget = int64_t(64) << 20;
    auto split = run(m, o, 61, 6, 12);
    ASSERT_GE(split->records().size(), 17u);
    expect_same(*all, *split);
    // Most complete pages left the pool (all but the sink's and the window's); the pool holds fewer frames.
    const int complete = split->cache().complete_pages(0);
    EXPECT_GE(pages_off(*split), complete - 4) << complete << " complete pages";
    EXPECT_EQ(pages_off(*all), 0);
    EXPECT_GT(split->cache().bytes().pinned, 0);
    EXPECT_EQ(all->cache().bytes().pinned, 0);
    EXPECT_NE(split->cache().host(0), nullptr);
  }
}

TEST(SessionHostTier, BatchEqualsTheAllInPoolBatch) {
  llama_model m = tiny_model({4, 2});
  const method meths[] = {method::gsa, method::full, method::hgsa, method::streaming};
  auto batch = [&](int64_t budget) {
    std::vector<std::unique_ptr<session>> ss;
    for (int i = 0; i < 4; i++) {
      session_options o;
      o.meth = meths[i];
      o.budget = meths[i] == method::streaming ? 12 : -1;
      o.record = true;
      o.kv_pool = true;
      o.gpu_kv_budget = budget;
      ss.push_back(std::make_unique<session>(m, o));
      ss.back()->prefill(test::tiny_tokens(30 + 7 * i, 10 + i));
    }
    generate_options g;
    g.max_tokens = 11;
    generate({ss[0].get(), ss[1].get(), ss[2].get(), ss[3].get()}, g);
    return ss;
  };
  auto all = batch(0), split = batch(int64_t(16) << 20);
  for (int i = 0; i < 4; i++) {
    expect_same(*all[i], *split[i]);
    EXPECT_GT(pages_off(*split[i]), 3);
  }
}

// The cache itself: moved pages read back from the host part at pool_row (rows >= kv_host_row0), freed device
// frames are reused (the pool stops growing with the context), and a page written in the same append that moves
// it moves with its rows.
TEST(SessionHostTier, MovedPagesReadBackAndFramesAreReused) {
  kv::cache_layout lay;
  lay.n_layers = 1;
  lay.n_kv_heads = 2;
  lay.head_dim = 4;
  lay.page_size = 3;
  lay.gist_levels = 1;
  lay.sink = 3;
  lay.window_pages = 1;
  lay.rows_on = &cpu_backend();
  lay.tier = kv::page_tier::host;
  lay.max_raw = 1000;
  kv::kv_cache c(lay);
  rng r(9);
  const int row = 8, P = 3;
  std::vector<kv::kv_addr> at;
  int raw = 0, gists = 0;
  for (int i = 0; i < 400; i++) {
    const bool gist = i % 4 == 3;
    at.push_back({int8_t(gist ? 0 : -1), gist ? gists++ : raw++});
  }
  Tensor k({int64_t(at.size()), 2, 4}), v({int64_t(at.size()), 2, 4});
  for (int64_t i = 0; i < k.numel(); i++) k.f32()[i] = r.normal(), v.f32()[i] = r.normal();
  int64_t cap_at_100 = 0;
  for (size_t i0 = 0, n = 1; i0 < at.size(); i0 += n, n = n % 13 + 1) {  // pieces of 1..13 rows
    const size_t i1 = std::min(at.size(), i0 + n);
    c.append_rows(0, std::vector<kv::kv_addr>(at.begin() + i0, at.begin() + i1), k.slice_rows(i0, i1),
                  v.slice_rows(i0, i1));
    if (cap_at_100 == 0 && i1 >= 100) cap_at_100 = c.pool(0).dim(0);
  }
  int moved = 0;
  for (size_t i = 0; i < at.size(); i++) {
    const int64_t pr = c.pool_row(0, at[i]);
    const bool off = pr >= kv_host_row0;
    const float* base = off ? static_cast<const float*>(c.host(0)) : c.pool(0).f32();
    const int64_t rr = off ? pr - kv_host_row0 : pr;
    for (int e = 0; e < row; e++) {
      ASSERT_EQ(base[rr * row + e], k.f32()[i * row + e]) << i;
      ASSERT_EQ(base[(rr + P) * row + e], v.f32()[i * row + e]) << i;
    }
    if (at[i].level < 0) {
      const int p = at[i].index / P;
      EXPECT_EQ(off, c.page_state(0, p) == kv::page_tier::host) << "raw " << at[i].index;
      if (p == 0) {
        EXPECT_FALSE(off) << "the sink stays";
      }
      if (p >= c.complete_pages(0) - 1) {
        EXPECT_FALSE(off) << "the window stays";
      }
      moved += off && at[i].index % P == 0;
    }
  }
  EXPECT_EQ(moved, c.complete_pages(0) - 1 - 2);  // all but the sink page and the two the window keeps
  // The pool holds the gists (100 rows: 34 frames), sink and window; 300 raw rows would need 100 more frames.
  EXPECT_LE(c.pool(0).dim(0), 2 * (34 + 8) * 2 * P);
  EXPECT_GT(c.pool(0).dim(0), 0);
  EXPECT_GE(c.bytes().pinned, int64_t(moved) * 2 * P * row * int64_t(sizeof(float)));
  EXPECT_FALSE(c.truncatable(raw - 1)) << "a cut would need pages back from the host";
  (void)cap_at_100;
}

TEST(SessionHostTier, BudgetAndMisuseAreClearErrors) {
  llama_model m = tiny_model({4});
  {
    session_options o;
    o.meth = method::gsa;
    o.kv_pool = true;
    o.gpu_kv_budget = 1000;  // less than one layer's first frames
    session s(m, o);
    expect_error([&] { s.prefill(test::tiny_tokens(40, 1)); }, "beyond --gpu-kv-budget 1000");
  }
  {
    session_options o;
    o.meth = method::gsa;
    o.gpu_kv_budget = int64_t(1) << 30;  // a host session: nothing to keep off a device
    expect_error([&] { session s(m, o); }, "--device cuda");
  }
  {
    session_options o;
    o.meth = method::gist;
    o.kv_pool = true;
    o.gpu_kv_budget = int64_t(1) << 30;
    o.tier = kv::page_tier::file;
    expect_error([&] { session s(m, o); }, "takes no --kv-tier file");
  }
}

TEST(SessionHostTier, RandomFillDecodesLikeAllInThePool) {
  llama_model m = tiny_model({4, 2});
  auto decode = [&](int64_t budget) {
    session_options o;
    o.meth = method::hgsa;
    o.kv_pool = true;
    o.gpu_kv_budget = budget;
    auto s = std::make_unique<session>(m, o);
    s->fill_random(300, 3);
    s->append({5, 6, 7, 8, 9});
    run_pending({s.get()});
    return s;
  };
  auto all = decode(0), split = decode(int64_t(8) << 20);
  EXPECT_EQ(all->logits(), split->logits());
  EXPECT_GT(pages_off(*split), 60);
}

}  // namespace
}  // namespace gsa::infer
