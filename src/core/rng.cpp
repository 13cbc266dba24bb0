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

float rng::normal() {
  float u1 = uniform(), u2 = uniform();
  if (u1 < 1e-12f) u1 = 1e-12f;
  return std::sqrt(-2.0f * std::log(u1)) * std::cos(6.2831853071795864f * u2);
}

}  // namespace gsa
