// Attention plans: the causal builder's structure, the pair counts on a hand-computed plan, and the validator
// rejecting each kind of malformed plan with a message that says where.
#include <string>

#include "backend/cpu/attention.h"
#include "core/error.h"
#include "test-util.h"

namespace {

using namespace gsa::cpu;

TEST(AttentionPlan, CausalStructure) {
  // Tq = 5 at q_offset 3, blocks of 2: rows [0,2) [2,4) [4,5) see keys [0, 5) [0, 7) [0, 8).
  attn_plan p = plan_causal(5, 3, 2);
  EXPECT_EQ(p.heads, 1);
  EXPECT_EQ(p.block_q, (std::vector<int32_t>{0, 2, 4, 5}));
  EXPECT_EQ(p.indptr, (std::vector<int64_t>{0, 5, 12, 20}));
  for (int b = 0; b < p.n_blocks(); b++)
    for (int64_t e = p.list_begin(b, 0); e < p.list_end(b, 0); e++)
      EXPECT_EQ(p.indices[e], e - p.list_begin(b, 0));
  EXPECT_NO_THROW(validate_plan(p, 5, 8, 3, 2));
  // Exact pairs: query i sees q_offset + i + 1 keys: 4 + 5 + 6 + 7 + 8 = 30 per KV head.
  EXPECT_EQ(p.attended_pairs(2, 3), 60);
  // Listed pairs: 2*5 + 2*7 + 1*8 = 32 per KV head.
  EXPECT_EQ(p.attended_pairs(2), 64);
  EXPECT_THROW(plan_causal(4, 0, 0), gsa::error);
}

TEST(AttentionPlan, PairsPerHeadLists) {
  attn_plan p;
  p.heads = 2;
  p.block_q = {0, 2, 3};
  // block 0: head 0 {0, 1}, head 1 {1}; block 1: head 0 {}, head 1 {0, 2}.
  p.indptr = {0, 2, 3, 3, 5};
  p.indices = {0, 1, 1, 0, 2};
  EXPECT_NO_THROW(validate_plan(p, 3, 3, 0, 2));
  // q_offset 0: block 0 row 0 sees {0} / {}, row 1 sees {0,1} / {1}; block 1 row 2 sees {} / {0,2}.
  EXPECT_EQ(p.attended_pairs(2, 0), 1 + 0 + 2 + 1 + 0 + 2);
  EXPECT_EQ(p.attended_pairs(2), 2 * 2 + 2 * 1 + 0 + 2);
}

// Expects validate_plan to throw gsa::error whose message contains `needle`.
void expect_rejected(const attn_plan& p, int Tq, int Tk, int q_offset, int Hkv, const std::string& needle) {
  try {
    validate_plan(p, Tq, Tk, q_offset, Hkv);
    ADD_FAILURE() << "plan accepted, expected an error mentioning '" << needle << "'";
  } catch (const gsa::error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(AttentionPlan, ValidatorRejectsMalformedPlans) {
  const attn_plan good = plan_causal(6, 2, 3);  // rows [0,3) keys [0,5); rows [3,6) keys [0,8)
  ASSERT_NO_THROW(validate_plan(good, 6, 8, 2, 2));

  attn_plan p = good;
  p.heads = 3;
  expect_rejected(p, 6, 8, 2, 2, "heads is 3");

  p = good;
  p.block_q = {};
  expect_rejected(p, 6, 8, 2, 2, "block_q is empty");
  p = good;
  p.block_q[0] = 1;
  expect_rejected(p, 6, 8, 2, 2, "block_q[0]");
  p = good;
  expect_rejected(p, 7, 8, 2, 2, "Tq = 7");
  p = good;
  p.block_q = {0, 4, 3, 6};
  p.indptr = {0, 5, 10, 18};
  p.indices.resize(18);
  expect_rejected(p, 6, 8, 2, 2, "block 1");

  p = good;
  p.indptr.push_back(p.indptr.back());
  expect_rejected(p, 6, 8, 2, 2, "indptr has 4 entries");
  p = good;
  p.indptr.back() -= 1;
  expect_rejected(p, 6, 8, 2, 2, "indices has 13 entries");
  p = good;
  p.indptr[1] = 14;
  expect_rejected(p, 6, 8, 2, 2, "block 1 head 0 has indptr [14, 13)");

  p = good;
  p.indices[2] = p.indices[1];  // duplicate
  expect_rejected(p, 6, 8, 2, 2, "strictly ascending");
  p = good;
  std::swap(p.indices[6], p.indices[7]);  // out of order in block 1
  expect_rejected(p, 6, 8, 2, 2, "block 1 head 0");
  p = good;
  p.indices[0] = -1;
  expect_rejected(p, 6, 8, 2, 2, "key -1 outside [0, Tk = 8)");
  // Keys beyond Tk: same plan, fewer keys.
  expect_rejected(good, 6, 7, 2, 2, "key 7 outside [0, Tk = 7)");
  // A key after the block's last query can never be seen: block 0's last query is at position 2 + 2 = 4.
  p = good;
  p.indices[4] = 5;
  expect_rejected(p, 6, 8, 2, 2, "after its last query position 4");

  // Per-KV-head lists must come in Hkv per block.
  p = good;
  p.heads = 2;
  expect_rejected(p, 6, 8, 2, 2, "expected n_blocks * heads + 1 = 5");

  expect_rejected(good, 6, 8, 2, 0, "Hkv must be positive");
}

TEST(AttentionPlan, KernelsValidateTheirPlan) {
  attn_plan p = plan_causal(2, 0, 1);
  p.indices[0] = 5;  // out of range for Tk = 2
  std::vector<float> q(2 * 1 * 4, 0), kv(2 * 1 * 4, 0), out(q.size()), lse(2);
  EXPECT_THROW(attention_forward(out.data(), lse.data(), q.data(), kv.data(), kv.data(), p, 2, 2, 0, 1, 1, 4),
               gsa::error);
  std::vector<float> dq(q.size(), 0);
  EXPECT_THROW(attention_backward(dq.data(), nullptr, nullptr, q.data(), q.data(), kv.data(), kv.data(), out.data(),
                                  lse.data(), p, 2, 2, 0, 1, 1, 4),
               gsa::error);
  // GQA groups must divide evenly.
  EXPECT_THROW(attention_forward(out.data(), lse.data(), q.data(), kv.data(), kv.data(), plan_causal(2, 0, 1), 2, 2,
                                 0, 3, 2, 4),
               gsa::error);
}

}  // namespace
