// Issue 12: results must not depend on the OpenMP thread count (a run resumed with another number of threads was
// not bit-exact). One forward and backward of a model big enough to cross every op's parallel threshold, in every
// GSA mode, at 1, 2 and 3 threads: the loss and every gradient equal bit for bit.
#include <omp.h>

#include <cstring>

#include "gist/stream.h"
#include "model/gsa-plans.h"
#include "model/llama.h"
#include "test-models.h"
#include "test-util.h"

namespace gsa {
namespace {

TEST(ThreadCount, ForwardAndBackwardAreBitIdenticalAtAnyThreadCount) {
  model_config c = test::tiny_config(512, 3, 4096);
  c.hidden_size = 128;
  c.intermediate_size = 384;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 32;
  gist::gsa_config g = test::tiny_gsa(512, {8});
  g.select = gist::select_rule::adaptive;
  g.sink = 3;
  c.gsa = gist::gsa_config_to_json(g);
  llama_model m(c);
  m.init_random(3, 0.05f);
  rng r(5);
  std::vector<int32_t> raw(700);
  for (auto& x : raw) x = int32_t(r.below(500));
  const gist::stream s = gist::build_stream(raw.data(), int(raw.size()), g);
  const int saved = omp_get_max_threads();
  for (auto mode : {gist::train_mode::compress, gist::train_mode::unfold}) {
    for (bool per_token : {false, true}) {
      if (mode == gist::train_mode::compress && per_token) continue;
      g.select_per_token = per_token;
      SCOPED_TRACE(std::string(gist::train_mode_name(mode)) + (per_token ? " per token" : ""));
      std::vector<std::vector<float>> first;
      double first_loss = 0;
      for (int threads : {1, 2, 3}) {
        omp_set_num_threads(threads);
        plan_provider plans = make_gsa_plans(m, g, s, mode);
        forward_state st;
        forward(m, st, s.ids, s.pos, s.labels, &plans);
        llama_weights grads = make_grads(m);
        backward(m, st, grads);
        std::vector<std::vector<float>> now;
        for (auto& [name, t] : grad_list(m, grads)) now.emplace_back(t->f32(), t->f32() + t->numel());
        if (threads == 1) {
          first = now;
          first_loss = st.loss();
          continue;
        }
        EXPECT_EQ(std::memcmp(&first_loss, &st.loss_sum, 0), 0);
        EXPECT_EQ(st.loss(), first_loss) << threads << " threads";
        auto names = grad_list(m, grads);
        for (size_t i = 0; i < now.size(); i++)
          EXPECT_TRUE(now[i] == first[i]) << names[i].first << " differs at " << threads << " threads";
      }
    }
  }
  omp_set_num_threads(saved);
}

}  // namespace
}  // namespace gsa
