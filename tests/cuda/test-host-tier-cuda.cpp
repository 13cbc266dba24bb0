// Raw KV pages off the GPU (`--gpu-kv-budget`, kv-cache.h tier host): pages that leave the window move to pinned
// host memory, and the decode kernel reads them there in place (rows >= kv_host_row0). On the device, for
// every method of the GPU path: in f32 the same tokens, key lists and logits as the CPU engine; in bf16 the same
// logits bit for bit as the all-on-GPU session (the lists and the reduction order are the same, only the rows'
// addresses differ); batched sessions too; and the pages really left the GPU.
#include <gtest/gtest.h>

#include <string>

#include "cuda/cuda-test-util.h"
#include "cuda/session-checks.h"
#include "core/error.h"
#include "infer/generate.h"
#include "infer/session.h"
#include "test-models.h"
#include "test-util.h"

namespace gsa::infer {
namespace {

// gqa4_config (session-checks.h) with GSA chunks `chunk`, random weights.
llama_model random_model(std::vector<int> chunk, uint64_t seed) {
  model_config c = gqa4_config();
  c.gsa = gist::gsa_config_to_json(test::tiny_gsa(test::tiny_vocab, chunk));
  llama_model m(c);
  m.init_random(seed, 0.3f);
  return m;
}

int pages_off(const session& s) {
  int n = 0;
  for (int p = 0; p < s.cache().complete_pages(0); p++) n += s.cache().page_state(0, p) == kv::page_tier::host;
  return n;
}

struct method_case {
  method meth;
  std::vector<int> chunk;
  int64_t budget;
};
const method_case kCases[] = {{method::full, {8}, -1},    {method::gist, {8}, -1},      {method::gsa, {8}, -1},
                              {method::hgsa, {4, 2}, -1}, {method::streaming, {8}, 64}, {method::quest, {8}, 64},
                              {method::moba, {8}, 64},    {method::gsa, {8}, 48},
                              {method::hgsa, {4, 2, 2}, -1}};

TEST(CudaHostTier, PagesOffTheGpuEqualTheCpuInF32) {
  REQUIRE_GPU();
  for (const auto& cs : kCases) {
    SCOPED_TRACE(std::string(method_name(cs.meth)) + " budget " + std::to_string(cs.budget));
    llama_model cpu_m = random_model(cs.chunk, 17);
    llama_model gpu_m = to_backend(cpu_m, get_backend(device::cuda, dtype::f32));
    session_options o;
    o.meth = cs.meth;
    o.budget = cs.budget;
    auto ref = run(cpu_m, o, 700, 20);
    o.gpu_kv_budget = int64_t(256) << 20;
    auto got = run(gpu_m, o, 700, 20);
    expect_same_as_cpu(*got, *ref);
    EXPECT_GT(pages_off(*got), 40) << "pages left the GPU";
    EXPECT_GT(got->cache().bytes().pinned, 0);
  }
}

TEST(CudaHostTier, Bf16BitForBitAsAllOnTheGpu) {
  REQUIRE_GPU();
  for (const auto& cs : kCases) {
    SCOPED_TRACE(std::string(method_name(cs.meth)) + " budget " + std::to_string(cs.budget));
    llama_model gpu_m = to_backend(random_model(cs.chunk, 23), get_backend(device::cuda, dtype::bf16));
    session_options o;
    o.meth = cs.meth;
    o.budget = cs.budget;
    auto all = run(gpu_m, o, 900, 16);
    o.gpu_kv_budget = int64_t(256) << 20;
    auto split = run(gpu_m, o, 900, 16);
    EXPECT_EQ(all->stream().ids, split->stream().ids);
    ASSERT_EQ(all->records().size(), split->records().size());
    for (size_t i = 0; i < all->records().size(); i++) {
      EXPECT_EQ(all->records()[i].keys, split->records()[i].keys) << "row " << i;
      EXPECT_EQ(all->records()[i].logits, split->records()[i].logits) << "row " << i;
    }
    EXPECT_GT(pages_off(*split), 60);
  }
}

TEST(CudaHostTier, BatchOfMethodsEqualsTheCpuBatch) {
  REQUIRE_GPU();
  llama_model cpu_m = random_model({8, 4}, 5);
  llama_model gpu_m = to_backend(cpu_m, get_backend(device::cuda, dtype::f32));
  const method meths[] = {method::gsa, method::full, method::hgsa, method::streaming};
  auto batch = [&](const llama_model& m, int64_t kv_budget) {
    std::vector<std::unique_ptr<session>> ss;
    std::vector<session*> ptrs;
    for (size_t i = 0; i < std::size(meths); i++) {
      session_options o;
      o.meth = meths[i];
      o.budget = meths[i] == method::streaming ? 64 : -1;
      o.record = true;
      o.gpu_kv_budget = kv_budget;
      ss.push_back(std::make_unique<session>(m, o));
      ss.back()->prefill(test::tiny_tokens(300 + 111 * int(i), 7 + int(i)));
      ptrs.push_back(ss.back().get());
    }
    generate_options g;
    g.max_tokens = 18;
    generate(ptrs, g);
    return ss;
  };
  auto ref = batch(cpu_m, 0), got = batch(gpu_m, int64_t(64) << 20);
  for (size_t i = 0; i < std::size(meths); i++) {
    SCOPED_TRACE(method_name(meths[i]));
    expect_same_as_cpu(*got[i], *ref[i]);
    EXPECT_GT(pages_off(*got[i]), 20);
  }
}

// A random fill (the long-context benchmark's) decodes the same with its pages off the GPU.
TEST(CudaHostTier, RandomFillDecodesAsAllOnTheGpu) {
  REQUIRE_GPU();
  llama_model cpu_m = random_model({8, 4}, 5);
  llama_model bf = to_backend(cpu_m, get_backend(device::cuda, dtype::bf16));
  auto filled = [&](int64_t kv_budget) {
    session_options o;
    o.meth = method::hgsa;
    o.gpu_kv_budget = kv_budget;
    auto s = std::make_unique<session>(bf, o);
    s->fill_random(1500, 4);
    s->append(test::tiny_tokens(9, 3));
    run_pending({s.get()});
    return s;
  };
  auto a = filled(0), b = filled(int64_t(64) << 20);
  EXPECT_EQ(a->logits(), b->logits());
  EXPECT_GT(pages_off(*b), 150);
}

TEST(CudaHostTier, TooSmallABudgetSaysWhatToChange) {
  REQUIRE_GPU();
  llama_model gpu_m = to_backend(random_model({8}, 3), get_backend(device::cuda, dtype::bf16));
  session_options o;
  o.meth = method::gsa;
  o.gpu_kv_budget = 4096;
  session s(gpu_m, o);
  try {
    s.prefill(test::tiny_tokens(500, 1));
    ADD_FAILURE() << "no error";
  } catch (const gsa::error& e) {
    EXPECT_NE(std::string(e.what()).find("raise the budget or shorten the context"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace gsa::infer
