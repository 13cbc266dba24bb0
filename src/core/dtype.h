// Element types and conversions. Storage may be bf16/f16 (checkpoints, CUDA); CPU math is f32.
#pragma once
#include <cstdint>
#include <cstring>
#include <string_view>

namespace gsa {

enum class dtype : uint8_t { f32, bf16, f16, i32, i64, u8 };

size_t dtype_size(dtype t);
const char* dtype_name(dtype t);          // "f32", "bf16", ...
const char* dtype_safetensors_name(dtype t);  // "F32", "BF16", ...
// Returns false when the name is unknown.
bool dtype_from_safetensors_name(std::string_view name, dtype* out);

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even, as PyTorch does; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t((bits + rounding) >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Converts n elements of type `from` at src into f32 at dst.
void convert_to_f32(float* dst, const void* src, dtype from, size_t n);
// Converts n f32 elements at src into type `to` at dst.
void convert_from_f32(void* dst, const float* src, dtype to, size_t n);

}  // namespace gsa
