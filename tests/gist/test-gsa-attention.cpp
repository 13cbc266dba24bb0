// GSA attention end to end on the CPU backend: the plans gist/ builds (compress, and unfold with random
// per-KV-head selections) run through the plan-driven kernels and must equal dense attention under the boolean
// mask written from the visibility functor alone: outputs and dQ/dK/dV, over partial last chunks, g = 1 and 2,
// 1-3 levels and GQA ratios 1/2/4.
#include <algorithm>

#include "backend/cpu/attention.h"
#include "gist/plan.h"
#include "gist/stream.h"
#include "gist/visibility.h"
#include "test-util.h"

namespace gsa::gist {
namespace {

struct shape_case {
  std::vector<int> chunk;
  int g, n_raw, hq, hkv, local, sink;
};

void check(const shape_case& c, bool unfold, uint64_t seed) {
  SCOPED_TRACE(::testing::Message() << "levels " << c.chunk.size() << " c0 " << c.chunk[0] << " g " << c.g << " n "
                                    << c.n_raw << " Hq/Hkv " << c.hq << "/" << c.hkv << " unfold " << unfold);
  gsa_config cfg;
  cfg.chunk = c.chunk;
  cfg.gists_per_chunk = c.g;
  for (size_t l = 0; l < c.chunk.size(); l++) cfg.gist_token_ids.push_back(int32_t(1000 + l));
  cfg.local_chunks = c.local;
  cfg.sink = c.sink;
  std::vector<int32_t> raw(size_t(c.n_raw), 5);
  stream s = build_stream(raw.data(), c.n_raw, cfg);
  const int T = s.size(), D = 16;
  rng r(seed);
  cpu::attn_plan plan = plan_compress(s, cfg);
  // Per (block, KV head) random selections of earlier complete chunks, for the unfold variant.
  std::vector<std::vector<int32_t>> selected;
  if (unfold) {
    for (int b = 0; b < plan.n_blocks(); b++)
      for (int h = 0; h < c.hkv; h++) {
        std::vector<int32_t> sel;
        int chunk = s.chunk[plan.block_q[b]];
        if (s.level[plan.block_q[b]] <= 0)
          for (int m = 0; m < chunk - c.local; m++)
            if (m < complete_chunk_count(s) && r.below(3) == 0) sel.push_back(m);
        selected.push_back(sel);
      }
    std::vector<uint8_t> unfolds(size_t(plan.n_blocks()));
    for (int b = 0; b < plan.n_blocks(); b++) unfolds[b] = s.level[plan.block_q[b]] <= 0;
    plan = plan_unfold(s, cfg, plan, selected, c.hkv, unfolds);
  }
  cpu::validate_plan(plan, T, T, 0, c.hkv);

  auto q = test::randn(size_t(T) * c.hq * D, r), k = test::randn(size_t(T) * c.hkv * D, r),
       v = test::randn(size_t(T) * c.hkv * D, r), dout = test::randn(size_t(T) * c.hq * D, r);
  std::vector<float> out(q.size()), lse(size_t(T) * c.hq), dq(q.size()), dk(k.size()), dv(v.size());
  cpu::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), plan, T, T, 0, c.hq, c.hkv, D);
  cpu::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(), out.data(),
                          lse.data(), plan, T, T, 0, c.hq, c.hkv, D);

  // Dense reference per KV head (selections differ per KV head), mask from the visibility functor only.
  visibility vis(s, cfg);
  const int group = c.hq / c.hkv;
  std::vector<float> ref_out(q.size()), ref_lse(lse.size()), ref_dq(q.size()), ref_dk(k.size()), ref_dv(v.size());
  for (int h = 0; h < c.hkv; h++) {
    std::vector<uint8_t> mask(size_t(T) * T);
    for (int i = 0; i < T; i++) {
      int b = int(std::upper_bound(plan.block_q.begin(), plan.block_q.end(), i) - plan.block_q.begin()) - 1;
      std::vector<int32_t> sel;
      if (unfold) {
        sel = selected[size_t(b) * c.hkv + h];
        std::sort(sel.begin(), sel.end());
      }
      for (int j = 0; j <= i; j++) mask[size_t(i) * T + j] = unfold ? vis(i, j, sel) : vis(i, j);
    }
    // Slice this KV head's query heads and K/V into contiguous (T, group, D) / (T, 1, D) tensors.
    std::vector<float> qs(size_t(T) * group * D), ks(size_t(T) * D), vs(size_t(T) * D), ds(qs.size());
    for (int t = 0; t < T; t++) {
      std::copy_n(&q[(size_t(t) * c.hq + h * group) * D], group * D, &qs[size_t(t) * group * D]);
      std::copy_n(&dout[(size_t(t) * c.hq + h * group) * D], group * D, &ds[size_t(t) * group * D]);
      std::copy_n(&k[(size_t(t) * c.hkv + h) * D], D, &ks[size_t(t) * D]);
      std::copy_n(&v[(size_t(t) * c.hkv + h) * D], D, &vs[size_t(t) * D]);
    }
    std::vector<float> o(qs.size()), l(size_t(T) * group), gq(qs.size()), gk(ks.size()), gv(vs.size());
    cpu::attention_dense_forward(o.data(), l.data(), qs.data(), ks.data(), vs.data(), mask.data(), T, T, group, 1, D);
    cpu::attention_dense_backward(gq.data(), gk.data(), gv.data(), ds.data(), qs.data(), ks.data(), vs.data(),
                                  o.data(), l.data(), mask.data(), T, T, group, 1, D);
    for (int t = 0; t < T; t++) {
      std::copy_n(&o[size_t(t) * group * D], group * D, &ref_out[(size_t(t) * c.hq + h * group) * D]);
      std::copy_n(&gq[size_t(t) * group * D], group * D, &ref_dq[(size_t(t) * c.hq + h * group) * D]);
      std::copy_n(&l[size_t(t) * group], group, &ref_lse[size_t(t) * c.hq + h * group]);
      std::copy_n(&gk[size_t(t) * D], D, &ref_dk[(size_t(t) * c.hkv + h) * D]);
      std::copy_n(&gv[size_t(t) * D], D, &ref_dv[(size_t(t) * c.hkv + h) * D]);
    }
  }
  EXPECT_LT(test::max_rel_err(out, ref_out), 1e-5);
  EXPECT_LT(test::max_rel_err(lse, ref_lse), 1e-5);
  EXPECT_LT(test::max_rel_err(dq, ref_dq), 1e-5);
  EXPECT_LT(test::max_rel_err(dk, ref_dk), 1e-5);
  EXPECT_LT(test::max_rel_err(dv, ref_dv), 1e-5);
  // Sparse: strictly fewer pairs than causal once there is history beyond the window.
  EXPECT_LT(cpu::attended_pairs(plan, c.hkv, 0), int64_t(T) * (T + 1) / 2 * c.hkv);
}

TEST(GsaAttention, PlansThroughKernelsEqualDenseUnderTheVisibilityMask) {
  const shape_case cases[] = {
      {{3}, 1, 37, 4, 4, 1, 3},        // c = 3, partial last chunk, MHA
      {{4}, 2, 50, 4, 2, 1, 0},        // g = 2, GQA 2, no sink
      {{8}, 1, 101, 8, 2, 0, 3},       // GQA 4, no local window
      {{2, 2}, 1, 45, 4, 2, 1, 3},     // 2 levels 2x2
      {{4, 2}, 2, 70, 4, 1, 2, 1},     // 2 levels, g = 2, GQA 4, local 2
      {{2, 2, 2}, 1, 61, 2, 1, 1, 3},  // 3 levels
  };
  uint64_t seed = 1;
  for (const auto& c : cases) {
    check(c, false, seed++);
    check(c, true, seed++);
  }
}

}  // namespace
}  // namespace gsa::gist
