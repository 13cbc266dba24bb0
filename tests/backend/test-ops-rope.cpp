// RoPE: inverse frequencies (plain and Llama-3 scaled, against hand-computed values), the rotation against a
// naive reference up to position 32k, and the backward (inverse rotation) by finite differences.
#include <gtest/gtest.h>

#include "backend/cpu/ops.h"
#include "core/error.h"
#include "test-ops-util.h"

using namespace gsa;
using namespace gsa::test;

TEST(ops_rope, inv_freq_plain) {
  auto f = cpu::rope_inv_freq(8, 10000.0f, {});
  ASSERT_EQ(f.size(), 4u);
  const double want[] = {1.0, 0.1, 0.01, 0.001};  // 10000^(-2i/8)
  for (int i = 0; i < 4; i++) EXPECT_NEAR(f[i], want[i], 1e-7 * want[i] + 1e-12) << i;
  EXPECT_THROW(cpu::rope_inv_freq(7, 10000.0f, {}), gsa::error);
}

TEST(ops_rope, inv_freq_llama3_hand_computed) {
  // Llama 3.1 8B: head_dim 128, theta 500000, factor 8, low 1, high 4, original 8192. Values computed by hand
  // (double precision) from the scaling rule: wavelen = 2 pi / f; > 8192 -> f / 8; < 2048 -> f; else smooth.
  cpu::rope_scaling s;
  s.llama3 = true;
  auto f = cpu::rope_inv_freq(128, 500000.0f, s);
  ASSERT_EQ(f.size(), 64u);
  const std::pair<int, double> want[] = {
      {0, 1.0},                      // high frequency, unchanged
      {20, 0.016560440080994446},    // high frequency (wavelen 379)
      {28, 0.0032114459947525913},   // high frequency (wavelen 1956)
      {29, 0.002166570763503359},    // medium (wavelen 2402, smooth 0.8035)
      {31, 0.0008567514129196321},   // medium (wavelen 3619, smooth 0.4212)
      {33, 0.00031269375038406517},  // medium (wavelen 5454)
      {34, 0.00017850781276799638},  // medium (wavelen 6695, smooth 0.0745)
      {35, 9.556212353964683e-05},   // low frequency: / 8 (wavelen 8219)
      {40, 3.428102195952591e-05},   // low
      {63, 3.068925988914511e-07},   // low
  };
  for (auto [i, v] : want) EXPECT_NEAR(f[i], v, 2e-6 * v) << "i = " << i;
}

namespace {

// Naive rotation as transformers writes it: x * cos + rotate_half(x) * sin, angle = f32(pos * inv_freq).
std::vector<float> ref_rope(const std::vector<float>& x, const std::vector<int32_t>& pos,
                            const std::vector<float>& inv, int T, int H, int D) {
  std::vector<float> y(x.size());
  const int half = D / 2;
  for (int t = 0; t < T; t++)
    for (int h = 0; h < H; h++)
      for (int d = 0; d < D; d++) {
        const int i = d % half;
        const float angle = float(pos[t]) * inv[i];
        const double c = std::cos(double(angle)), s = std::sin(double(angle));
        const float* xr = x.data() + (size_t(t) * H + h) * D;
        const double rot = d < half ? -double(xr[d + half]) : double(xr[d - half]);
        y[(size_t(t) * H + h) * D + d] = float(xr[d] * c + rot * s);
      }
  return y;
}

}  // namespace

TEST(ops_rope, forward_matches_naive_to_32k) {
  rng r(20);
  cpu::rope_scaling s;
  s.llama3 = true;
  for (auto [T, H, D] : {std::tuple{1, 1, 2}, {5, 3, 8}, {40, 4, 64}}) {
    auto inv = cpu::rope_inv_freq(D, 500000.0f, s);
    std::vector<int32_t> pos(T);
    for (auto& p : pos) p = int32_t(r.below(32768));
    pos[0] = 32767;
    auto x = randn(size_t(T) * H * D, r);
    auto y = x;
    cpu::rope_forward(y.data(), pos.data(), inv.data(), T, H, D);
    EXPECT_LT(max_rel_err(y, ref_rope(x, pos, inv, T, H, D)), 1e-6) << T << "," << H << "," << D;
    // the backward is the inverse rotation: it undoes the forward
    cpu::rope_backward(y.data(), pos.data(), inv.data(), T, H, D);
    EXPECT_LT(max_rel_err(y, x), 1e-6);
  }
}

TEST(ops_rope, position_zero_is_identity) {
  rng r(21);
  auto inv = cpu::rope_inv_freq(16, 10000.0f, {});
  std::vector<int32_t> pos(3, 0);
  auto x = randn(3 * 2 * 16, r), y = x;
  cpu::rope_forward(y.data(), pos.data(), inv.data(), 3, 2, 16);
  EXPECT_EQ(y, x);
}

TEST(ops_rope, backward_matches_finite_differences) {
  rng r(22);
  const int T = 6, H = 2, D = 12;
  auto inv = cpu::rope_inv_freq(D, 10000.0f, {});
  std::vector<int32_t> pos = {0, 1, 7, 100, 5000, 31000};
  auto x = randn(size_t(T) * H * D, r), rr = randn(x.size(), r);
  auto loss = [&] {
    auto y = x;
    cpu::rope_forward(y.data(), pos.data(), inv.data(), T, H, D);
    return dot(y, rr);
  };
  auto dx = rr;  // dL/dy = r, transformed in place into dL/dx
  cpu::rope_backward(dx.data(), pos.data(), inv.data(), T, H, D);
  check_grad_fd(x, dx, loss, r, "dx", 40);
}
