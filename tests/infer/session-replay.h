// Shared by the decode tests: the plans that replay a recording session's visibility in one forward pass (the
// prefill's plan for the context rows, then one-row blocks holding each decoded row's recorded key lists).
#pragma once
#include <vector>

#include <gtest/gtest.h>

#include "backend/cpu/attention.h"
#include "infer/session.h"

namespace gsa::infer::test_replay {

inline std::vector<cpu::attn_plan> recorded_plans(const llama_model& m, const session& s) {
  const int L = int(m.config.num_hidden_layers), Hkv = int(m.config.num_key_value_heads);
  std::vector<cpu::attn_plan> plans(L);
  for (int l = 0; l < L; l++) {
    const cpu::attn_plan& pre = s.prefill_plans().at(size_t(l));
    cpu::attn_plan& p = plans[l];
    p.heads = Hkv;
    p.gists_per_unit = pre.gists_per_unit;
    p.gist_ptr = pre.gist_ptr;
    p.gist_pos = pre.gist_pos;
    p.block_q = {0};
    p.seg_ptr = {0};
    for (int b = 0; b < pre.n_blocks(); b++) {
      p.block_q.push_back(pre.block_q[b + 1]);
      for (int h = 0; h < Hkv; h++) {
        p.segs.insert(p.segs.end(), pre.segs.begin() + pre.seg_begin(b, h), pre.segs.begin() + pre.seg_end(b, h));
        p.seg_ptr.push_back(int64_t(p.segs.size()));
      }
    }
    for (const auto& r : s.records()) {
      EXPECT_EQ(p.block_q.back(), r.pos);
      p.block_q.push_back(r.pos + 1);
      for (int h = 0; h < Hkv; h++) {
        const auto& k = r.keys[size_t(l) * Hkv + h];
        EXPECT_EQ(k.back(), r.pos) << "a row always sees itself";
        cpu::plan_push_keys(p, k);
      }
    }
  }
  return plans;
}

}  // namespace gsa::infer::test_replay
