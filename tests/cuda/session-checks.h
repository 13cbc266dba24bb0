// Shared by the GPU session tests (test-session-cuda.cpp, test-extend-cuda.cpp): a GPU run against the CPU run of
// the same session.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "infer/session.h"
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

}  // namespace gsa::infer
