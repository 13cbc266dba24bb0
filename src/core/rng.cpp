#include "core/rng.h"

#include <cmath>

namespace gsa {

static uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void rng::reseed(uint64_t seed) {
  s0 = splitmix64(seed);
  s1 = splitmix64(seed);
}

uint64_t rng::next_u64() {
  uint64_t a = s0, b = s1;
  uint64_t r = a + b;
  b ^= a;
  s0 = ((a << 24) | (a >> 40)) ^ b ^ (b << 16);
  s1 = (b << 37) | (b >> 27);
  return r;
}

namespace {

// 128-bit state vectors (s0 = low word) and the step as a 128 x 128 matrix over GF(2), stored by columns.
struct bits128 {
  uint64_t w[2] = {0, 0};
};
struct matrix128 {
  bits128 col[128];
  bits128 apply(const bits128& v) const {
    bits128 out;
    for (int j = 0; j < 128; j++)
      if ((v.w[j >> 6] >> (j & 63)) & 1) out.w[0] ^= col[j].w[0], out.w[1] ^= col[j].w[1];
    return out;
  }
  matrix128 times(const matrix128& b) const {  // this * b
    matrix128 out;
    for (int j = 0; j < 128; j++) out.col[j] = apply(b.col[j]);
    return out;
  }
};

// powers[i] = step^(2^i).
const matrix128* step_powers() {
  static const auto powers = [] {
    auto p = new matrix128[64];
    for (int j = 0; j < 128; j++) {
      rng r;
      r.s0 = j < 64 ? uint64_t(1) << j : 0;
      r.s1 = j < 64 ? 0 : uint64_t(1) << (j - 64);
      r.next_u64();
      p[0].col[j].w[0] = r.s0;
      p[0].col[j].w[1] = r.s1;
    }
    for (int i = 1; i < 64; i++) p[i] = p[i - 1].times(p[i - 1]);
    return p;
  }();
  return powers;
}

}  // namespace

void rng::jump(uint64_t n) {
  const matrix128* p = step_powers();
  bits128 v;
  v.w[0] = s0;
  v.w[1] = s1;
  for (int i = 0; i < 64 && n; i++, n >>= 1)
    if (n & 1) v = p[i].apply(v);
  s0 = v.w[0];
  s1 = v.w[1];
}

float rng::normal() {
  float u1 = uniform(), u2 = uniform();
  if (u1 < 1e-12f) u1 = 1e-12f;
  return std::sqrt(-2.0f * std::log(u1)) * std::cos(6.2831853071795864f * u2);
}

}  // namespace gsa
