// The routing distillation loss on the GPU (backend/cuda/route-loss.cu) against the host reference
// (backend/route-loss.cpp) on fresh random data: f32 to 1e-4 of the largest gradient, bf16 within its rounding; the
// per-layer KL accumulates into its slot, with the rows' logits in one group and in groups of one row
// (route_score_budget), candidates of one chunk and of several (a hierarchy's units); and a GPU training run with
// "route_loss" follows the CPU run of the same recipe (loss and logged route_kl; one level, and a 4 x 2 hierarchy
// that walks, so both levels distil) in f32: to 1e-3 for five steps, to 5% after (below).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/route-loss.h"
#include "backend/route-test-util.h"
#include "core/rng.h"
#include "cuda/cuda-test-util.h"
#include "train/trainer.h"
#include "train/train-test-util.h"

namespace gsa {
namespace {

std::vector<float> vec(const Tensor& t) {
  const Tensor h = t.host(dtype::f32);
  return std::vector<float>(h.f32(), h.f32() + h.numel());
}

double max_abs(const std::vector<float>& a) {
  double m = 0;
  for (float x : a) m = std::max(m, double(std::fabs(x)));
  return m;
}

TEST(CudaRouteLoss, MatchesTheHostReference) {
  REQUIRE_GPU();
  struct shape {
    int Hq, Hkv, D, c, g, chunks, sink, span;  // span > 1: candidates of span chunks (a hierarchy's units)
  };
  struct budget_guard {
    int64_t saved = cuda::route_score_budget();
    ~budget_guard() { cuda::route_score_budget() = saved; }
  } guard;
  for (bool grouped : {false, true})
    for (dtype act : {dtype::f32, dtype::bf16})
      for (const shape& sh :
           {shape{8, 2, 64, 8, 2, 40, 3, 1}, shape{4, 4, 128, 16, 1, 12, 0, 1}, shape{6, 2, 64, 4, 3, 70, 2, 1},
            shape{6, 2, 64, 8, 1, 70, 2, 4}, shape{4, 1, 128, 4, 2, 50, 0, 2}}) {
        SCOPED_TRACE(std::string(dtype_name(act)) + " Hq " + std::to_string(sh.Hq) + " D " + std::to_string(sh.D) +
                     " c " + std::to_string(sh.c) + " g " + std::to_string(sh.g) + " span " +
                     std::to_string(sh.span) + (grouped ? " one row per group" : ""));
        cuda::route_score_budget() = grouped ? 1 : guard.saved;
        const int T = sh.chunks * (sh.c + sh.g);
        rng r(uint64_t(sh.D * 31 + sh.chunks));
        auto randn = [&](size_t n, float sd) {
          std::vector<float> v(n);
          for (float& x : v) x = sd * r.normal();
          return v;
        };
        std::vector<float> q = randn(size_t(T) * sh.Hq * sh.D, 1.0f), k = randn(size_t(T) * sh.Hkv * sh.D, 1.0f);
        std::vector<float> dq = randn(q.size(), 0.01f), dk = randn(k.size(), 0.01f);
        backend& gpu = get_backend(device::cuda, act);
        auto up = [&](const std::vector<float>& v, std::vector<int64_t> shp) {
          return gpu.upload(Tensor::borrow(const_cast<float*>(v.data()), shp, dtype::f32), act);
        };
        Tensor gq = up(q, {T, sh.Hq, sh.D}), gk = up(k, {T, sh.Hkv, sh.D});
        Tensor gdq = up(dq, {T, sh.Hq, sh.D}), gdk = up(dk, {T, sh.Hkv, sh.D});
        // The reference reads what the GPU read: the inputs rounded to the activation type.
        q = vec(gq), k = vec(gk);
        dq = vec(gdq), dk = vec(gdk);
        route_spec gs = test::synthetic_route_spec(sh.c, sh.g, sh.chunks, sh.sink, 3, sh.span);
        gs.layers = {0, 1};
        route_spec hs = gs;
        gpu.route_prepare(gs, 2);
        cpu_backend().route_prepare(hs, 2);
        const float grad_scale = 0.37f;
        gpu.route_loss(gdq, gdk, gq, gk, gs, 1, grad_scale);
        std::vector<float> rq = dq, rk = dk;
        float kl = 0;
        route_loss_host(rq.data(), rk.data(), &kl, q.data(), k.data(), T, sh.Hq, sh.Hkv, sh.D, hs, grad_scale);
        const std::vector<float> got_q = vec(gdq), got_k = vec(gdk);
        const std::vector<float> got_kl = vec(gs.kl);
        ASSERT_EQ(got_kl.size(), 2u);
        EXPECT_EQ(got_kl[0], 0.0f) << "layer 0's slot untouched";
        EXPECT_NEAR(got_kl[1], kl, 1e-4 * (1 + kl));
        EXPECT_GT(kl, 0.01f);
        // Gradient change against the reference's change, relative to the largest change.
        std::vector<float> cq(q.size()), ck(k.size());
        for (size_t i = 0; i < q.size(); i++) cq[i] = rq[i] - dq[i];
        for (size_t i = 0; i < k.size(); i++) ck[i] = rk[i] - dk[i];
        const double mq = max_abs(cq), mk = max_abs(ck);
        ASSERT_GT(mq, 1e-4);
        ASSERT_GT(mk, 1e-4);
        // bf16: the sum is rounded once into a bf16 gradient of magnitude up to max |dq| + the change.
        const double tq = act == dtype::f32 ? 1e-4 * mq : 8e-3 * (mq + max_abs(dq));
        const double tk = act == dtype::f32 ? 1e-4 * mk : 8e-3 * (mk + max_abs(dk));
        double wq = 0, wk = 0;
        for (size_t i = 0; i < q.size(); i++) wq = std::max(wq, double(std::fabs(got_q[i] - rq[i])));
        for (size_t i = 0; i < k.size(); i++) wk = std::max(wk, double(std::fabs(got_k[i] - rk[i])));
        EXPECT_LT(wq, tq) << "dq";
        EXPECT_LT(wk, tk) << "dk";
      }
}

TEST(CudaRouteLoss, TrainingFollowsTheCpuRun) {
  REQUIRE_GPU();
  auto dir = test::train_temp_dir("cuda-route");
  auto data = test::make_tiny_dataset(dir / "data");
  for (bool walk : {false, true}) {  // one level; a 4 x 2 hierarchy selecting by the walk (both levels distil)
    SCOPED_TRACE(walk ? "4 x 2 walk" : "one level");
    const std::string tag = walk ? "walk-" : "";
    train_options g = test::tiny_run(data, (dir / (tag + "gpu")).string());
    g.model_config = {{"hidden_size", 128}, {"head_dim", 64}, {"num_attention_heads", 2}, {"num_key_value_heads", 1}};
    g.gsa = {{"chunk", {4}}, {"sink", 2}, {"select", "fixed"}, {"topk", 2}, {"train_mode", "unfold"},
             {"train_select", "token"}, {"route_loss", 1.0}, {"route_rows", 16}};
    if (walk) {
      g.gsa["chunk"] = {4, 2};
      g.gsa["unfold_select"] = "walk";
      g.seq_len = 64;
    }
    g.device = "cuda";
    g.precision = "f32";
    g.steps = 8;
    g.warmup = 2;
    auto c = g;
    c.out = (dir / (tag + "cpu")).string();
    c.device = "cpu";
    run_training(g);
    run_training(c);
    for (const char* key : {"loss", "route_kl", "route_kl_l1"}) {
      if (!walk && std::string(key) == "route_kl_l1") continue;
      auto lg = test::logged(dir / (tag + "gpu/log.jsonl"), key);
      auto lc = test::logged(dir / (tag + "cpu/log.jsonl"), key);
      ASSERT_EQ(lg.size(), 8u) << key;
      ASSERT_EQ(lg.size(), lc.size()) << key;
      // The first five steps to 1e-3; later ones drift further once the route loss has moved some gist scores
      // close enough for the GPU's and the CPU's roundings to rank two chunks differently (measured on the H200:
      // route_kl 0.15% off at step 6, 2.7% at step 7), so those only to 5%.
      for (size_t i = 0; i < lg.size(); i++)
        EXPECT_NEAR(lg[i], lc[i], (i < 5 ? 1e-3 : 5e-2) * std::fabs(lc[i]) + 1e-6) << key << " step " << i + 1;
    }
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace gsa
