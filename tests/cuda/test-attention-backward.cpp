// Tests of the backward of gsa::cuda plan-driven attention beyond the dense-reference matrix of
// test-attention.cpp: bit-exact runs (deterministic mode), the key-major dK / dV scheme against the atomic one,
// the fixed-point range check, and the row unfold's overlay kernels. Helpers: attention-test-util.h.
#include "attention-test-util.h"

namespace gsa::cuda {
namespace {

using namespace attn_test;


// Forward once, then the backward `reps` times from the same pre-filled dq / dk / dv; the raw bytes of dq, dk
// and dv of each run (concatenated), and the last run's dk and dv as floats in *dk_dv.
std::vector<std::vector<unsigned char>> backward_runs(const attn_case& c, const attn_plan& plan, bool generic,
                                                      int reps, float dout_amp, std::vector<float>* dk_dv) {
  std::mt19937_64 rng(c.seed);
  const int Hq = c.G * c.Hkv, D = c.D;
  const size_t nq = size_t(c.Tq) * Hq * D, nkv = size_t(c.Tk) * c.Hkv * D, es = dtype_size(c.t);
  device_plan dp = upload_plan(plan, c.Tq, c.Tk, c.q_offset, c.Hkv);
  if (generic) dp.structured = false;
  dev_buf dq_(nq * es), dk_(nkv * es), dv_(nkv * es), q_(nq * es), k_(nkv * es), v_(nkv * es), out_(nq * es),
      dout_(nq * es), lse_(size_t(c.Tq) * Hq * 4);
  upload(q_, random_values(rng, nq, 3.f, c.t), c.t);
  upload(k_, random_values(rng, nkv, 1.f, c.t), c.t);
  upload(v_, random_values(rng, nkv, 1.f, c.t), c.t);
  upload(dout_, random_values(rng, nq, dout_amp, c.t), c.t);
  const auto dq0 = random_values(rng, nq, 0.1f, c.t), dk0 = random_values(rng, nkv, 0.1f, c.t),
             dv0 = random_values(rng, nkv, 0.1f, c.t);
  attention_forward(out_.p, static_cast<float*>(lse_.p), q_.p, k_.p, v_.p, dp, c.Tq, c.Tk, c.q_offset, Hq, c.Hkv,
                    D, c.t);
  std::vector<std::vector<unsigned char>> runs;
  for (int r = 0; r < reps; r++) {
    upload(dq_, dq0, c.t);
    upload(dk_, dk0, c.t);
    upload(dv_, dv0, c.t);
    attention_backward(dq_.p, dk_.p, dv_.p, dout_.p, q_.p, k_.p, v_.p, out_.p, static_cast<const float*>(lse_.p),
                       dp, c.Tq, c.Tk, c.q_offset, Hq, c.Hkv, D, c.t);
    std::vector<unsigned char> bytes((nq + 2 * nkv) * es);
    copy_d2h(bytes.data(), dq_.p, nq * es);
    copy_d2h(bytes.data() + nq * es, dk_.p, nkv * es);
    copy_d2h(bytes.data() + (nq + nkv) * es, dv_.p, nkv * es);
    runs.push_back(std::move(bytes));
  }
  if (dk_dv) {
    *dk_dv = download(dk_, nkv, c.t);
    const auto dv = download(dv_, nkv, c.t);
    dk_dv->insert(dk_dv->end(), dv.begin(), dv.end());
  }
  return runs;
}

// A long compress plan (c 64, g 4: every gist key is seen by hundreds of row tiles, each adding its partial).
attn_plan long_compress_plan(attn_case& c, int raw) {
  gist::gsa_config cfg;
  cfg.chunk = {64};
  cfg.gists_per_chunk = 4;
  cfg.gist_token_ids = {1};
  cfg.validate();
  const std::vector<int32_t> ids(size_t(raw), 7);
  const gist::stream st = gist::build_stream(ids.data(), raw, cfg);
  c.g = 4;
  c.Tq = c.Tk = st.size();
  c.q_offset = 0;
  return gist::plan_compress(st, cfg);
}

TEST(CudaAttentionDeterminism, BackwardIsTheSameBitsOnEveryRun) {
  std::string why;
  if (!gsa::cuda::available(&why)) GTEST_SKIP() << why;
  restore_mode keep;
  set_deterministic_backward(true);
  struct run {
    const char* name;
    attn_case c;
    bool generic;
  };
  std::vector<run> runs;
  attn_case s;  // structured bf16 tensor-core path
  s.t = dtype::bf16;
  s.D = 128;
  s.G = 4;
  s.Hkv = 2;
  s.seed = 5;
  runs.push_back({"structured bf16 D128", s, false});
  runs.push_back({"generic bf16 D128 (same plan)", s, true});
  attn_case f = s;  // CUDA-core f32 path
  f.t = dtype::f32;
  f.D = 64;
  runs.push_back({"f32 D64", f, true});
  for (auto& r : runs) {
    SCOPED_TRACE(r.name);
    const attn_plan plan = long_compress_plan(r.c, 3000);
    const auto out = backward_runs(r.c, plan, r.generic, 4, 1.f, nullptr);
    for (size_t i = 1; i < out.size(); i++)
      EXPECT_TRUE(out[i] == out[0]) << "run " << i << " differs from run 0 in its bits";
  }
}

TEST(CudaAttentionDeterminism, FixedPointAgreesWithFloatAtomics) {
  std::string why;
  if (!gsa::cuda::available(&why)) GTEST_SKIP() << why;
  restore_mode keep;
  for (dtype t : {dtype::f32, dtype::bf16}) {
    attn_case c;
    c.t = t;
    c.D = 64;
    c.G = 2;
    c.Hkv = 2;
    c.seed = 9;
    const attn_plan plan = long_compress_plan(c, 2000);
    std::vector<float> fixed, atomics;
    set_deterministic_backward(true);
    backward_runs(c, plan, t == dtype::f32, 1, 1.f, &fixed);
    set_deterministic_backward(false);
    backward_runs(c, plan, t == dtype::f32, 1, 1.f, &atomics);
    EXPECT_LE(rel_l2(fixed, atomics), t == dtype::f32 ? 1e-6 : 4e-3) << dtype_name(t);
  }
}

// The key-major backward against the row pass's per-tile atomics on a plan long enough that gist tiles are cut
// into pieces of rows, in both scratch modes (BackwardIsTheSameBitsOnEveryRun covers its determinism).
TEST(CudaAttentionDeterminism, KeyMajorAgreesWithTheAtomicScheme) {
  std::string why;
  if (!gsa::cuda::available(&why)) GTEST_SKIP() << why;
  restore_mode keep;
  restore_keymajor keep_km;
  restore_rows keep_wgmma;
  for (bool fixed : {false, true})
    for (int D : {64, 128})
      for (int wgmma : {0, 1}) {  // the key-major pass on mma.sync and on wgmma (the atomic run: mma.sync)
        attn_case c;
        c.t = dtype::bf16;
        c.D = D;
        c.G = 4;
        c.Hkv = 2;
        c.seed = 11;
        const attn_plan plan = long_compress_plan(c, 3000);
        set_deterministic_backward(fixed);
        std::vector<float> km, at;
        set_structured_wgmma(wgmma);
        set_backward_scheme(1);
        backward_runs(c, plan, false, 1, 1.f, &km);
        set_structured_wgmma(0);
        set_backward_scheme(0);
        backward_runs(c, plan, false, 1, 1.f, &at);
        EXPECT_LE(rel_l2(km, at), 4e-3) << "D " << D << (fixed ? " fixed point" : " f32") << ": dk / dv"
                                        << (wgmma ? ", wgmma" : ", mma.sync");
      }
}

TEST(CudaAttentionDeterminism, KeyMajorExactlyWhenDeterministicUnlessForced) {
  restore_mode keep;
  restore_keymajor keep_km;
  set_backward_scheme(-1);
  set_deterministic_backward(true);
  EXPECT_TRUE(keymajor_backward());
  set_deterministic_backward(false);
  EXPECT_FALSE(keymajor_backward());
  set_backward_scheme(1);
  EXPECT_TRUE(keymajor_backward());
  set_backward_scheme(0);
  set_deterministic_backward(true);
  EXPECT_FALSE(keymajor_backward());
}

TEST(CudaAttentionDeterminism, AnOutOfRangePartialGivesNaNNotAWrappedSum) {
  std::string why;
  if (!gsa::cuda::available(&why)) GTEST_SKIP() << why;
  restore_mode keep;
  set_deterministic_backward(true);
  attn_case c;
  c.t = dtype::bf16;
  c.D = 64;
  c.G = 1;
  c.Hkv = 1;
  const attn_plan plan = long_compress_plan(c, 600);
  std::vector<float> dk_dv;
  backward_runs(c, plan, false, 1, 1e5f, &dk_dv);  // dV partials ~ sum of P x 1e5 over 128 rows: past 2^10
  size_t nan = 0;
  for (float x : dk_dv) nan += std::isnan(x);
  EXPECT_EQ(nan, dk_dv.size()) << "every dk / dv value must be NaN after an overflow";
}

// Row unfolds (the per-token selection kept on the device, backend/row-unfold.h): the gist mask on the plan
// kernels plus random per-row chunk tables on the overlay kernels, against the dense reference over the expanded
// plan (expand_row_unfold; tests/model/test-row-unfold.cpp checks that expansion against gist::plan_unfold).
// Neighbouring rows share part of their picks (as real selections do), so warp tiles see unions of several rows'
// lists; some rows pick nothing. GQA 1 to 16 (16 / G rows per warp tile, padding rows), D 64 and 128, g 1 and 2,
// sinks that cut chunks, fixed-point and float dK / dV sums, gradients left out.
TEST(CudaAttentionUnfold, OverlayMatchesDenseReference) {
  std::string why;
  if (!gsa::cuda::available(&why)) GTEST_SKIP() << why;
  struct ucase {
    int G, Hkv, D, c, g, sink, raw, max_pick, grads;
    bool fixed;
  };
  const ucase cases[] = {{1, 4, 64, 8, 1, 3, 300, 4, 7, false},   {3, 4, 64, 16, 1, 5, 520, 6, 7, false},
                         {4, 2, 128, 8, 2, 0, 310, 8, 7, false},  {16, 1, 64, 8, 1, 3, 200, 3, 7, false},
                         {2, 2, 128, 16, 1, 20, 700, 10, 5, true}, {5, 1, 128, 4, 1, 2, 150, 5, 3, false}};
  restore_mode keep;
  backend& be = get_backend(device::cuda, dtype::bf16);
  for (const ucase& uc : cases) {
    gist::gsa_config cfg;
    cfg.chunk = {uc.c};
    cfg.gists_per_chunk = uc.g;
    cfg.gist_token_ids = {1};
    cfg.sink = uc.sink;
    cfg.local_chunks = 1;
    cfg.validate();
    std::mt19937_64 rng(uint64_t(uc.raw) * 31 + uint64_t(uc.G));
    std::vector<int32_t> ids(size_t(uc.raw), 7);
    const gist::stream st = gist::build_stream(ids.data(), uc.raw, cfg);
    const int T = st.size(), n_complete = gist::complete_chunk_count(st);
    std::vector<std::vector<int32_t>> sel(size_t(T) * uc.Hkv);
    std::vector<int32_t> shared;
    for (int r = 0; r < T; r++) {
      if (st.level[r] > 0) continue;
      const int n_cand = gist::candidate_count(st.chunk[r], n_complete, cfg.local_chunks);
      if (n_cand <= 0) continue;
      if (r % 8 == 0) shared.clear();
      for (int h = 0; h < uc.Hkv; h++) {
        auto& v = sel[size_t(r) * uc.Hkv + h];
        const int want = int(rng() % uint64_t(uc.max_pick + 1));
        for (int i = 0; i < want; i++) {
          int32_t m = int32_t(rng() % uint64_t(n_cand));
          if (!shared.empty() && (rng() & 1)) m = std::min<int32_t>(shared[rng() % shared.size()], n_cand - 1);
          if (std::find(v.begin(), v.end(), m) == v.end()) v.push_back(m);
          if (shared.size() < 6) shared.push_back(m);
        }
      }
    }
    const row_unfold host = host_row_unfold(st, cfg, uc.Hkv, 0, sel);
    auto dev = std::make_shared<row_unfold>(host);
    for (Tensor* t : {&dev->count, &dev->ids, &dev->chunk_begin, &dev->chunk_end}) *t = be.upload(*t, dtype::i32);
    attn_plan plan = gist::plan_compress(st, cfg);
    const attn_plan expanded = expand_row_unfold(plan, host, 0);
    plan.unfold = dev;
    attn_case c;
    c.D = uc.D;
    c.G = uc.G;
    c.Hkv = uc.Hkv;
    c.g = uc.g;
    c.Tq = c.Tk = T;
    c.q_offset = 0;
    c.p_empty = 0;
    c.grads = uc.grads;
    SCOPED_TRACE(describe(c) + " c" + std::to_string(uc.c) + " sink" + std::to_string(uc.sink) +
                 (uc.fixed ? " fixed-point" : ""));
    ASSERT_GT(unfold_totals(host).chunks, int64_t(T) / 2) << "the case must unfold";
    set_deterministic_backward(uc.fixed);
    check_plan(c, plan, rng, path::any, &expanded);
  }
}

// The overlay refuses what it cannot run: tables for another plan size, f32 activations.
TEST(CudaAttentionUnfold, RefusesMismatchedTablesAndF32) {
  std::string why;
  if (!gsa::cuda::available(&why)) GTEST_SKIP() << why;
  gist::gsa_config cfg;
  cfg.chunk = {8};
  cfg.gist_token_ids = {1};
  cfg.validate();
  std::vector<int32_t> ids(64, 7);
  const gist::stream st = gist::build_stream(ids.data(), 64, cfg);
  std::vector<std::vector<int32_t>> sel(size_t(st.size()));
  sel.back() = {0};
  backend& be = get_backend(device::cuda, dtype::bf16);
  auto dev = std::make_shared<row_unfold>(host_row_unfold(st, cfg, 1, 0, sel));
  EXPECT_THROW(attach_unfold(*std::make_shared<device_plan>(upload_plan(gist::plan_compress(st, cfg), st.size(),
                                                                        st.size(), 0, 1)),
                             dev),
               error)
      << "host tables";
  for (Tensor* t : {&dev->count, &dev->ids, &dev->chunk_begin, &dev->chunk_end}) *t = be.upload(*t, dtype::i32);
  attn_plan shorter = gist::plan_compress(st, cfg);
  std::vector<int32_t> ids2(56, 7);
  const gist::stream st2 = gist::build_stream(ids2.data(), 56, cfg);
  device_plan dp2 = upload_plan(gist::plan_compress(st2, cfg), st2.size(), st2.size(), 0, 1);
  EXPECT_THROW(attach_unfold(dp2, dev), error) << "rows";
  device_plan dp = upload_plan(shorter, st.size(), st.size(), 0, 1);
  attach_unfold(dp, dev);
  const int T = st.size();
  dev_buf q(size_t(T) * 64 * 4), out(size_t(T) * 64 * 4), lse(size_t(T) * 4);
  EXPECT_THROW(attention_forward(out.p, static_cast<float*>(lse.p), q.p, q.p, q.p, dp, T, T, 0, 1, 1, 64, dtype::f32),
               error);
}

}  // namespace
}  // namespace gsa::cuda
