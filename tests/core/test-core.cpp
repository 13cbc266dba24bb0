// Core: dtype conversions against independent definitions, tensor views, RNG determinism, errors.
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "test-util.h"

namespace gsa {
namespace {

// f16 value from its fields by the IEEE 754 definition, in double.
double f16_value(uint16_t h) {
  int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
  double v;
  if (exp == 0) v = std::ldexp(mant, -24);
  else if (exp == 31) v = mant ? NAN : INFINITY;
  else v = std::ldexp(1024 + mant, exp - 25);
  return sign ? -v : v;
}

TEST(Dtype, F16DecodesEveryValue) {
  for (uint32_t h = 0; h < 65536; h++) {
    double ref = f16_value(uint16_t(h));
    float got = f16_to_f32(uint16_t(h));
    if (std::isnan(ref)) EXPECT_TRUE(std::isnan(got)) << h;
    else ASSERT_EQ(double(got), ref) << "h=" << h;
  }
}

TEST(Dtype, F16EncodesRoundTripAndRoundsToNearestEven) {
  for (uint32_t h = 0; h < 65536; h++) {
    if (std::isnan(f16_value(uint16_t(h)))) continue;
    ASSERT_EQ(f32_to_f16(f16_to_f32(uint16_t(h))), h) << h;
  }
  // Midpoints between neighbours round to the even mantissa; just above rounds up.
  for (uint16_t h : {uint16_t(0x3c00), uint16_t(0x3c01), uint16_t(0x0001), uint16_t(0x0002), uint16_t(0x7bfe)}) {
    double a = f16_value(h), b = f16_value(uint16_t(h + 1));
    float mid = float((a + b) / 2);
    uint16_t even = (h & 1) ? uint16_t(h + 1) : h;
    EXPECT_EQ(f32_to_f16(mid), even) << h;
    EXPECT_EQ(f32_to_f16(std::nextafter(mid, 1e9f)), uint16_t(h + 1)) << h;
  }
  EXPECT_EQ(f32_to_f16(1e6f), 0x7c00);     // overflow -> inf
  EXPECT_EQ(f32_to_f16(-1e-9f), 0x8000);   // underflow -> -0
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);  // largest finite
}

TEST(Dtype, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  uint32_t bits = 0x3f808000;  // exactly halfway between 0x3f80 and 0x3f81: ties to even (0x3f80)
  float f;
  std::memcpy(&f, &bits, 4);
  EXPECT_EQ(f32_to_bf16(f), 0x3f80);
  bits = 0x3f818000;  // halfway between 0x3f81 and 0x3f82: ties to even (0x3f82)
  std::memcpy(&f, &bits, 4);
  EXPECT_EQ(f32_to_bf16(f), 0x3f82);
  bits = 0x3f808001;
  std::memcpy(&f, &bits, 4);
  EXPECT_EQ(f32_to_bf16(f), 0x3f81);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  for (uint32_t h = 0; h < 65536; h += 7) {
    float v = bf16_to_f32(uint16_t(h));
    if (!std::isnan(v)) {
      ASSERT_EQ(f32_to_bf16(v), h);
    }
  }
}

TEST(Tensor, ViewsShareStorageAndConversionsCopy) {
  Tensor t({4, 3});
  for (int i = 0; i < 12; i++) t.f32()[i] = float(i);
  Tensor rows = t.slice_rows(1, 3);
  EXPECT_EQ(rows.shape(), (shape_t{2, 3}));
  EXPECT_EQ(rows.f32()[0], 3.0f);
  rows.f32()[0] = 100.0f;
  EXPECT_EQ(t.f32()[3], 100.0f);
  Tensor v = t.view({2, 6});
  EXPECT_EQ(v.f32()[3], 100.0f);
  EXPECT_THROW(t.view({5, 3}), error);
  Tensor b = t.to(dtype::bf16);
  EXPECT_EQ(b.nbytes(), 24u);
  Tensor back = b.to(dtype::f32);
  EXPECT_EQ(back.f32()[5], 5.0f);
  back.f32()[5] = -1;
  EXPECT_EQ(t.f32()[5], 5.0f);
  float buf[6] = {1, 2, 3, 4, 5, 6};
  Tensor br = Tensor::borrow(buf, {2, 3});
  EXPECT_FALSE(br.owning());
  EXPECT_EQ(br.f32()[4], 5.0f);
  EXPECT_THROW(br.i32(), error);
  EXPECT_THROW(Tensor({-1, 2}), error);
}

TEST(Rng, DeterministicAndRestorable) {
  rng a(42), b(42), c(43);
  EXPECT_EQ(a.next_u64(), b.next_u64());
  EXPECT_NE(a.next_u64(), c.next_u64());
  rng saved = a;
  uint64_t x = a.next_u64();
  EXPECT_EQ(saved.next_u64(), x);
  // Moments of the normal generator.
  rng r(1);
  double s = 0, s2 = 0;
  const int n = 200000;
  for (int i = 0; i < n; i++) {
    double v = r.normal();
    s += v;
    s2 += v * v;
  }
  EXPECT_NEAR(s / n, 0.0, 0.01);
  EXPECT_NEAR(s2 / n, 1.0, 0.02);
  for (int i = 0; i < 1000; i++) {
    float u = r.uniform();
    ASSERT_TRUE(u >= 0.0f && u < 1.0f);
    ASSERT_LT(r.below(7), 7u);
  }
}

TEST(Errors, AssertThrowsWithLocationAndFailFormats) {
  try {
    GSA_ASSERT(1 == 2, "value {}", 5);
    FAIL();
  } catch (const error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("test-core.cpp"), std::string::npos);
    EXPECT_NE(m.find("value 5"), std::string::npos);
  }
  try {
    fail("bad {} in {}", "shape", "file.bin");
  } catch (const error& e) {
    EXPECT_STREQ(e.what(), "bad shape in file.bin");
  }
}

}  // namespace
}  // namespace gsa
