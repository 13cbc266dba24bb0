// Helpers shared by the test programs.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "core/rng.h"

namespace gsa::test {

// The checkout the tests read their data from; $GSA_SOURCE_DIR overrides the build's (a carried test binary runs
// in another copy of the tree).
inline std::filesystem::path source_dir() {
  if (const char* env = std::getenv("GSA_SOURCE_DIR")) return env;
  return GSA_SOURCE_DIR;
}
// ../shared/data beside the checkout (or $GSA_DATA). Tests that need it call GSA_REQUIRE_DATA().
inline std::filesystem::path data_dir() {
  if (const char* env = std::getenv("GSA_DATA")) return env;
  return source_dir() / ".." / "shared" / "data";
}

#define GSA_REQUIRE_DATA(sub)                                                                          \
  do {                                                                                                 \
    if (!std::filesystem::exists(::gsa::test::data_dir() / (sub)))                                      \
      GTEST_SKIP() << "needs " << (::gsa::test::data_dir() / (sub)).string()                            \
                   << " (the shared data folder beside the checkout, or set GSA_DATA)";                 \
  } while (0)

inline std::vector<float> randn(size_t n, rng& r, float scale = 1.0f) {
  std::vector<float> v(n);
  for (auto& x : v) x = r.normal() * scale;
  return v;
}

// max |a - b| / (max |b| + tiny): error relative to the reference's scale.
inline double max_rel_err(const float* a, const float* b, size_t n) {
  double num = 0, den = 1e-30;
  for (size_t i = 0; i < n; i++) {
    num = std::max(num, double(std::fabs(a[i] - b[i])));
    den = std::max(den, double(std::fabs(b[i])));
  }
  return num / den;
}
inline double max_rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  return max_rel_err(a.data(), b.data(), std::min(a.size(), b.size()));
}

}  // namespace gsa::test
