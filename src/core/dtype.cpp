#include "core/dtype.h"

#include "core/error.h"

#include <cmath>

namespace gsa {

size_t dtype_size(dtype t) {
  switch (t) {
    case dtype::f32: return 4;
    case dtype::bf16: return 2;
    case dtype::f16: return 2;
    case dtype::i32: return 4;
    case dtype::i64: return 8;
    case dtype::u8: return 1;
  }
  return 0;
}

const char* dtype_name(dtype t) {
  switch (t) {
    case dtype::f32: return "f32";
    case dtype::bf16: return "bf16";
    case dtype::f16: return "f16";
    case dtype::i32: return "i32";
    case dtype::i64: return "i64";
    case dtype::u8: return "u8";
  }
  return "?";
}

const char* dtype_safetensors_name(dtype t) {
  switch (t) {
    case dtype::f32: return "F32";
    case dtype::bf16: return "BF16";
    case dtype::f16: return "F16";
    case dtype::i32: return "I32";
    case dtype::i64: return "I64";
    case dtype::u8: return "U8";
  }
  return "?";
}

bool dtype_from_safetensors_name(std::string_view name, dtype* out) {
  static const std::pair<std::string_view, dtype> table[] = {
      {"F32", dtype::f32}, {"BF16", dtype::bf16}, {"F16", dtype::f16},
      {"I32", dtype::i32}, {"I64", dtype::i64},   {"U8", dtype::u8}};
  for (auto& [n, t] : table)
    if (n == name) {
      *out = t;
      return true;
    }
  return false;
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        e++;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      mant &= 0x3ffu;
      bits = sign | uint32_t(127 - 15 - e) << 23 | mant << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | mant << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  uint32_t sign = (bits >> 16) & 0x8000u;
  uint32_t absb = bits & 0x7fffffffu;
  if (absb > 0x7f800000u) return uint16_t(sign | 0x7e00u);  // NaN
  if (absb >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // overflow -> inf (rounded)
  if (absb < 0x38800000u) {                                   // subnormal or zero in f16
    if (absb < 0x33000000u) return uint16_t(sign);
    float a;
    std::memcpy(&a, &absb, 4);
    // Below 2^-14 the f16 grid is uniform with step 2^-24; a * 2^24 < 1024 is exact, nearbyint rounds to even.
    uint32_t half = uint32_t(std::nearbyint(a * 16777216.0f));
    return uint16_t(sign | half);
  }
  uint32_t r = absb + 0xfffu + ((absb >> 13) & 1u);  // round to nearest even
  return uint16_t(sign | ((r - 0x38000000u) >> 13));
}

void convert_to_f32(float* dst, const void* src, dtype from, size_t n) {
  switch (from) {
    case dtype::f32: std::memcpy(dst, src, n * 4); return;
    case dtype::bf16: {
      auto s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(s[i]);
      return;
    }
    case dtype::f16: {
      auto s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; i++) dst[i] = f16_to_f32(s[i]);
      return;
    }
    default: fail("cannot convert a {} tensor to f32: only f32, bf16 and f16 are floating-point types", dtype_name(from));
  }
}

void convert_from_f32(void* dst, const float* src, dtype to, size_t n) {
  switch (to) {
    case dtype::f32: std::memcpy(dst, src, n * 4); return;
    case dtype::bf16: {
      auto d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; i++) d[i] = f32_to_bf16(src[i]);
      return;
    }
    case dtype::f16: {
      auto d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; i++) d[i] = f32_to_f16(src[i]);
      return;
    }
    default: fail("cannot convert f32 to {}: only f32, bf16 and f16 are floating-point types", dtype_name(to));
  }
}

}  // namespace gsa
