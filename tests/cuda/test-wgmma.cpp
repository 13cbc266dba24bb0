// The wgmma building blocks (backend/cuda/wgmma.cuh) on a 64 x 64 x 64 tile product against a float64 product of
// the same bf16 inputs: the 128-byte swizzle, the shared-memory descriptors and their k16 steps (K-major and
// MN-major B), and the accumulator layout. Fresh random values each run.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "attention-test-util.h"
#include "backend/cuda/runtime.h"
#include "backend/cuda/wgmma-check.h"
#include "cuda-test-util.h"

namespace gsa::cuda::attn_test {
namespace {

void check_tile(bool trans_b, bool a_in_registers) {
  std::mt19937_64 rng(std::random_device{}());
  const auto a = random_values(rng, 64 * 64, 1.f, dtype::bf16), b = random_values(rng, 64 * 64, 1.f, dtype::bf16);
  dev_buf da(64 * 64 * 2), db(64 * 64 * 2), dc(64 * 64 * 4);
  upload(da, a, dtype::bf16);
  upload(db, b, dtype::bf16);
  poison(dc);
  // On the context's stream, where upload / poison / download run: the legacy default stream does not wait for
  // that non-blocking stream, so a launch there could read B before its copy landed (NaN columns, one run in a
  // few, until this was found).
  ASSERT_EQ(wgmma_tile_product(da.p, db.p, static_cast<float*>(dc.p), trans_b, a_in_registers, ctx().stream), 0);
  const auto c = download(dc, 64 * 64, dtype::f32);
  double worst = 0, scale = 0;
  for (int i = 0; i < 64; i++)
    for (int j = 0; j < 64; j++) {
      double ref = 0;  // trans_b false: A B^T (b[j][k]); true: A B (b[k][j])
      for (int k = 0; k < 64; k++) ref += double(a[i * 64 + k]) * double(trans_b ? b[k * 64 + j] : b[j * 64 + k]);
      ASSERT_TRUE(std::isfinite(c[i * 64 + j])) << "C[" << i << "][" << j << "] not written";
      worst = std::max(worst, std::abs(c[i * 64 + j] - ref));
      scale = std::max(scale, std::abs(ref));
    }
  // f32 accumulation of 64 exact bf16 products: rounding only (a wrong swizzle, descriptor or fragment layout
  // is off by O(1))
  EXPECT_LE(worst, 1e-4 * scale + 1e-4) << (trans_b ? "A B (MN-major B)" : "A B^T (K-major B)")
                                         << (a_in_registers ? ", A from registers" : ", A from shared memory");
}

TEST(CudaWgmma, TileProductKMajorB) {  // S = Q K^T: keys as B's rows
  REQUIRE_GPU();
  check_tile(false, false);
}

TEST(CudaWgmma, TileProductMNMajorB) {  // O = P V with P staged in shared memory
  REQUIRE_GPU();
  check_tile(true, false);
}

TEST(CudaWgmma, TileProductRegistersA) {  // O = P V with P in registers (FlashAttention-3's way)
  REQUIRE_GPU();
  check_tile(true, true);
  check_tile(false, true);
}

}  // namespace
}  // namespace gsa::cuda::attn_test
