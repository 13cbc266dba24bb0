// Tests of gsa::cuda plan-driven attention (backend/cuda/attention.h) on random plans in the segment format of
// backend/attn-plan.h. The reference is a dense float64 computation written here over a mask expanded with
// attn_plan::for_each_key (independent of the CPU kernels); a naive float32 run of the same code sets the f32
// tolerance. bf16: inputs are rounded to bf16 first and the references see the rounded values.
//
// Pass rule per tensor, err = ||x - ref64|| / ||ref64|| over the whole tensor:
//   bf16: err <= 1e-2 (bf16 output rounding ~2e-3 plus P rounded to bf16 in the forward);
//   f32:  err <= max(1e-5, 8 * err(naive f32));
// lse: max |lse - ref| <= 2e-3 (bf16) or max(1e-5, 8 * naive) (f32) on finite rows; rows that see no key must give
// exactly out 0 and lse -inf. Outputs are poisoned with NaN first; dq/dk/dv are pre-filled (accumulation).
// Every kernel test starts with the device check and skips without a GPU.
#include "attention-test-util.h"

namespace gsa::cuda {
namespace {

using namespace attn_test;

void run_case(const attn_case& c) {
  SCOPED_TRACE(describe(c));
  std::mt19937_64 rng(c.seed * 0x9e3779b97f4a7c15ull + uint64_t(c.D) * 131 + uint64_t(c.G) * 7 + c.g);
  const attn_plan plan = random_plan(c, rng);
  check_plan(c, plan, rng);
}

std::vector<attn_case> matrix() {
  std::vector<attn_case> cases;
  uint64_t seed = 11;
  for (dtype t : {dtype::bf16, dtype::f32})
    for (int D : {64, 128})
      for (int G : {1, 2, 4})
        for (bool per_head : {false, true}) {
          attn_case c;
          c.t = t;
          c.D = D;
          c.G = G;
          c.per_head = per_head;
          c.g = per_head ? 2 : 1;
          c.seed = seed++;
          cases.push_back(c);
        }
  auto add = [&](auto edit) {
    for (dtype t : {dtype::bf16, dtype::f32}) {
      attn_case c;
      c.t = t;
      c.D = 128;
      c.G = 4;
      c.seed = seed++;
      edit(c);
      cases.push_back(c);
    }
  };
  add([](attn_case& c) { c.blocks = blocks_kind::per_token; c.Tq = 48; c.Tk = 120; c.q_offset = 70; });
  add([](attn_case& c) { c.blocks = blocks_kind::big; c.Tq = 400; c.Tk = 400; c.q_offset = 0; c.g = 2; });
  add([](attn_case& c) { c.Hkv = 1; c.G = 8; c.D = 64; c.per_head = true; c.q_offset = 0; c.Tk = 150; });
  add([](attn_case& c) { c.p_empty = 1; });
  // Row tiles of 64 stacked rows with G > 1 at D 64 (64-key tiles of the bf16 backward), per-head lists, g = 4.
  add([](attn_case& c) { c.blocks = blocks_kind::big; c.D = 64; c.G = 2; c.per_head = true; c.g = 4; c.Tq = 300;
                         c.Tk = 420; c.q_offset = 120; });
  // Long lists: ranges spanning several key tiles and tiles straddling segment ends.
  add([](attn_case& c) { c.blocks = blocks_kind::big; c.G = 1; c.Tq = 260; c.Tk = 900; c.q_offset = 640; });
  // Null gradients: the kernels must skip them (dq only; dk and dv only).
  add([](attn_case& c) { c.grads = 1; });
  add([](attn_case& c) { c.grads = 6; c.D = 64; });
  return cases;
}

class CudaAttention : public ::testing::TestWithParam<attn_case> {};

TEST_P(CudaAttention, MatchesDenseReference) {
  std::string why;
  if (!gsa::cuda::available(&why)) GTEST_SKIP() << why;
  run_case(GetParam());
}

INSTANTIATE_TEST_SUITE_P(Matrix, CudaAttention, ::testing::ValuesIn(matrix()));

// Gist-mask plans as training builds them (gist::plan_compress, q_offset 0): upload_plan must find the structure
// and the structured kernels must match the dense reference; the generic kernels run the same plan as a control.
struct compress_case {
  std::vector<int> chunk;  // gsa_config::chunk (levels)
  int g = 1, raw = 500, D = 128, Hkv = 4, G = 4;
};

gist::stream compress_stream(const compress_case& cc, gist::gsa_config& cfg) {
  cfg.chunk = cc.chunk;
  cfg.gists_per_chunk = cc.g;
  for (size_t l = 0; l < cc.chunk.size(); l++) cfg.gist_token_ids.push_back(int32_t(1 + l));
  cfg.validate();
  const std::vector<int32_t> raw(size_t(cc.raw), 7);
  return gist::build_stream(raw.data(), cc.raw, cfg);
}

// Whether the case's plan allows the structured backward's 256-row tiles (device_plan::wide).
bool allows_wide_rows(const compress_case& cc) {
  gist::gsa_config cfg;
  const gist::stream st = compress_stream(cc, cfg);
  return upload_plan(gist::plan_compress(st, cfg), st.size(), st.size(), 0, cc.Hkv).wide;
}

void run_compress(const compress_case& cc, path want) {
  gist::gsa_config cfg;
  const gist::stream st = compress_stream(cc, cfg);
  const attn_plan plan = gist::plan_compress(st, cfg);
  attn_case c;
  c.t = dtype::bf16;
  c.D = cc.D;
  c.G = cc.G;
  c.Hkv = cc.Hkv;
  c.g = cc.g;
  c.Tq = c.Tk = st.size();
  c.q_offset = 0;
  std::ostringstream name;
  name << "compress c" << cc.chunk[0] << (cc.chunk.size() > 1 ? "x" + std::to_string(cc.chunk[1]) : "") << " g"
       << cc.g << " raw " << cc.raw << " (n " << st.size() << ") " << describe(c)
       << (want == path::generic ? " generic" : " structured");
  SCOPED_TRACE(name.str());
  std::mt19937_64 rng(uint64_t(cc.raw) * 1000003 + uint64_t(cc.D) * 31 + cc.G);
  check_plan(c, plan, rng, want);
}

std::vector<compress_case> compress_cases() {
  return {
      {{16}, 1, 500, 128, 16, 1},    // blocks of 17 rows, MHA: 8-warp forward tiles span 8 blocks
      {{16}, 1, 333, 64, 4, 4},      // GQA 4: 16 rows per 64 stacked
      {{64}, 4, 700, 128, 4, 4},     // blocks of 68 rows, 4 gists per unit
      {{64}, 4, 517, 64, 16, 1},     //
      {{8, 4}, 1, 300, 128, 4, 4},   // two levels: 1-row level-1 gist blocks, lower-level group windows
      {{8, 4}, 2, 410, 64, 2, 2},    // two levels, g = 2
  };
}

// Both backward schemes of the structured path (key-major dK / dV, the default, and the row pass's per-tile
// atomics), each with the row pass's 128- and 256-row tiles and the forward's 64- and 128-row tiles (the test sizes
// would pick 128 and 64: the large tiles are what long sequences take), all with the wgmma kernels (the forward's
// 128-row tiles, the key-major dK / dV); then the mma.sync forward at 128 rows with the mma.sync key-major pass;
// then the generic kernels.
TEST(CudaAttentionStructured, CompressPlansMatchDenseReference) {
  std::string why;
  if (!gsa::cuda::available(&why)) GTEST_SKIP() << why;
  restore_keymajor keep;
  restore_rows keep_rows;
  int wide_cases = 0;
  for (const compress_case& cc : compress_cases()) {
    const bool wide = allows_wide_rows(cc);
    wide_cases += wide;
    for (bool km : {true, false})
      for (int rows : {128, 256}) {
        if (rows == 256 && !wide) continue;
        const int fwd_rows = rows == 256 || !wide ? 128 : 64;  // both forward tiles over the cases
        SCOPED_TRACE(std::string(km ? "key-major backward" : "atomic backward") + ", backward row tiles of " +
                     std::to_string(rows) + ", forward " + std::to_string(fwd_rows));
        set_backward_scheme(km ? 1 : 0);
        set_structured_backward_rows(rows);
        set_structured_forward_rows(fwd_rows);
        set_structured_wgmma(1);  // forward on wgmma where it applies (128 rows), key-major dK / dV on wgmma
        run_compress(cc, path::structured);
      }
    {
      SCOPED_TRACE("mma.sync: forward with 128-row tiles (where 128 % G == 0), key-major dK / dV");
      set_backward_scheme(1);
      set_structured_backward_rows(128);
      set_structured_forward_rows(128 % cc.G == 0 ? 128 : 64);
      set_structured_wgmma(0);
      run_compress(cc, path::structured);
    }
    set_structured_wgmma(-1);
    set_structured_backward_rows(0);
    set_structured_forward_rows(0);
    run_compress(cc, path::generic);
  }
  EXPECT_GE(wide_cases, 4) << "too few cases reach the 256-row tiles";
}

// The warp-specialized wgmma forward (GSA_CUDA_WGMMA=2: a producer warpgroup hands key tiles to two consumer
// warpgroups through mbarriers) on every compress case it applies to (128 % G == 0). Its own test, so that a
// failure (its barriers trap instead of hanging) can be filtered out: TEST_FILTER='-*WarpSpecialized*'.
TEST(CudaAttentionStructured, WarpSpecializedForward) {
  std::string why;
  if (!gsa::cuda::available(&why)) GTEST_SKIP() << why;
  restore_rows keep_rows;
  int ran = 0;
  for (const compress_case& cc : compress_cases()) {
    if (128 % cc.G != 0) continue;
    set_structured_forward_rows(128);
    set_structured_wgmma(2);
    run_compress(cc, path::structured);
    ran++;
  }
  EXPECT_GE(ran, 4);
}

// A prefill chunk's plan (q_offset > 0: the rows are the last Tq of Tk positions) through the key-major backward:
// the inverse cuts rows before each key tile's first position by the offset.
TEST(CudaAttentionStructured, KeyMajorWithAQueryOffset) {
  std::string why;
  if (!gsa::cuda::available(&why)) GTEST_SKIP() << why;
  restore_keymajor keep;
  set_backward_scheme(1);
  gist::gsa_config cfg;
  cfg.chunk = {16};
  cfg.gists_per_chunk = 2;
  cfg.gist_token_ids = {1};
  cfg.validate();
  const std::vector<int32_t> raw(700, 7);
  const gist::stream st = gist::build_stream(raw.data(), 700, cfg);
  const attn_plan full = gist::plan_compress(st, cfg);
  // The plan of the last rows: blocks from the first block at or after row 300, rows shifted by the offset.
  int b0 = 0;
  while (full.block_q[b0] < 300) b0++;
  const int off = full.block_q[b0];
  attn_plan plan;
  plan.heads = 1;
  plan.gists_per_unit = full.gists_per_unit;
  plan.gist_ptr = full.gist_ptr;
  plan.gist_pos = full.gist_pos;
  plan.seg_ptr.push_back(0);
  for (int b = b0; b < full.n_blocks(); b++) {
    plan.block_q.push_back(full.block_q[b] - off);
    for (int64_t i = full.seg_begin(b, 0); i < full.seg_end(b, 0); i++) plan.segs.push_back(full.segs[size_t(i)]);
    plan.seg_ptr.push_back(int64_t(plan.segs.size()));
  }
  plan.block_q.push_back(full.block_q[full.n_blocks()] - off);
  attn_case c;
  c.t = dtype::bf16;
  c.D = 64;
  c.G = 2;
  c.Hkv = 2;
  c.g = 2;
  c.Tk = st.size();
  c.Tq = st.size() - off;
  c.q_offset = off;
  restore_rows keep_wgmma;
  for (int wgmma : {0, 1}) {  // the key-major dK / dV pass on mma.sync and on wgmma
    SCOPED_TRACE(wgmma ? "wgmma" : "mma.sync");
    set_structured_wgmma(wgmma);
    std::mt19937_64 rng(77);
    check_plan(c, plan, rng, path::structured);
  }
}

TEST(CudaAttentionStructured, DetectsTheStructure) {
  std::string why;
  if (!gsa::cuda::available(&why)) GTEST_SKIP() << why;
  gist::gsa_config cfg;
  cfg.chunk = {16};
  cfg.gist_token_ids = {1};
  const std::vector<int32_t> raw(300, 7);
  const gist::stream st = gist::build_stream(raw.data(), 300, cfg);
  attn_plan plan = gist::plan_compress(st, cfg);
  EXPECT_TRUE(attention_plan_is_structured(upload_plan(plan, st.size(), st.size(), 0, 2)));
  EXPECT_TRUE(upload_plan(plan, st.size(), st.size(), 0, 2).wide) << "16 blocks of 17 rows per 256 rows";
  // Blocks of 5 rows: 26 per 128-row window (structured) but 52 per 256 rows (no wide row tiles).
  attn_plan small_blocks;
  small_blocks.block_q = {0};
  small_blocks.seg_ptr = {0};
  for (int r = 0; r < 600; r += 5) {
    small_blocks.segs.push_back(key_range(r, r + 5));
    small_blocks.block_q.push_back(r + 5);
    small_blocks.seg_ptr.push_back(int64_t(small_blocks.segs.size()));
  }
  const device_plan sbp = upload_plan(small_blocks, 600, 600, 0, 2);
  EXPECT_TRUE(attention_plan_is_structured(sbp));
  EXPECT_FALSE(sbp.wide);
  // A long stream range (a dense causal block) is not the structure: the generic kernels keep it.
  attn_plan causal;
  causal.block_q = {0, 600};
  causal.seg_ptr = {0, 1};
  causal.segs = {key_range(0, 600)};
  EXPECT_FALSE(attention_plan_is_structured(upload_plan(causal, 600, 600, 0, 2)));
  // Per-head lists are not either.
  plan.heads = 2;
  const size_t nb = size_t(plan.n_blocks());
  attn_plan per_head = plan;
  per_head.seg_ptr = {0};
  per_head.segs.clear();
  for (size_t b = 0; b < nb; b++)
    for (int h = 0; h < 2; h++) {
      per_head.segs.insert(per_head.segs.end(), plan.segs.begin() + plan.seg_ptr[b],
                           plan.segs.begin() + plan.seg_ptr[b + 1]);
      per_head.seg_ptr.push_back(int64_t(per_head.segs.size()));
    }
  EXPECT_FALSE(attention_plan_is_structured(upload_plan(per_head, st.size(), st.size(), 0, 2)));
}

attn_plan small_plan() {
  attn_plan p;
  p.block_q = {0, 4, 8};
  p.seg_ptr = {0, 1, 3};
  p.segs = {key_range(0, 6), key_range(6, 12), gist_units(0, 0, 2)};
  p.gist_ptr = {0, 2};
  p.gist_pos = {1, 3};
  return p;
}

TEST(CudaAttentionPlan, UploadRejectsMalformedPlans) {
  std::string why;
  if (!gsa::cuda::available(&why)) GTEST_SKIP() << why;
  EXPECT_NO_THROW(upload_plan(small_plan(), 8, 12, 4, 2));
  auto bad = [](auto edit, int Tq = 8, int Tk = 12) {
    attn_plan p = small_plan();
    edit(p);
    EXPECT_THROW(upload_plan(p, Tq, Tk, 4, 2), gsa::error);
  };
  bad([](attn_plan&) {}, 9);                                       // block_q does not cover Tq
  bad([](attn_plan&) {}, 8, 11);                                   // range past Tk
  bad([](attn_plan& p) { p.block_q = {0, 5, 4, 8}; p.seg_ptr = {0, 1, 2, 3}; });  // not monotone
  bad([](attn_plan& p) { p.seg_ptr = {0, 2, 1}; });                // seg_ptr not monotone / not ending at segs
  bad([](attn_plan& p) { p.seg_ptr = {0, 3}; });                   // wrong list count
  bad([](attn_plan& p) { p.heads = 3; });                          // heads neither 1 nor Hkv
  bad([](attn_plan& p) { p.segs[1] = key_range(-1, 3); });         // negative key
  bad([](attn_plan& p) { p.segs[1] = key_range(5, 3); });          // reversed range
  bad([](attn_plan& p) { p.segs[2] = gist_units(1, 0, 1); });      // no level 1
  bad([](attn_plan& p) { p.segs[2] = gist_units(0, 1, 3); });      // units past the level
  bad([](attn_plan& p) { p.segs[2].level = -2; });                 // unknown level
  bad([](attn_plan& p) { p.gist_pos[1] = 11; p.gists_per_unit = 2; });  // gist past Tk
  bad([](attn_plan& p) { p.gists_per_unit = 0; });
  bad([](attn_plan& p) { p.gist_ptr = {0, 3}; });                  // table size mismatch
}

TEST(CudaAttentionPlan, RunRejectsMismatchedSizesAndShapes) {
  std::string why;
  if (!gsa::cuda::available(&why)) GTEST_SKIP() << why;
  const device_plan dp = upload_plan(small_plan(), 8, 12, 4, 2);
  EXPECT_EQ(dp.max_block_rows, 4);
  dev_buf buf(size_t(12) * 8 * 128 * 4);
  float* lse = static_cast<float*>(buf.p);
  // Uploaded for Tq 8: running with Tq 7 must throw before touching memory.
  EXPECT_THROW(attention_forward(buf.p, lse, buf.p, buf.p, buf.p, dp, 7, 12, 4, 4, 2, 64, dtype::f32), gsa::error);
  EXPECT_THROW(attention_forward(buf.p, lse, buf.p, buf.p, buf.p, dp, 8, 12, 4, 4, 2, 96, dtype::f32), gsa::error);
  EXPECT_THROW(attention_forward(buf.p, lse, buf.p, buf.p, buf.p, dp, 8, 12, 4, 3, 2, 64, dtype::f32), gsa::error);
  EXPECT_THROW(attention_forward(buf.p, lse, buf.p, buf.p, buf.p, dp, 8, 12, 4, 4, 2, 64, dtype::f16), gsa::error);
  EXPECT_THROW(attention_forward(nullptr, lse, buf.p, buf.p, buf.p, dp, 8, 12, 4, 4, 2, 64, dtype::f32), gsa::error);
  EXPECT_THROW(attention_backward(buf.p, nullptr, nullptr, nullptr, buf.p, buf.p, buf.p, buf.p, lse, dp, 8, 12, 4, 4,
                                  2, 64, dtype::f32),
               gsa::error);  // dout missing
  EXPECT_FALSE(attention_supported(96, dtype::bf16, &why));
  EXPECT_NE(why.find("64 or 128"), std::string::npos);
  EXPECT_TRUE(attention_supported(128, dtype::f32, nullptr));
  EXPECT_TRUE(attention_supported(32, dtype::bf16, nullptr, /*backward=*/false));  // inference of d 32 models
  EXPECT_FALSE(attention_supported(32, dtype::bf16, &why));
  EXPECT_NE(why.find("--device cpu"), std::string::npos);
}

}  // namespace
}  // namespace gsa::cuda
