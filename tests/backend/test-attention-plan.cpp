// Attention plans: the causal builder's structure, the pair counts on hand-computed plans and against key-by-key
// counting on random segment plans, list expansion, and the validator rejecting each kind of malformed plan with
// a message that says where.
#include <numeric>
#include <string>

#include "backend/cpu/attention.h"
#include "backend/plan-test-util.h"
#include "core/error.h"
#include "test-util.h"

namespace {

using namespace gsa::cpu;

TEST(AttentionPlan, CausalStructure) {
  // Tq = 5 at q_offset 3, blocks of 2: rows [0,2) [2,4) [4,5) see keys [0, 5) [0, 7) [0, 8): one range each.
  attn_plan p = plan_causal(5, 3, 2);
  EXPECT_EQ(p.heads, 1);
  EXPECT_EQ(p.block_q, (std::vector<int32_t>{0, 2, 4, 5}));
  EXPECT_EQ(p.seg_ptr, (std::vector<int64_t>{0, 1, 2, 3}));
  const int ends[] = {5, 7, 8};
  std::vector<int32_t> keys;
  for (int b = 0; b < p.n_blocks(); b++) {
    EXPECT_EQ(p.segs[b].level, -1);
    EXPECT_EQ(p.segs[b].begin, 0);
    EXPECT_EQ(p.segs[b].end, ends[b]);
    p.list_keys(b, 0, keys);
    std::vector<int32_t> want(static_cast<size_t>(ends[b]));  // not size_t(ends[b]): clang parses a declaration
    std::iota(want.begin(), want.end(), 0);
    EXPECT_EQ(keys, want);
  }
  EXPECT_NO_THROW(validate_plan(p, 5, 8, 3, 2));
  // Exact pairs: query i sees q_offset + i + 1 keys: 4 + 5 + 6 + 7 + 8 = 30 per KV head.
  EXPECT_EQ(attended_pairs(p, 2, 3), 60);
  // Listed pairs: 2*5 + 2*7 + 1*8 = 32 per KV head.
  EXPECT_EQ(attended_pairs(p, 2), 64);
  EXPECT_EQ(p.bytes(), 4 * 4 + 4 * 8 + 3 * 16u);
  EXPECT_THROW(plan_causal(4, 0, 0), gsa::error);
}

TEST(AttentionPlan, PairsPerHeadLists) {
  attn_plan p;
  p.heads = 2;
  p.block_q = {0, 2, 3};
  p.seg_ptr = {0};
  // block 0: head 0 {0, 1}, head 1 {1}; block 1: head 0 {}, head 1 {0, 2}.
  plan_push_keys(p, {0, 1});
  plan_push_keys(p, {1});
  plan_push_keys(p, {});
  plan_push_keys(p, {0, 2});
  EXPECT_EQ(p.seg_ptr, (std::vector<int64_t>{0, 1, 2, 2, 4}));
  EXPECT_NO_THROW(validate_plan(p, 3, 3, 0, 2));
  // q_offset 0: block 0 row 0 sees {0} / {}, row 1 sees {0,1} / {1}; block 1 row 2 sees {} / {0,2}.
  EXPECT_EQ(attended_pairs(p, 2, 0), 1 + 0 + 2 + 1 + 0 + 2);
  EXPECT_EQ(attended_pairs(p, 2), 2 * 2 + 2 * 1 + 0 + 2);
}

TEST(AttentionPlan, GistUnitsAndPartialUnits) {
  // g = 2, level 0 units at 1 and 4: gist_units(0, 0, 2) names keys {1, 2, 4, 5}. One block of rows [0, 6).
  attn_plan p;
  p.gists_per_unit = 2;
  p.gist_ptr = {0, 2};
  p.gist_pos = {1, 4};
  p.block_q = {0, 6};
  p.segs = {gist_units(0, 0, 2), key_range(0, 1)};
  p.seg_ptr = {0, 2};
  ASSERT_NO_THROW(validate_plan(p, 6, 6, 0, 1));
  std::vector<int32_t> keys;
  p.list_keys(0, 0, keys);
  EXPECT_EQ(keys, (std::vector<int32_t>{0, 1, 2, 4, 5}));
  // Row i sees the keys <= i: 1, 2, 3, 3, 4, 5 (a unit cut in two at rows 1 and 4).
  EXPECT_EQ(attended_pairs(p, 1, 0), 18);
  EXPECT_EQ(attended_pairs(p, 1), 30);
  // At q_offset 1 every row sees one key more, up to the 5 listed.
  EXPECT_EQ(attended_pairs(p, 1, 1), 2 + 3 + 3 + 4 + 5 + 5);
}

TEST(AttentionPlan, PushKeysMakesRuns) {
  attn_plan p;
  p.seg_ptr = {0};
  plan_push_keys(p, {0, 1, 2, 5, 7, 8});
  ASSERT_EQ(p.segs.size(), 3u);
  EXPECT_EQ(p.segs[0].begin, 0);
  EXPECT_EQ(p.segs[0].end, 3);
  EXPECT_EQ(p.segs[1].begin, 5);
  EXPECT_EQ(p.segs[1].end, 6);
  EXPECT_EQ(p.segs[2].begin, 7);
  EXPECT_EQ(p.segs[2].end, 9);
  EXPECT_EQ(p.seg_ptr, (std::vector<int64_t>{0, 3}));
}

// Random segment plans (ranges and gist units, shuffled): expand_list gives the sorted keys, and the pair
// counts (computed from segments) equal counting the expanded keys one by one.
TEST(AttentionPlan, ExpansionAndPairsMatchKeyByKey) {
  gsa::rng r(5);
  std::vector<int32_t> keys, tmp, sorted;
  for (int it = 0; it < 60; it++) {
    const int Tq = 1 + int(r.below(40)), q_offset = int(r.below(3)) * 5, heads = 1 + int(r.below(2));
    const int Tk = q_offset + Tq + int(r.below(3));
    attn_plan p = gsa::test::random_segment_plan(r, Tq, Tk, q_offset, heads, 1 + int(r.below(8)),
                                                 r.uniform() < 0.5f ? 0.3f : 0.9f);
    ASSERT_NO_THROW(validate_plan(p, Tq, Tk, q_offset, heads));
    int64_t exact = 0, listed = 0;
    for (int b = 0; b < p.n_blocks(); b++)
      for (int h = 0; h < heads; h++) {
        expand_list(p, b, h, keys, tmp);
        p.list_keys(b, h, sorted);
        ASSERT_EQ(keys, sorted) << "block " << b << " head " << h;
        ASSERT_TRUE(std::adjacent_find(keys.begin(), keys.end(), std::greater_equal<int32_t>()) == keys.end());
        for (int i = p.block_q[b]; i < p.block_q[b + 1]; i++) {
          listed += int64_t(keys.size());
          for (int32_t j : keys) exact += j <= q_offset + i;
        }
      }
    EXPECT_EQ(attended_pairs(p, 2, q_offset), heads == 1 ? 2 * exact : exact);
    EXPECT_EQ(attended_pairs(p, 2), heads == 1 ? 2 * listed : listed);
  }
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

TEST(AttentionPlan, ValidatorRejectsMalformedStructure) {
  const attn_plan good = plan_causal(6, 2, 3);  // rows [0,3) keys [0,5); rows [3,6) keys [0,8)
  ASSERT_NO_THROW(validate_plan(good, 6, 8, 2, 2));

  attn_plan p = good;
  p.heads = 3;
  expect_rejected(p, 6, 8, 2, 2, "heads is 3");
  p = good;
  p.gists_per_unit = 0;
  expect_rejected(p, 6, 8, 2, 2, "gists_per_unit is 0");

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
  p.seg_ptr = {0, 1, 2, 3};
  p.segs.resize(3, key_range(0, 1));
  expect_rejected(p, 6, 8, 2, 2, "block 1");

  p = good;
  p.seg_ptr.push_back(p.seg_ptr.back());
  expect_rejected(p, 6, 8, 2, 2, "seg_ptr has 4 entries");
  p = good;
  p.seg_ptr.back() -= 1;
  expect_rejected(p, 6, 8, 2, 2, "segs has 2 entries");
  p = good;
  p.segs = {key_range(0, 5), key_range(0, 3), key_range(3, 8)};
  p.seg_ptr = {0, 4, 3};
  expect_rejected(p, 6, 8, 2, 2, "block 1 head 0 has seg_ptr [4, 3)");

  // Per-KV-head lists must come in Hkv per block.
  p = good;
  p.heads = 2;
  expect_rejected(p, 6, 8, 2, 2, "expected n_blocks * heads + 1 = 5");
  expect_rejected(good, 6, 8, 2, 0, "Hkv must be positive");
}

TEST(AttentionPlan, ValidatorRejectsBadSegmentsAndKeys) {
  const attn_plan good = plan_causal(6, 2, 3);
  attn_plan p = good;
  p.segs = {key_range(0, 5), key_range(5, 8), key_range(0, 5)};
  p.seg_ptr = {0, 1, 3};
  ASSERT_NO_THROW(validate_plan(p, 6, 8, 2, 2));  // the order within a list is free, overlap is not:
  p.segs[1] = key_range(4, 8);
  expect_rejected(p, 6, 8, 2, 2, "block 1 head 0 lists key 4 twice");

  p = good;
  p.segs[0] = key_range(-1, 5);
  expect_rejected(p, 6, 8, 2, 2, "key -1 outside [0, Tk = 8)");
  // Keys beyond Tk: same plan, fewer keys.
  expect_rejected(good, 6, 7, 2, 2, "key 7 outside [0, Tk = 7)");
  // A key after the block's last query can never be seen: block 0's last query is at position 2 + 2 = 4.
  p = good;
  p.segs[0] = key_range(0, 6);
  expect_rejected(p, 6, 8, 2, 2, "key 5 after its last query position 4");
  p = good;
  p.segs[0] = key_range(3, 2);
  expect_rejected(p, 6, 8, 2, 2, "begin must not pass end");
  p = good;
  p.segs[0].level = -2;
  expect_rejected(p, 6, 8, 2, 2, "has level -2");
  p = good;
  p.segs[0] = gist_units(0, 0, 1);
  expect_rejected(p, 6, 8, 2, 2, "names gist level 0 but the gist table has 0 levels");
}

TEST(AttentionPlan, ValidatorChecksTheGistTable) {
  // Level 0 units at 2 and 4 (g = 1); block 0 (last query 4) sees [0, 2) and both gists.
  attn_plan good = plan_causal(6, 2, 3);
  good.gist_ptr = {0, 2};
  good.gist_pos = {2, 4};
  good.segs[0] = gist_units(0, 0, 2);
  good.segs.insert(good.segs.begin(), key_range(0, 2));
  good.seg_ptr = {0, 2, 3};
  ASSERT_NO_THROW(validate_plan(good, 6, 8, 2, 2));

  attn_plan p = good;
  p.segs[1] = gist_units(0, 0, 3);
  expect_rejected(p, 6, 8, 2, 2, "outside the table's 2 units");
  p = good;
  p.segs[0] = key_range(0, 3);  // key 2 again, as a range
  expect_rejected(p, 6, 8, 2, 2, "block 0 head 0 lists key 2 twice");
  p = good;
  p.gist_pos = {2, 5};  // the second unit's gist is after block 0's last query
  expect_rejected(p, 6, 8, 2, 2, "key 5 after its last query position 4");
  p = good;
  p.gist_pos = {4, 2};
  expect_rejected(p, 6, 8, 2, 2, "gist table level 0 unit 1");
  p = good;
  p.gists_per_unit = 2;
  p.gist_pos = {2, 3};  // units {2, 3} and {3, 4} overlap
  expect_rejected(p, 6, 8, 2, 2, "ascend by at least gists_per_unit = 2");
  p = good;
  p.gist_ptr = {0, 1};
  expect_rejected(p, 6, 8, 2, 2, "gist_ptr ends at 1 but gist_pos has 2 entries");
  p = good;
  p.gist_ptr = {};
  expect_rejected(p, 6, 8, 2, 2, "gist_ptr is empty");
}

TEST(AttentionPlan, KernelsValidateTheirPlan) {
  attn_plan p = plan_causal(2, 0, 1);
  p.segs[0] = key_range(5, 6);  // out of range for Tk = 2
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
