// The model through the op interface with packed parameters (to_backend), on the CPU backend: the layout the GPU
// uses (every parameter a view into one buffer, matrices first) must compute exactly what the per-tensor model
// computes, and the optimizer's two-launch update must equal its tensor-by-tensor one.
#include <gtest/gtest.h>

#include <cstring>

#include "core/error.h"
#include "model/llama.h"
#include "test-models.h"
#include "test-util.h"
#include "train/optimizer.h"

namespace gsa {
namespace {

bool same(const Tensor& a, const Tensor& b) {
  return a.numel() == b.numel() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

TEST(PackedModel, ParametersAreViewsOfOneBufferMatricesFirst) {
  llama_model host = test::tiny_model({4}, true, 3);
  llama_model m = to_backend(host, cpu_backend());
  ASSERT_FALSE(m.w.flat.empty());
  EXPECT_EQ(m.w.flat.numel(), host.parameter_count());
  const char* lo = static_cast<const char*>(m.w.flat.raw());
  const char* split = lo + m.w.n_matrix * 4;
  const char* hi = lo + m.w.flat.nbytes();
  auto a = m.parameters(), b = host.parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); i++) {
    const char* p = static_cast<const char*>(a[i].second->raw());
    EXPECT_TRUE(same(*a[i].second, *b[i].second)) << a[i].first;
    if (a[i].second->ndim() >= 2) EXPECT_TRUE(p >= lo && p + a[i].second->nbytes() <= split) << a[i].first;
    else EXPECT_TRUE(p >= split && p + a[i].second->nbytes() <= hi) << a[i].first;
  }
  // Writing the buffer writes the tensors (the embedding is the first matrix) and not the host model.
  const float before = m.w.embed.f32()[0];
  m.w.flat.f32()[0] += 1.0f;
  EXPECT_EQ(m.w.embed.f32()[0], before + 1.0f);
  EXPECT_EQ(host.w.embed.f32()[0], before);
}

TEST(PackedModel, ForwardBackwardAndAdamWEqualThePerTensorModel) {
  llama_model host = test::tiny_model({4}, true, 5);
  llama_model packed = to_backend(host, cpu_backend());
  const gist::gsa_config cfg = gist::gsa_config_from_json(host.config.gsa);
  auto raw = test::tiny_tokens(40, 9);
  std::vector<int32_t> pos(raw.size()), tgt(raw.size(), -100);
  for (size_t i = 0; i < raw.size(); i++) pos[i] = int32_t(i);
  for (size_t i = 0; i + 1 < raw.size(); i++) tgt[i] = raw[i + 1];
  adamw_optimizer oh(host), op(packed);
  for (auto* o : {&oh, &op}) {
    o->hp.weight_decay = 0.1f;
    o->max_grad_norm = 0.05f;  // clips: the norm over the flat halves must equal the per-tensor one
  }
  for (int step = 0; step < 3; step++) {
    forward_state sh, sp;
    forward(host, sh, raw, pos, tgt, nullptr);
    forward(packed, sp, raw, pos, tgt, nullptr);
    EXPECT_EQ(sh.loss(), sp.loss()) << "step " << step;
    llama_weights gh = make_grads(host), gp = make_grads(packed);
    ASSERT_FALSE(gp.flat.empty());
    EXPECT_EQ(gp.n_matrix, packed.w.n_matrix);
    backward(host, sh, gh);
    backward(packed, sp, gp);
    auto a = grad_list(host, gh), b = grad_list(packed, gp);
    for (size_t i = 0; i < a.size(); i++) EXPECT_TRUE(same(*a[i].second, *b[i].second)) << a[i].first;
    const double nh = oh.step(host, gh, 1e-2f), np = op.step(packed, gp, 1e-2f);
    EXPECT_NEAR(nh, np, 1e-12 * nh);
  }
  auto a = host.parameters(), b = packed.parameters();
  for (size_t i = 0; i < a.size(); i++)
    EXPECT_LT(test::max_rel_err(b[i].second->f32(), a[i].second->f32(), size_t(a[i].second->numel())), 1e-6)
        << a[i].first;
  // Optimizer state round-trips through its named form (what checkpoints store).
  adamw_optimizer again(packed);
  again.load_state(packed, op.state(packed));
  auto s1 = op.state(packed), s2 = again.state(packed);
  ASSERT_EQ(s1.size(), s2.size());
  for (size_t i = 0; i < s1.size(); i++) EXPECT_TRUE(same(s1[i].second, s2[i].second)) << s1[i].first;
}

TEST(PackedModel, DeviceAndPrecisionNamesAreChecked) {
  EXPECT_EQ(parse_device("cpu"), device::cpu);
  EXPECT_EQ(parse_device("cuda"), device::cuda);
  EXPECT_THROW(parse_device("tpu"), error);
  EXPECT_EQ(parse_precision("bf16"), dtype::bf16);
  EXPECT_THROW(parse_precision("fp8"), error);
  EXPECT_THROW(get_backend(device::cpu, dtype::bf16), error);
  // Without CUDA in the build, or without a usable GPU, asking for it says what to do instead.
  try {
    backend& b = get_backend(device::cuda, dtype::bf16);
    EXPECT_EQ(b.where(), device::cuda);
  } catch (const error& e) {
    EXPECT_NE(std::string(e.what()).find("--device cpu"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace gsa
