// Deterministic random numbers whose whole state is two 64-bit words, so a trainer can save and restore
// it for bit-exact resume. xoshiro128+-style generator seeded through splitmix64.
#pragma once
#include <cstdint>

namespace gsa {

struct rng {
  uint64_t s0 = 0, s1 = 0;

  explicit rng(uint64_t seed = 0) { reseed(seed); }
  void reseed(uint64_t seed);
  uint64_t next_u64();
  uint32_t next_u32() { return uint32_t(next_u64() >> 32); }
  // Uniform in [0, 1).
  float uniform() { return float(next_u64() >> 40) * (1.0f / 16777216.0f); }
  // Uniform integer in [0, n).
  uint64_t below(uint64_t n) { return n ? next_u64() % n : 0; }
  // Standard normal (Box-Muller): two next_u64() calls.
  float normal();
  // The state after n more next_u64() calls, in O(log n) (the generator is linear over GF(2)): lets threads
  // produce consecutive pieces of one stream, the values a single thread would draw.
  void jump(uint64_t n);
};

}  // namespace gsa
