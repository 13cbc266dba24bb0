// The device path of a session (K/V rows in pools on the model's backend, kv-cache.h pool mode) run through the
// CPU backend: the same code a GPU session runs, minus the CUDA kernels. It must give the host engine's results
// bit for bit (the CPU backend's decode attention is the host engine's kernel): same key lists, same logits,
// same tokens, alone and batched, for every method the device path supports; the others are refused clearly.
#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"
#include "infer/generate.h"
#include "infer/session.h"
#include "test-models.h"
#include "test-util.h"

namespace gsa::infer {
namespace {

using test::tiny_model;

// f throws a gsa::error whose message contains what.
template <class F>
void expect_error(F f, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning '" << what << "'";
  } catch (const gsa::error& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

std::unique_ptr<session> run(const llama_model& m, session_options o, int ctx, int question, int gen) {
  o.record = true;
  auto s = std::make_unique<session>(m, o);
  s->prefill(test::tiny_tokens(ctx, 1));
  s->append(test::tiny_tokens(question, 2));
  generate_options g;
  g.max_tokens = gen;
  generate({s.get()}, g);
  return s;
}

void expect_same(const session& a, const session& b) {
  EXPECT_EQ(a.stream().ids, b.stream().ids);
  ASSERT_EQ(a.records().size(), b.records().size());
  for (size_t i = 0; i < a.records().size(); i++) {
    EXPECT_EQ(a.records()[i].keys, b.records()[i].keys) << "row " << a.records()[i].pos;
    EXPECT_EQ(a.records()[i].logits, b.records()[i].logits) << "row " << a.records()[i].pos;
  }
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
                     {method::streaming, {4}, 12, prefill_mode::automatic}};
  for (const auto& cs : cases) {
    SCOPED_TRACE(std::string(method_name(cs.meth)) + " " + prefill_mode_name(cs.prefill));
    llama_model m = tiny_model(cs.chunk);
    session_options o;
    o.meth = cs.meth;
    o.budget = cs.budget;
    o.prefill = cs.prefill;
    auto host = run(m, o, 37, 6, 12);
    o.kv_pool = true;
    auto pooled = run(m, o, 37, 6, 12);
    ASSERT_GE(pooled->records().size(), 17u);
    expect_same(*host, *pooled);
    EXPECT_GT(pooled->cache().bytes().device, 0);
    EXPECT_EQ(host->cache().bytes().device, 0);
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

TEST(SessionPool, UnsupportedMethodsAndTiersAreRefused) {
  llama_model m = tiny_model({4});
  for (method meth : {method::quest, method::moba, method::h2o}) {
    session_options o;
    o.meth = meth;
    o.kv_pool = true;
    expect_error([&] { session s(m, o); }, "does not run on");
  }
  session_options o;
  o.meth = method::gist;
  o.kv_pool = true;
  o.tier = kv::page_tier::drop;
  expect_error([&] { session s(m, o); }, "--kv-tier memory");
}

}  // namespace
}  // namespace gsa::infer
