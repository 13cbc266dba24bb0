// Shared by the GPU session tests (test-session-cuda.cpp, test-extend-cuda.cpp): a GPU run against the CPU run of
// the same session.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>

#include "infer/generate.h"
#include "infer/session.h"
#include "test-models.h"
#include "test-util.h"

namespace gsa::infer {

// The GPU run computed what the CPU run did: the same greedy tokens, the same key list in every recorded row, logits
// to 1e-4 (relative, worst row). `rows` names the recorded rows in the failure message.
inline void expect_same_as_cpu(const session& got, const session& ref, const std::string& rows = "decoded rows") {
  EXPECT_EQ(got.stream().ids, ref.stream().ids) << "greedy tokens";
  ASSERT_EQ(got.records().size(), ref.records().size());
  double worst = 0;
  int differing_lists = 0;
  for (size_t i = 0; i < ref.records().size(); i++) {
    differing_lists += got.records()[i].keys != ref.records()[i].keys;
    worst = std::max(worst, test::max_rel_err(got.records()[i].logits, ref.records()[i].logits));
  }
  EXPECT_EQ(differing_lists, 0) << "rows whose key lists differ";
  EXPECT_LT(worst, 1e-4) << "max relative logit error over the " << rows;
}

// A recording session of o: ctx context tokens, 5 question tokens, then `gen` greedy tokens.
inline std::unique_ptr<session> run(const llama_model& m, session_options o, int ctx, int gen) {
  o.record = true;
  auto s = std::make_unique<session>(m, o);
  s->prefill(test::tiny_tokens(ctx, 1));
  s->append(test::tiny_tokens(5, 2));
  generate_options g;
  g.max_tokens = gen;
  generate({s.get()}, g);
  return s;
}

// 3 layers of 128, 8 query heads over 2 KV heads (GQA 4) of 64, 2048 positions: the selection tests' shape.
inline model_config gqa4_config() {
  model_config c = test::tiny_config(test::tiny_vocab, 3, 2048);
  c.hidden_size = 128;
  c.intermediate_size = 160;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 2;
  c.head_dim = 64;
  return c;
}

}  // namespace gsa::infer
