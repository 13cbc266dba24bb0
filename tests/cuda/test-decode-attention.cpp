// Tests of gsa::cuda decode attention. The plan tests run anywhere (pure host code); the kernel tests need a
// CUDA device and skip without one. The kernel checks themselves live in decode-checks.h (shared with the
// standalone device binary).
#include <gtest/gtest.h>

#include "backend/cuda/decode-attention.h"
#include "core/error.h"
#include "cuda/decode-checks.h"

namespace gsa::cuda {
namespace {

decode_params shape(int B, int Hq, int Hkv, int D) {
  decode_params p;
  p.batch = B;
  p.n_q_heads = Hq;
  p.n_kv_heads = Hkv;
  p.head_dim = D;
  p.q_stride_h = D;
  p.q_stride_b = int64_t(Hq) * D;
  p.kv_stride_h = D;
  p.kv_stride_t = int64_t(Hkv) * D;
  return p;
}

TEST(CudaDecodePlan, ShortListsUseOneSplitAndNoWorkspace) {
  const auto plan = plan_decode(shape(1, 32, 8, 128), 200);
  EXPECT_EQ(plan.num_splits, 1);
  EXPECT_EQ(plan.workspace_bytes, 0u);
  EXPECT_GE(plan.keys_per_split, 200);
}

TEST(CudaDecodePlan, LongListsFillTheDevice) {
  decode_plan_options opt;
  opt.num_sms = 132;
  opt.ctas_per_sm = 4;
  const auto p = shape(1, 32, 8, 128);
  const auto plan = plan_decode(p, 131072, opt);
  // 8 lists need about 66 splits each to give 528 blocks; splits cover the list exactly.
  EXPECT_GE(plan.num_splits * 8, 132 * 4 * 9 / 10);
  EXPECT_GE(plan.num_splits * plan.keys_per_split, 131072);
  EXPECT_LT((plan.num_splits - 1) * plan.keys_per_split, 131072);
  EXPECT_EQ(plan.keys_per_split % 32, 0);
  EXPECT_EQ(plan.workspace_bytes, size_t(32) * plan.num_splits * (128 + 2) * 4);
}

TEST(CudaDecodePlan, ManyListsNeedFewSplits) {
  decode_plan_options opt;
  opt.num_sms = 132;
  const auto plan = plan_decode(shape(64, 32, 8, 128), 4096, opt);  // 512 lists already fill the device
  EXPECT_EQ(plan.num_splits, 2);
}

TEST(CudaDecodePlan, SplitsNeverShorterThanTheMinimum) {
  decode_plan_options opt;
  opt.min_keys_per_split = 256;
  const auto plan = plan_decode(shape(1, 8, 1, 64), 1000, opt);
  EXPECT_LE(plan.num_splits, 4);
  EXPECT_GE(plan.keys_per_split, 256);
}

TEST(CudaDecodePlan, ForcedSplitsAndEmptyLists) {
  decode_plan_options opt;
  opt.force_splits = 5;
  auto plan = plan_decode(shape(2, 8, 2, 128), 12, opt);
  EXPECT_EQ(plan.num_splits, 5);
  EXPECT_EQ(plan.keys_per_split, 3);
  plan = plan_decode(shape(2, 8, 2, 128), 0);
  EXPECT_EQ(plan.num_splits, 1);
  EXPECT_EQ(plan.workspace_bytes, 0u);
}

TEST(CudaDecodePlan, RejectsUnsupportedShapes) {
  EXPECT_THROW(plan_decode(shape(1, 20, 4, 128), 10), gsa::error);  // group 5
  EXPECT_THROW(plan_decode(shape(1, 36, 4, 128), 10), gsa::error);  // group 9
  EXPECT_THROW(plan_decode(shape(1, 8, 3, 128), 10), gsa::error);   // not a multiple
  EXPECT_THROW(plan_decode(shape(1, 8, 2, 96), 10), gsa::error);    // head_dim 96
  auto p = shape(1, 8, 2, 128);
  p.kv_stride_h = 129;
  EXPECT_THROW(plan_decode(p, 10), gsa::error);
  EXPECT_THROW(plan_decode(shape(1, 8, 2, 128), -1), gsa::error);
  std::string why;
  EXPECT_FALSE(decode_supported(shape(1, 16, 1, 128), &why));
  EXPECT_NE(why.find("group"), std::string::npos);
}

bool have_device() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

class CudaDecodeKernel : public ::testing::TestWithParam<test::check_case> {};

TEST_P(CudaDecodeKernel, MatchesReference) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  const auto r = test::run_check(GetParam());
  EXPECT_TRUE(r.ok) << test::describe(GetParam()) << ": " << r.msg << " (err " << r.err << ", naive f32 "
                    << r.err_naive << ", splits " << r.num_splits << ")";
}

INSTANTIATE_TEST_SUITE_P(Matrix, CudaDecodeKernel, ::testing::ValuesIn(test::standard_cases()));

}  // namespace
}  // namespace gsa::cuda
