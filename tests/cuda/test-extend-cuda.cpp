// Prefill on top of held KV on the GPU (session::extend, infer::run_step with several rows of a session): the
// rows of a piece select on the host and attend through the decode kernel over the pools, row after row inside
// each layer. Against the CPU engine on random models with head dim 64 in f32, for every method but h2o: the same
// key lists for every extended row, logits to 1e-4 relative, the same greedy tokens after; and against the same
// GPU session decoding the rows one per step (where single rows take the device-side lists path).
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "cuda/cuda-test-util.h"
#include "cuda/session-checks.h"
#include "infer/generate.h"
#include "infer/session.h"
#include "test-models.h"
#include "test-util.h"

namespace gsa::infer {
namespace {

llama_model extend_model(std::vector<int> chunk, uint64_t seed) {
  model_config c = test::tiny_config(test::tiny_vocab, 3, 2048);
  c.hidden_size = 96;
  c.intermediate_size = 160;
  c.head_dim = 64;
  c.gsa = gist::gsa_config_to_json(test::tiny_gsa(test::tiny_vocab, chunk));
  llama_model m(c);
  m.init_random(seed, 0.3f);
  return m;
}

// Prefill ctx tokens, then 90 more: all in one extend, in pieces of 16 rows, or one row per step (pieces 1).
std::unique_ptr<session> extended(const llama_model& m, session_options o, int pieces) {
  o.record = true;
  auto s = std::make_unique<session>(m, o);
  s->prefill(test::tiny_tokens(300, 1));
  const auto more = test::tiny_tokens(90, 2);
  if (pieces == 0) {
    s->extend(more);
  } else {
    s->append(more);
    while (s->has_pending()) run_step({s.get()}, {pieces});
  }
  generate_options g;
  g.max_tokens = 8;
  generate({s.get()}, g);
  return s;
}

TEST(CudaExtend, SameKeysAndLogitsAsTheCpuAndAsDecodingRowByRow) {
  REQUIRE_GPU();
  struct method_case {
    method meth;
    std::vector<int> chunk;
    int64_t budget;
  };
  const method_case cases[] = {{method::full, {8}, -1},    {method::gist, {8}, -1},      {method::gsa, {8}, -1},
                               {method::hgsa, {4, 2}, -1}, {method::streaming, {8}, 64}, {method::quest, {8}, 64},
                               {method::moba, {8}, 64}};
  for (const auto& cs : cases) {
    SCOPED_TRACE(method_name(cs.meth));
    llama_model cpu_m = extend_model(cs.chunk, 31);
    llama_model gpu_m = to_backend(cpu_m, get_backend(device::cuda, dtype::f32));
    session_options o;
    o.meth = cs.meth;
    o.budget = cs.budget;
    auto ref = extended(cpu_m, o, 0);
    auto got = extended(gpu_m, o, 0);
    EXPECT_GT(got->cache().bytes().device, 0) << "the rows live on the GPU";
    expect_same_as_cpu(*got, *ref, "extended and decoded rows");
    expect_same_as_cpu(*extended(gpu_m, o, 16), *ref, "extended and decoded rows");
    expect_same_as_cpu(*extended(gpu_m, o, 1), *ref, "extended and decoded rows");
  }
}

}  // namespace
}  // namespace gsa::infer
