// Plan-driven attention vs the dense reference with a mask built here, independently, from the plan:
// mask[i][j] = (j in the list of i's block for that KV head) && j <= q_offset + i. Covers random plans (shared
// and per-KV-head lists; range and gist-unit segments in shuffled order, g = 1 and 2), causal plans, decode-like
// single-row blocks, GQA ratios 1/2/4, D in {8, 16, 64}, partial final blocks, rows with no visible key,
// 1/2/3 threads (both backward scatter strategies), accumulation and nullptr gradient outputs.
#include <fmt/format.h>
#include <omp.h>

#include <cmath>
#include <vector>

#include "backend/cpu/attention.h"
#include "backend/plan-test-util.h"
#include "test-util.h"

namespace {

using namespace gsa;
using namespace gsa::cpu;

struct shape {
  int Tq, Tk, q_offset, Hq, Hkv, D;
};

attn_plan random_plan(rng& r, const shape& s, int heads, int max_block, float density) {
  return test::random_segment_plan(r, s.Tq, s.Tk, s.q_offset, heads, max_block, density);
}

// The dense mask for KV head hk, from the plan's lists (each segment's keys) and the causal rule.
std::vector<uint8_t> mask_from_plan(const attn_plan& p, const shape& s, int hk) {
  std::vector<uint8_t> m(size_t(s.Tq) * s.Tk, 0);
  for (int b = 0; b < p.n_blocks(); b++)
    p.for_each_key(b, hk, [&](int32_t j) {
      for (int i = p.block_q[b]; i < p.block_q[b + 1]; i++)
        if (j <= s.q_offset + i) m[size_t(i) * s.Tk + j] = 1;
    });
  return m;
}

struct grads {
  std::vector<float> out, lse, dq, dk, dv;
};

// Dense reference, run per KV head group so that per-head masks are honoured.
grads dense_reference(const attn_plan& p, const shape& s, const std::vector<float>& q, const std::vector<float>& k,
                      const std::vector<float>& v, const std::vector<float>& dout) {
  const int G = s.Hq / s.Hkv, D = s.D;
  grads r;
  r.out.assign(size_t(s.Tq) * s.Hq * D, 0);
  r.lse.assign(size_t(s.Tq) * s.Hq, 0);
  r.dq.assign(r.out.size(), 0);
  r.dk.assign(size_t(s.Tk) * s.Hkv * D, 0);
  r.dv.assign(r.dk.size(), 0);
  for (int hk = 0; hk < s.Hkv; hk++) {
    auto mask = mask_from_plan(p, s, hk);
    // Slice the group's query heads and the KV head out.
    std::vector<float> qg(size_t(s.Tq) * G * D), dog(qg.size()), kg(size_t(s.Tk) * D), vg(kg.size());
    for (int i = 0; i < s.Tq; i++)
      for (int g = 0; g < G; g++)
        for (int d = 0; d < D; d++) {
          qg[(size_t(i) * G + g) * D + d] = q[(size_t(i) * s.Hq + hk * G + g) * D + d];
          dog[(size_t(i) * G + g) * D + d] = dout[(size_t(i) * s.Hq + hk * G + g) * D + d];
        }
    for (int j = 0; j < s.Tk; j++)
      for (int d = 0; d < D; d++) {
        kg[size_t(j) * D + d] = k[(size_t(j) * s.Hkv + hk) * D + d];
        vg[size_t(j) * D + d] = v[(size_t(j) * s.Hkv + hk) * D + d];
      }
    std::vector<float> og(qg.size()), lg(size_t(s.Tq) * G), dqg(qg.size(), 0), dkg(kg.size(), 0), dvg(kg.size(), 0);
    attention_dense_forward(og.data(), lg.data(), qg.data(), kg.data(), vg.data(), mask.data(), s.Tq, s.Tk, G, 1, D);
    attention_dense_backward(dqg.data(), dkg.data(), dvg.data(), dog.data(), qg.data(), kg.data(), vg.data(),
                             og.data(), lg.data(), mask.data(), s.Tq, s.Tk, G, 1, D);
    for (int i = 0; i < s.Tq; i++)
      for (int g = 0; g < G; g++) {
        r.lse[size_t(i) * s.Hq + hk * G + g] = lg[size_t(i) * G + g];
        for (int d = 0; d < D; d++) {
          r.out[(size_t(i) * s.Hq + hk * G + g) * D + d] = og[(size_t(i) * G + g) * D + d];
          r.dq[(size_t(i) * s.Hq + hk * G + g) * D + d] = dqg[(size_t(i) * G + g) * D + d];
        }
      }
    for (int j = 0; j < s.Tk; j++)
      for (int d = 0; d < D; d++) {
        r.dk[(size_t(j) * s.Hkv + hk) * D + d] = dkg[size_t(j) * D + d];
        r.dv[(size_t(j) * s.Hkv + hk) * D + d] = dvg[size_t(j) * D + d];
      }
  }
  return r;
}

// max |a - ref| relative to max |ref|. A reference that is exactly 0 everywhere (say dq when every row sees
// one key at most: a softmax over one key does not depend on q) is compared absolutely instead, since float
// rounding leaves ~1e-7 there that no relative bound can accept.
double rel_err(const std::vector<float>& a, const std::vector<float>& ref) {
  EXPECT_EQ(a.size(), ref.size());
  double num = 0, scale = 0;
  for (size_t e = 0; e < std::min(a.size(), ref.size()); e++) {
    num = std::max(num, std::fabs(double(a[e]) - ref[e]));
    scale = std::max(scale, std::fabs(double(ref[e])));
  }
  return scale > 0 ? num / scale : num;
}

void expect_lse_eq(const std::vector<float>& a, const std::vector<float>& ref, const std::string& what) {
  ASSERT_EQ(a.size(), ref.size());
  double err = 0;
  for (size_t e = 0; e < a.size(); e++) {
    if (std::isinf(ref[e])) {
      ASSERT_TRUE(std::isinf(a[e]) && a[e] < 0) << what << ": lse[" << e << "] = " << a[e] << ", expected -inf";
    } else {
      ASSERT_TRUE(std::isfinite(a[e])) << what << ": lse[" << e << "] = " << a[e];
      err = std::max(err, std::fabs(double(a[e]) - ref[e]) / std::max(1.0, std::fabs(double(ref[e]))));
    }
  }
  EXPECT_LT(err, 1e-5) << what;
}

// Runs the plan kernels and the dense reference on random data and compares everything.
void check_plan(const attn_plan& p, const shape& s, uint64_t seed, const std::string& what) {
  SCOPED_TRACE(what);
  validate_plan(p, s.Tq, s.Tk, s.q_offset, s.Hkv);
  rng r(seed);
  auto q = test::randn(size_t(s.Tq) * s.Hq * s.D, r), k = test::randn(size_t(s.Tk) * s.Hkv * s.D, r);
  auto v = test::randn(size_t(s.Tk) * s.Hkv * s.D, r), dout = test::randn(q.size(), r);
  grads ref = dense_reference(p, s, q, k, v, dout);

  std::vector<float> out(q.size(), 7.0f), lse(size_t(s.Tq) * s.Hq, 7.0f);  // garbage: forward overwrites
  attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), p, s.Tq, s.Tk, s.q_offset, s.Hq, s.Hkv,
                    s.D);
  EXPECT_LT(rel_err(out, ref.out), 1e-5) << what << " out";
  expect_lse_eq(lse, ref.lse, what);

  std::vector<float> dq(q.size(), 0), dk(k.size(), 0), dv(v.size(), 0);
  attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(), out.data(),
                     lse.data(), p, s.Tq, s.Tk, s.q_offset, s.Hq, s.Hkv, s.D);
  EXPECT_LT(rel_err(dq, ref.dq), 1e-5) << what << " dq";
  EXPECT_LT(rel_err(dk, ref.dk), 1e-5) << what << " dk";
  EXPECT_LT(rel_err(dv, ref.dv), 1e-5) << what << " dv";
}

const int kGqa[][2] = {{2, 2}, {4, 2}, {4, 1}, {8, 2}};  // (Hq, Hkv): ratios 1, 2, 4, 4
const int kDims[] = {8, 16, 64};

TEST(Attention, RandomPlansMatchDense) {
  rng r(21);
  int n = 0;
  for (int D : kDims)
    for (auto [Hq, Hkv] : kGqa)
      for (int heads : {1, Hkv})
        for (float density : {0.15f, 0.6f, 1.0f}) {
          shape s{int(20 + r.below(30)), 0, int(r.below(3)) * 7, Hq, Hkv, D};
          s.Tk = s.q_offset + s.Tq + int(r.below(4));  // sometimes keys beyond the last query (never visible)
          const int max_block = 1 + int(r.below(9));
          auto p = random_plan(r, s, heads, max_block, density);
          check_plan(p, s, 100 + n++,
                     fmt::format("random D={} Hq={} Hkv={} heads={} density={} Tq={} q_offset={} max_block={}", D, Hq,
                                 Hkv, heads, density, s.Tq, s.q_offset, max_block));
        }
}

TEST(Attention, CausalPlansMatchDense) {
  int n = 0;
  for (int D : kDims)
    for (auto [Hq, Hkv] : kGqa)
      for (int block : {1, 5, 16, 64}) {
        shape s{37, 37, 0, Hq, Hkv, D};  // 37 = partial final block for every block size above
        check_plan(plan_causal(s.Tq, 0, block), s, 200 + n++,
                   fmt::format("causal D={} Hq={} Hkv={} block={}", D, Hq, Hkv, block));
      }
}

TEST(Attention, DecodeLikeBlocksMatchDense) {
  // Few queries after a long prefix (q_offset > 0, Tq < Tk), one row per block, as in decode or suffix prefill.
  rng r(31);
  int n = 0;
  for (int D : kDims)
    for (auto [Hq, Hkv] : kGqa) {
      shape s{3, 60, 57, Hq, Hkv, D};
      check_plan(plan_causal(s.Tq, s.q_offset, 1), s, 300 + n++,
                 fmt::format("decode causal D={} Hq={} Hkv={}", D, Hq, Hkv));
      for (int heads : {1, Hkv})
        check_plan(random_plan(r, s, heads, 1, 0.3f), s, 300 + n++,
                   fmt::format("decode random D={} Hq={} Hkv={} heads={}", D, Hq, Hkv, heads));
    }
}

TEST(Attention, BothScatterStrategiesAndThreadCounts) {
  // Hkv % threads == 0 scatters directly per KV head, otherwise through per-thread buffers: cover both.
  const int saved = omp_get_max_threads();
  rng r(41);
  int n = 0;
  for (int threads : {1, 2, 3})
    for (auto [Hq, Hkv] : kGqa)
      for (int heads : {1, Hkv}) {
        omp_set_num_threads(threads);
        shape s{80, 85, 5, Hq, Hkv, 64};
        auto p = random_plan(r, s, heads, 6, 0.8f);
        // The kernels run calls under 2^18 multiply-adds on one thread; this one must get a team.
        ASSERT_GT(double(attended_pairs(p, Hkv)) * (Hq / Hkv) * s.D, double(1 << 18));
        check_plan(p, s, 400 + n++,
                   fmt::format("threads={} Hq={} Hkv={} heads={}", threads, Hq, Hkv, heads));
      }
  omp_set_num_threads(saved);
}

TEST(Attention, BackwardAccumulatesAndAcceptsNullptr) {
  rng r(51);
  const shape s{60, 64, 4, 4, 2, 64};
  auto p = random_plan(r, s, 2, 4, 0.9f);
  ASSERT_GT(double(attended_pairs(p, s.Hkv)) * (s.Hq / s.Hkv) * s.D, double(1 << 18));  // threaded (see above)
  auto q = test::randn(size_t(s.Tq) * s.Hq * s.D, r), k = test::randn(size_t(s.Tk) * s.Hkv * s.D, r);
  auto v = test::randn(size_t(s.Tk) * s.Hkv * s.D, r), dout = test::randn(q.size(), r);
  grads ref = dense_reference(p, s, q, k, v, dout);
  std::vector<float> out(q.size()), lse(size_t(s.Tq) * s.Hq);
  attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), p, s.Tq, s.Tk, s.q_offset, s.Hq, s.Hkv,
                    s.D);

  auto base_q = test::randn(q.size(), r), base_k = test::randn(k.size(), r), base_v = test::randn(v.size(), r);
  auto plus = [](std::vector<float> a, const std::vector<float>& b) {
    for (size_t e = 0; e < a.size(); e++) a[e] += b[e];
    return a;
  };
  for (int threads : {1, 3}) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    std::vector<float> dq = base_q, dk = base_k, dv = base_v;
    attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(), out.data(),
                       lse.data(), p, s.Tq, s.Tk, s.q_offset, s.Hq, s.Hkv, s.D);
    EXPECT_LT(test::max_rel_err(dq, plus(base_q, ref.dq)), 1e-5);
    EXPECT_LT(test::max_rel_err(dk, plus(base_k, ref.dk)), 1e-5);
    EXPECT_LT(test::max_rel_err(dv, plus(base_v, ref.dv)), 1e-5);

    // Each output alone, the others nullptr.
    std::vector<float> only(q.size(), 0);
    attention_backward(only.data(), nullptr, nullptr, dout.data(), q.data(), k.data(), v.data(), out.data(),
                       lse.data(), p, s.Tq, s.Tk, s.q_offset, s.Hq, s.Hkv, s.D);
    EXPECT_LT(rel_err(only, ref.dq), 1e-5);
    only.assign(k.size(), 0);
    attention_backward(nullptr, only.data(), nullptr, dout.data(), q.data(), k.data(), v.data(), out.data(),
                       lse.data(), p, s.Tq, s.Tk, s.q_offset, s.Hq, s.Hkv, s.D);
    EXPECT_LT(rel_err(only, ref.dk), 1e-5);
    only.assign(v.size(), 0);
    attention_backward(nullptr, nullptr, only.data(), dout.data(), q.data(), k.data(), v.data(), out.data(),
                       lse.data(), p, s.Tq, s.Tk, s.q_offset, s.Hq, s.Hkv, s.D);
    EXPECT_LT(rel_err(only, ref.dv), 1e-5);
    omp_set_num_threads(saved);
  }
}

TEST(Attention, HandComputedCase) {
  // One query at position 1 over keys {0, 1}: scores 0 and ln 3, p = (1/4, 3/4), lse = ln 4.
  const int D = 2;
  const float s2 = std::sqrt(2.0f);
  std::vector<float> q = {1, 0}, k = {0, 0, s2 * std::log(3.0f), 0}, v = {4, 0, 0, 8};
  std::vector<float> out(D), lse(1);
  attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), plan_causal(1, 1, 1), 1, 2, 1, 1, 1, D);
  EXPECT_NEAR(out[0], 1.0f, 1e-6);
  EXPECT_NEAR(out[1], 6.0f, 1e-6);
  EXPECT_NEAR(lse[0], std::log(4.0f), 1e-6);
  // At q_offset 0 the query sits at position 0 and its causal list holds key 0 only: out = v0, lse = 0.
  attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), plan_causal(1, 0, 1), 1, 2, 0, 1, 1, D);
  EXPECT_EQ(out[0], 4.0f);
  EXPECT_EQ(out[1], 0.0f);
  EXPECT_EQ(lse[0], 0.0f);
}

}  // namespace
