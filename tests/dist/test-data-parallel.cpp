// The trainer's data-parallel path on the CPU, with threads as ranks (thread-comm.h): the same global batch gives
// the losses of one process, with the optimizer state replicated or sharded (ZeRO-1), and a sharded run's
// checkpoint is a one-process checkpoint that resumes on another number of ranks. The GPU run of the same code
// (NCCL, two H200s) is scripts/device-multigpu.sh.
#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "core/log.h"
#include "io/safetensors.h"
#include "model/presets.h"
#include "train/data-parallel.h"
#include "train/trainer.h"
#include "../train/train-test-util.h"
#include "thread-comm.h"

namespace gsa {
namespace {

namespace fs = std::filesystem;

// Runs `o` on `ranks` threads (one process when ranks == 0) and returns rank 0's loss per step.
std::vector<double> run_ranks(const train_options& o, int ranks, int64_t stop_after = -1) {
  std::vector<double> losses;
  auto run = [&](dist::communicator* comm, std::string* err) {
    train_hooks h;
    h.comm = comm;
    h.stop_after_steps = stop_after;
    if (!comm || comm->rank() == 0)
      h.on_record = [&](const nlohmann::json& j) {
        if (j.contains("loss")) losses.push_back(j["loss"]);
      };
    try {
      run_training(o, h);
    } catch (const std::exception& e) {
      *err = e.what();
    }
  };
  const log_level before = get_log_level();
  if (ranks == 0) {
    std::string err;
    run(nullptr, &err);
    EXPECT_EQ(err, "");
  } else {
    test::thread_group g(ranks);
    std::vector<test::thread_comm> comms;
    for (int r = 0; r < ranks; r++) comms.emplace_back(g, r);
    std::vector<std::string> errs(static_cast<size_t>(ranks));
    std::vector<std::thread> ts;
    for (int r = 0; r < ranks; r++) ts.emplace_back(run, &comms[size_t(r)], &errs[size_t(r)]);
    for (auto& t : ts) t.join();
    for (int r = 0; r < ranks; r++) EXPECT_EQ(errs[size_t(r)], "") << "rank " << r;
  }
  set_log_level(before);
  return losses;
}

train_options recipe(const fs::path& dir, const std::string& data, const std::string& name) {
  auto o = test::tiny_run(data, (dir / name).string());
  o.grad_accum = 4;  // the global batch: 4 sequences per step, split over the ranks
  o.steps = 6;
  o.save_every = 2;
  return o;
}

void expect_close(const std::vector<double>& a, const std::vector<double>& b, double tol, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); i++) EXPECT_NEAR(a[i], b[i], tol * std::abs(b[i])) << what << ", step " << i + 1;
}

TEST(DataParallel, TwoAndThreeRanksFollowOneProcess) {
  auto dir = test::train_temp_dir("dp");
  auto data = test::make_tiny_dataset(dir / "data");
  const auto one = run_ranks(recipe(dir, data, "one"), 0);
  ASSERT_EQ(one.size(), 6u);
  // Only the summation order of the gradients differs (the ranks' partial sums, then their sum).
  for (int zero : {0, 1}) {
    for (int ranks : {2, 3}) {
      auto o = recipe(dir, data, fmt::format("r{}-z{}", ranks, zero));
      o.zero = zero;
      expect_close(run_ranks(o, ranks), one, 1e-5, fmt::format("{} ranks, zero {}", ranks, zero));
      // Rank 0 alone wrote the run folder, as one process would have.
      EXPECT_TRUE(fs::exists(fs::path(o.out) / "final/model.safetensors"));
      EXPECT_TRUE(fs::exists(fs::path(o.out) / "checkpoint-6/optimizer.safetensors"));
    }
  }
  fs::remove_all(dir);
}

TEST(DataParallel, ShardedCheckpointIsAOneProcessCheckpointAndResumesOnOtherCounts) {
  auto dir = test::train_temp_dir("dp-resume");
  auto data = test::make_tiny_dataset(dir / "data");
  const auto one = run_ranks(recipe(dir, data, "one"), 0);
  // Two ranks with ZeRO-1 stop after step 4 (checkpoint at 4), then one process finishes the run.
  auto o = recipe(dir, data, "two-then-one");
  o.zero = 1;
  auto first = run_ranks(o, 2, 4);
  ASSERT_EQ(first.size(), 4u);
  auto rest = run_ranks(o, 0);
  ASSERT_EQ(rest.size(), 2u);
  first.insert(first.end(), rest.begin(), rest.end());
  expect_close(first, one, 1e-5, "2 ranks (ZeRO-1) to step 4, then 1 process");
  // And the other way: one process to step 4, then three ranks (ZeRO-1).
  auto o2 = recipe(dir, data, "one-then-three");
  auto a = run_ranks(o2, 0, 4);
  o2.zero = 1;
  auto b = run_ranks(o2, 3);
  a.insert(a.end(), b.begin(), b.end());
  expect_close(a, one, 1e-5, "1 process to step 4, then 3 ranks");
  // The optimizer file has the tensors of a one-process checkpoint, same names and shapes.
  auto x = safetensors_file::open((dir / "one/checkpoint-4/optimizer.safetensors").string());
  auto y = safetensors_file::open((dir / "two-then-one/checkpoint-4/optimizer.safetensors").string());
  EXPECT_EQ(x.names(), y.names());
  for (auto& n : x.names()) {
    const Tensor tx = x.load_f32(n), ty = y.load_f32(n);
    ASSERT_EQ(tx.shape(), ty.shape()) << n;
    double diff = 0, norm = 0;
    for (int64_t i = 0; i < tx.numel(); i++) {
      diff += std::abs(double(tx.f32()[i]) - ty.f32()[i]);
      norm += std::abs(double(tx.f32()[i]));
    }
    EXPECT_LE(diff, 1e-4 * norm + 1e-12) << n;
  }
  fs::remove_all(dir);
}

TEST(DataParallel, GradientBucketsTileTheBufferAndFollowTheBackwardPass) {
  llama_model host(model_preset("tiny", 0));
  host.init_random(1);
  llama_model m = to_backend(host, cpu_backend());
  const auto layout = flat_layout(m);
  int64_t covered = 0;
  for (auto& p : layout) covered += p.numel;
  EXPECT_EQ(covered, m.w.flat.numel());
  // Buckets of 4 KiB: several per layer; each launched after the layers it covers.
  test::thread_group g(1);
  test::thread_comm c(g, 0);
  grad_sync s(m, c, 4096);
  EXPECT_GT(s.buckets(), int64_t(m.config.num_hidden_layers));
}

}  // namespace
}  // namespace gsa
