// CUDA graphs of the decode step (infer/decode-step.cpp step_scratch, backend::replay): each layer's dense part is
// recorded once per row count and replayed. Replayed steps must compute exactly what launched steps compute, as
// batches grow and shrink (sessions joining and leaving change the row count, and with it the buffers and
// recordings), for methods whose selection runs on the GPU (gsa, hgsa, full, quest) and on the host (h2o); and a
// recording that would hide a synchronisation fails with a clear error instead of recording it.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "backend/cuda/runtime.h"
#include "cuda/cuda-test-util.h"
#include "cuda/session-checks.h"
#include "core/error.h"
#include "infer/session.h"
#include "test-models.h"
#include "test-util.h"

namespace gsa::infer {
namespace {

// Five sessions of different methods and lengths; steps in which all, then three, then two, then all of them
// decode one token (greedy), each step's logits of every session kept.
std::vector<std::vector<float>> decode_batches(const llama_model& m, std::vector<std::vector<int32_t>>* tokens) {
  const method ms[] = {method::gsa, method::full, method::hgsa, method::quest, method::h2o};
  std::vector<std::unique_ptr<session>> ss;
  for (int i = 0; i < 5; i++) {
    session_options o;
    o.meth = ms[i];
    if (ms[i] == method::quest || ms[i] == method::h2o) o.budget = 64;
    ss.push_back(std::make_unique<session>(m, o));
    ss.back()->prefill(test::tiny_tokens(170 + 61 * i, 40 + i));
  }
  std::vector<std::vector<float>> logits;
  const std::vector<std::vector<int>> phases = {{0, 1, 2, 3, 4}, {0, 2, 4}, {1, 3}, {0, 1, 2, 3, 4}};
  for (const auto& who : phases)
    for (int step = 0; step < 4; step++) {
      std::vector<session*> batch;
      for (int i : who) {
        const auto& lg = ss[size_t(i)]->logits();
        const int32_t next = int32_t(std::max_element(lg.begin(), lg.end()) - lg.begin());
        ss[size_t(i)]->append({next});
        batch.push_back(ss[size_t(i)].get());
      }
      run_pending(batch);
      for (int i : who) logits.push_back(ss[size_t(i)]->logits());
    }
  tokens->clear();
  for (const auto& s : ss) tokens->push_back(s->stream().ids);
  return logits;
}

TEST(CudaGraphs, ReplayedDecodeStepsEqualLaunchedOnes) {
  REQUIRE_GPU();
  for (const dtype act : {dtype::f32, dtype::bf16}) {
    SCOPED_TRACE(dtype_name(act));
    model_config c = gqa4_config();
    c.gsa = gist::gsa_config_to_json(test::tiny_gsa(test::tiny_vocab, {8, 2}));
    llama_model host(c);
    host.init_random(71, 0.3f);
    std::vector<std::vector<int32_t>> tok_on, tok_off;
    cuda::set_graphs_enabled(false);
    const llama_model off = to_backend(host, get_backend(device::cuda, act));
    const auto ref = decode_batches(off, &tok_off);
    EXPECT_EQ(decode_recordings(off), 0) << "graphs off: nothing recorded";
    cuda::set_graphs_enabled(true);
    const llama_model on = to_backend(host, get_backend(device::cuda, act));
    const auto got = decode_batches(on, &tok_on);
    // Row counts 5, 3 and 2 (and the smaller steps that insert some sessions' gists), each L + 1 = 4 segments.
    const int rec = decode_recordings(on);
    EXPECT_TRUE(rec >= 3 * 4 && rec % 4 == 0) << rec << " recorded segments";
    EXPECT_EQ(tok_on, tok_off) << "greedy tokens";
    ASSERT_EQ(got.size(), ref.size());
    double worst = 0;
    for (size_t i = 0; i < ref.size(); i++) worst = std::max(worst, test::max_rel_err(got[i], ref[i]));
    // The same kernels on the same inputs in the same order: the same bits.
    EXPECT_EQ(worst, 0.0) << "max relative logit error, replayed against launched";
  }
}

TEST(CudaGraphs, RecordingThatSynchronisesFailsClearly) {
  REQUIRE_GPU();
  std::string what;
  try {
    cuda::record_graph([] { cuda::synchronize(); });
  } catch (const error& e) {
    what = e.what();
  }
  EXPECT_NE(what.find("GSA_CUDA_GRAPHS=0"), std::string::npos) << what;
  // The stream is usable afterwards.
  void* p = cuda::alloc(1024);
  cuda::memset0(p, 1024);
  cuda::synchronize();
  cuda::release(p);
}

}  // namespace
}  // namespace gsa::infer
