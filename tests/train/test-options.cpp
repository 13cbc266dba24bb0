// The option table drives both the config file and the CLI: defaults come from the table, a config file sets
// keys, flags override them, unknown keys and wrongly typed values fail naming the key; and the schedule.
#include <gtest/gtest.h>

#include <fstream>

#include "core/error.h"
#include "train/checkpoint.h"
#include "train/model-init.h"
#include "train/optimizer.h"
#include "train/options-cli.h"
#include "train/options.h"
#include "train-test-util.h"

namespace gsa {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const gsa::error& e) {
    return e.what();
  }
  return "";
}

TEST(TrainOptions, DefaultsComeFromTheTable) {
  train_options o = default_train_options();
  EXPECT_EQ(o.seq_len, 512);
  EXPECT_DOUBLE_EQ(o.lr, 3e-4);
  EXPECT_TRUE(o.resume);
  EXPECT_EQ(o.mix, "text=1");
  EXPECT_EQ(o.gsa["chunk"][0], 8);
  // Every row round-trips through train_options_to_json with its default.
  for (const auto& s : train_option_table()) EXPECT_EQ(train_options_to_json(o)[s.name], nlohmann::json::parse(s.default_json)) << s.name;
}

TEST(TrainOptions, ConfigThenOverrides) {
  auto dir = test::train_temp_dir("opts");
  auto cfg = (dir / "recipe.json").string();
  std::ofstream(cfg) << R"({"preset": "tiny", "lr": 1e-3, "steps": 50, "gsa": {"chunk": [4, 4]}, "resume": false})";
  train_cli cli;
  CLI::App app;
  auto* sub = app.add_subcommand("train");
  add_train_flags(sub, cli);
  const char* argv[] = {"gsa", "train", "--config", cfg.c_str(), "--grad-accum", "4", "--lr", "2e-3",
                        "--mix", "text=0.5,passkey=0.5", "--resume", "--no-gsa"};
  app.parse(int(std::size(argv)), const_cast<char**>(argv));
  train_options o = cli.resolve();
  EXPECT_EQ(o.preset, "tiny");            // from the file
  EXPECT_EQ(o.steps, 50);                 // from the file
  EXPECT_DOUBLE_EQ(o.lr, 2e-3);           // the flag wins
  EXPECT_EQ(o.grad_accum, 4);             // flag only
  EXPECT_EQ(o.mix, "text=0.5,passkey=0.5");
  EXPECT_TRUE(o.resume);                  // the file said false, the flag true
  EXPECT_TRUE(o.gsa.is_null());           // --no-gsa
  EXPECT_EQ(o.seq_len, 512);              // untouched default
  // Every table row has a flag.
  for (const auto& s : train_option_table())
    EXPECT_NE(sub->get_option_no_throw("--" + train_cli::flag_name(s.name)), nullptr) << s.name;
  std::filesystem::remove_all(dir);
}

TEST(TrainOptions, UnknownKeysAndBadTypesNameTheKey) {
  train_options o = default_train_options();
  auto e = error_of([&] { apply_train_json(o, {{"lr_max", 1.0}}, "recipe.json"); });
  EXPECT_NE(e.find("recipe.json"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown key 'lr_max'"), std::string::npos) << e;
  e = error_of([&] { apply_train_json(o, {{"steps", "ten"}}, "recipe.json"); });
  EXPECT_NE(e.find("'steps' must be an integer"), std::string::npos) << e;
  e = error_of([&] { set_train_option(o, "lr", "fast", "--lr"); });
  EXPECT_NE(e.find("--lr"), std::string::npos) << e;
  set_train_option(o, "gsa", "null", "--gsa");
  EXPECT_TRUE(o.gsa.is_null());
  set_train_option(o, "gsa", R"({"chunk": 16})", "--gsa");
  EXPECT_EQ(o.gsa["chunk"], 16);
  o.data = "d";
  o.preset = "tiny";
  o.model = "m";
  EXPECT_NE(error_of([&] { validate_train_options(o); }).find("exactly one of 'model'"), std::string::npos);
  o.model = "";
  EXPECT_EQ(o.task_loss, "answer");
  o.task_loss = "everything";
  EXPECT_NE(error_of([&] { validate_train_options(o); }).find("task_loss"), std::string::npos);
  o.task_loss = "answer";
  // Hyper-parameters outside a finite range are refused by name (an lr of 1e39 used to pass "> 0").
  EXPECT_NO_THROW(validate_train_options(o));
  for (auto [name, value] : std::vector<std::pair<std::string, double>>{
           {"lr", 1e39}, {"lr", 0}, {"beta2", 1.5}, {"adam_eps", 0}, {"weight_decay", -1}, {"init_std", 0}}) {
    train_options bad = o;
    set_train_option(bad, name, fmt::format("{}", value), "--" + name);
    EXPECT_NE(error_of([&] { validate_train_options(bad); }).find("'" + name + "'"), std::string::npos) << name;
  }
  train_options nan_lr = o;
  nan_lr.lr = NAN;  // JSON cannot spell NaN; a config built in code can
  EXPECT_NE(error_of([&] { validate_train_options(nan_lr); }).find("'lr'"), std::string::npos);
  train_options dev = o;
  dev.device = "tpu";
  EXPECT_NE(error_of([&] { validate_train_options(dev); }).find("'device'"), std::string::npos);
}

// A diverged run saves nothing: the last good checkpoint and `latest` stay.
TEST(TrainCheckpoint, NonFiniteWeightsAreNotSaved) {
  auto dir = test::train_temp_dir("nonfinite");
  llama_model m(run_model_config("tiny", 20, nullptr));
  m.init_random(1);
  adamw_optimizer opt(m);
  save_checkpoint(dir.string(), 1, m, opt, nlohmann::json{{"step", 1}}, 2);
  m.w.layers[1].wq.f32()[5] = INFINITY;
  const std::string e = error_of([&] { save_checkpoint(dir.string(), 2, m, opt, nlohmann::json{{"step", 2}}, 2); });
  EXPECT_NE(e.find("model.layers.1.self_attn.q_proj.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("diverged"), std::string::npos) << e;
  EXPECT_EQ(latest_checkpoint(dir.string()), (dir / "checkpoint-1").string());
  EXPECT_FALSE(std::filesystem::exists(dir / "checkpoint-2"));
  std::filesystem::remove_all(dir);
}

// Old checkpoints are renamed out of sight before they are deleted: what a kill mid-removal leaves behind
// (".checkpoint-N.removing", marker and all) is never taken for a checkpoint, and the next save clears it.
TEST(TrainCheckpoint, RemovalLeftoversAreNeverCheckpoints) {
  auto dir = test::train_temp_dir("removing");
  llama_model m(run_model_config("tiny", 20, nullptr));
  m.init_random(1);
  adamw_optimizer opt(m);
  save_checkpoint(dir.string(), 1, m, opt, nlohmann::json{{"step", 1}}, 1);
  std::filesystem::create_directories(dir / ".checkpoint-7.removing");
  std::ofstream(dir / ".checkpoint-7.removing/trainer.json") << R"({"step": 7})";
  EXPECT_EQ(latest_checkpoint(dir.string()), (dir / "checkpoint-1").string());
  save_checkpoint(dir.string(), 2, m, opt, nlohmann::json{{"step", 2}}, 1);  // keep 1: checkpoint-1 goes
  EXPECT_FALSE(std::filesystem::exists(dir / ".checkpoint-7.removing"));
  EXPECT_FALSE(std::filesystem::exists(dir / "checkpoint-1"));
  EXPECT_FALSE(std::filesystem::exists(dir / ".checkpoint-1.removing"));
  EXPECT_EQ(latest_checkpoint(dir.string()), (dir / "checkpoint-2").string());
  std::filesystem::remove_all(dir);
}

TEST(TrainSchedule, WarmupThenCosine) {
  // Linear warmup reaches the peak at the last warmup step.
  EXPECT_FLOAT_EQ(cosine_lr(0, 10, 110, 1.0f, 0.1f), 0.1f);
  EXPECT_FLOAT_EQ(cosine_lr(9, 10, 110, 1.0f, 0.1f), 1.0f);
  EXPECT_FLOAT_EQ(cosine_lr(10, 10, 110, 1.0f, 0.1f), 1.0f);
  // Half-way through the decay: min + (1 - min) / 2.
  EXPECT_NEAR(cosine_lr(60, 10, 110, 1.0f, 0.1f), 0.55f, 1e-6);
  EXPECT_NEAR(cosine_lr(110, 10, 110, 2.0f, 0.1f), 0.2f, 1e-6);
  EXPECT_NEAR(cosine_lr(35, 10, 110, 1.0f, 0.0f), 0.5 * (1 + std::cos(M_PI * 0.25)), 1e-6);
}

}  // namespace
}  // namespace gsa
