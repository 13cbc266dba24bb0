// Tests of gsa::cuda decode attention. The plan tests run anywhere (pure host code); the kernel tests need a
// CUDA device and skip without one. The kernel checks themselves live in decode-checks.h (shared with the
// standalone device binary).
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "backend/backend.h"
#include "backend/cuda/decode-attention.h"
#include "core/error.h"
#include "core/rng.h"
#include "cuda/cuda-test-util.h"
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
  opt.tensor_cores = false;  // the CUDA-core kernel: 4 blocks per SM
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
  opt.tensor_cores = false;
  // 512 lists already take 512 of the 528 block slots: a second split would start a mostly idle second wave.
  EXPECT_EQ(plan_decode(shape(64, 32, 8, 128), 4096, opt).num_splits, 1);
  // Batch 8 of the Llama-3-8B layer on tensor cores: 64 lists and 264 slots: 4 splits (256 blocks, one wave),
  // not 5 (320: a second wave of 56).
  opt.tensor_cores = true;
  EXPECT_EQ(plan_decode(shape(8, 32, 8, 128), 131072, opt).num_splits, 4);
}

TEST(CudaDecodePlan, TensorCoresForBf16AtHeadDims64And128) {
  decode_plan_options opt;
  opt.num_sms = 132;
  auto p = shape(1, 28, 4, 128);  // Qwen2-7B's layer: group 7
  auto plan = plan_decode(p, 1 << 20, opt);
  EXPECT_TRUE(plan.tensor_cores);
  // Two 96 KB blocks per SM at D 128: 4 lists x splits fill 264 blocks; splits are whole 64-key iterations.
  EXPECT_GE(plan.num_splits * 4, 132 * 2 * 9 / 10);
  EXPECT_LE(plan.num_splits * 4, 132 * 2 + 4);
  EXPECT_EQ(plan.keys_per_split % 64, 0);
  EXPECT_GE(plan.num_splits * plan.keys_per_split, 1 << 20);
  p = shape(1, 32, 8, 64);  // Llama-3.2-1B's: 4 blocks per SM at D 64
  plan = plan_decode(p, 1 << 20, opt);
  EXPECT_TRUE(plan.tensor_cores);
  EXPECT_GE(plan.num_splits * 8, 132 * 4 * 9 / 10);
  p.kv_dtype = decode_dtype::f32;  // f32 K/V, head dim 32 and the option off keep the CUDA-core kernel
  EXPECT_FALSE(plan_decode(p, 4096, opt).tensor_cores);
  EXPECT_FALSE(plan_decode(shape(1, 4, 2, 32), 4096, opt).tensor_cores);
  opt.tensor_cores = false;
  EXPECT_FALSE(plan_decode(shape(1, 32, 8, 64), 4096, opt).tensor_cores);
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

// backend::decode_attention with weights (H2O): the CUDA backend's run_decode + run_decode_weights against the CPU
// backend's kernel on the same pool and lists (fresh random data; the CPU reads the bf16 values the GPU reads):
// outputs to 1e-4, every listed key's weight to 1e-5 absolute; and each (row, KV head) list's weights sum to the
// group size (every query head's probabilities sum to 1), an empty list included. Head dims 32 / 64 / 128, GQA
// groups 1-8, lists of 0 to 1500 keys (several splits), duplicates allowed.
TEST(CudaDecodeWeights, EqualTheCpuBackendsWeights) {
  REQUIRE_GPU();
  const int P = 16, Hkv = 2, M = 3, frames = 128;  // pool: 2 P rows a frame, K rows first
  for (dtype act : {dtype::f32, dtype::bf16})
    for (int D : {32, 64, 128})
      for (int G : {1, 3, 8}) {
        SCOPED_TRACE(std::string(dtype_name(act)) + " D " + std::to_string(D) + " G " + std::to_string(G));
        const int Hq = Hkv * G;
        rng r(uint64_t(D * 10 + G));
        Tensor pool({int64_t(frames) * 2 * P, Hkv, D}), q({M, Hq, D});
        for (int64_t i = 0; i < pool.numel(); i++) pool.f32()[i] = r.normal();
        for (int64_t i = 0; i < q.numel(); i++) q.f32()[i] = r.normal() * 0.5f;
        if (act == dtype::bf16) {  // the values bf16 holds, for both sides
          pool = pool.to(dtype::bf16).to(dtype::f32);
          q = q.to(dtype::bf16).to(dtype::f32);
        }
        std::vector<int64_t> indptr(1, 0);
        std::vector<int32_t> indices;
        const int lengths[M * Hkv] = {0, 7, 300, 1500, 1, 64};
        for (int l = 0; l < M * Hkv; l++) {
          for (int j = 0; j < lengths[l]; j++) {
            const int f = int(r.below(frames)), t = int(r.below(P));
            indices.push_back(int32_t(f * 2 * P + t));  // a K row of frame f
          }
          indptr.push_back(int64_t(indices.size()));
        }
        backend& cpu = cpu_backend();
        backend& gpu = get_backend(device::cuda, act);
        Tensor out_ref({M, int64_t(Hq) * D});
        std::vector<float> w_ref, w;
        cpu.decode_attention(out_ref, q, pool, P, indptr, indices, nullptr, &w_ref);
        Tensor gq = gpu.upload(q, act), gpool = gpu.upload(pool, act);
        Tensor gout = gpu.alloc({M, int64_t(Hq) * D}, act);
        gpu.decode_attention(gout, gq, gpool, P, indptr, indices, nullptr, &w);
        const Tensor out = gout.host(dtype::f32);
        double worst = 0;
        for (int64_t i = 0; i < out.numel(); i++)
          worst = std::max(worst, double(std::fabs(out.f32()[i] - out_ref.f32()[i])));
        EXPECT_LE(worst, act == dtype::f32 ? 1e-4 : 2e-2) << "outputs";  // bf16 output rounding
        ASSERT_EQ(w.size(), indices.size());
        ASSERT_EQ(w_ref.size(), indices.size());
        double worst_w = 0;
        for (size_t e = 0; e < w.size(); e++) worst_w = std::max(worst_w, double(std::fabs(w[e] - w_ref[e])));
        EXPECT_LE(worst_w, 1e-5) << "weights";
        for (int l = 0; l < M * Hkv; l++) {
          double sum = 0;
          for (int64_t e = indptr[size_t(l)]; e < indptr[size_t(l) + 1]; e++) sum += w[size_t(e)];
          EXPECT_NEAR(sum, lengths[l] ? double(G) : 0.0, 1e-4) << "list " << l;
        }
      }
}

}  // namespace
}  // namespace gsa::cuda
