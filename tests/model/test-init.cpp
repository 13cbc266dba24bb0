// Random init fills the random tensors from one generator stream in list order; the parallel fill (jumped copies
// of the generator) must give exactly the values of the sequential loop it replaced, whatever the thread count.
#include <gtest/gtest.h>
#include <omp.h>

#include "core/rng.h"
#include "model/llama.h"
#include "model/presets.h"

namespace gsa {
namespace {

TEST(Rng, JumpEqualsStepping) {
  for (uint64_t n : {0ull, 1ull, 2ull, 63ull, 64ull, 1000ull, 123457ull}) {
    rng a(42), b(42);
    for (uint64_t i = 0; i < n; i++) a.next_u64();
    b.jump(n);
    EXPECT_EQ(a.s0, b.s0) << n;
    EXPECT_EQ(a.s1, b.s1) << n;
    EXPECT_EQ(a.next_u64(), b.next_u64()) << n;
  }
}

TEST(Init, ParallelInitIsTheSequentialStream) {
  model_config c = model_preset("tiny", 0);
  c.architecture = "qwen2";  // q/k/v biases too (zeros, no draws)
  c.qkv_bias = true;
  llama_model m(c);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(3);
  m.init_random(7, 0.05f);
  omp_set_num_threads(threads);
  rng r(7);
  int64_t checked = 0;
  for (auto& [name, t] : m.parameters()) {
    const bool is_norm = name.find("norm") != std::string::npos;
    const bool is_bias = name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    for (int64_t i = 0; i < t->numel(); i++) {
      const float want = is_norm ? 1.0f : is_bias ? 0.0f : r.normal() * 0.05f;
      ASSERT_EQ(t->f32()[i], want) << name << "[" << i << "]";
      checked++;
    }
  }
  EXPECT_EQ(checked, m.parameter_count());
}

}  // namespace
}  // namespace gsa
