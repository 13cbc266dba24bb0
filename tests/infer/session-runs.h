// Shared by the pool-mode session tests (test-session-pool.cpp, test-session-host-tier.cpp): a recorded run of a
// session (prefill, a question, greedy generation), the check that two runs computed the same thing, and the
// check that a call fails with a clear message.
#pragma once
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "core/error.h"
#include "infer/generate.h"
#include "infer/session.h"
#include "test-models.h"

namespace gsa::infer::test_runs {

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

// A recording session of o: ctx context tokens, a question of `question` tokens, then `gen` greedy tokens.
inline std::unique_ptr<session> run(const llama_model& m, session_options o, int ctx, int question, int gen) {
  o.record = true;
  auto s = std::make_unique<session>(m, o);
  s->prefill(test::tiny_tokens(ctx, 1));
  s->append(test::tiny_tokens(question, 2));
  generate_options g;
  g.max_tokens = gen;
  generate({s.get()}, g);
  return s;
}

// The same tokens, and the same key lists and logits (bit for bit) in every recorded row.
inline void expect_same(const session& a, const session& b) {
  EXPECT_EQ(a.stream().ids, b.stream().ids);
  ASSERT_EQ(a.records().size(), b.records().size());
  for (size_t i = 0; i < a.records().size(); i++) {
    EXPECT_EQ(a.records()[i].keys, b.records()[i].keys) << "row " << a.records()[i].pos;
    EXPECT_EQ(a.records()[i].logits, b.records()[i].logits) << "row " << a.records()[i].pos;
  }
}

}  // namespace gsa::infer::test_runs
