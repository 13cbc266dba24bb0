// Teacher-forced scoring through the decode path: with full attention it must equal the loss of one forward pass
// over the same tokens; a sparse method scores the same tokens.
#include "core/error.h"
#include "infer/perplexity.h"
#include "test-models.h"
#include "test-util.h"

namespace gsa::infer {
namespace {

TEST(Perplexity, FullMethodEqualsOneForwardPass) {
  llama_model m = test::tiny_model({4}, /*with_gsa=*/false);
  auto ids = test::tiny_tokens(60, 3);
  const int context = 40, predict = 20;
  nll_result r = score_continuation(m, method::full, -1, ids, context, predict);
  ASSERT_EQ(r.tokens, predict - 1);
  // Reference: one causal forward over context + predict tokens, loss on tokens context+1 .. context+predict-1.
  std::vector<int32_t> seq(ids.begin(), ids.begin() + context + predict), pos(seq.size()), tg(seq.size(), -100);
  for (size_t i = 0; i < seq.size(); i++) {
    pos[i] = int32_t(i);
    if (int(i) >= context && i + 1 < seq.size()) tg[i] = seq[i + 1];
  }
  forward_state st;
  forward(m, st, seq, pos, tg, nullptr);
  EXPECT_EQ(st.n_valid, r.tokens);
  EXPECT_NEAR(r.nats, st.loss_sum, 1e-4 * std::fabs(st.loss_sum));
  EXPECT_EQ(r.scored_ids, std::vector<int32_t>(ids.begin() + context + 1, ids.begin() + context + predict));
}

TEST(Perplexity, GsaScoresTheSameTokensWithFewerKeys) {
  llama_model m = test::tiny_model({4});
  auto ids = test::tiny_tokens(80, 5);
  nll_result g = score_continuation(m, method::gsa, -1, ids, 60, 16);
  nll_result f = score_continuation(m, method::full, -1, ids, 60, 16);
  EXPECT_EQ(g.scored_ids, f.scored_ids);
  EXPECT_GT(g.rows, f.rows);  // gist rows are inserted every 4 tokens
  EXPECT_LT(g.attended / g.rows, f.attended / f.rows);
  EXPECT_TRUE(std::isfinite(g.nats) && g.nats > 0);
  EXPECT_THROW(score_continuation(m, method::gsa, -1, ids, 70, 16), gsa::error);
  // A GPU budget for the KV cache reaches the session: on a host model it is refused with what to use.
  try {
    score_continuation(m, method::gsa, -1, ids, 60, 16, int64_t(1) << 30);
    ADD_FAILURE() << "no error";
  } catch (const gsa::error& e) {
    EXPECT_NE(std::string(e.what()).find("--gpu-kv-budget"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace gsa::infer
