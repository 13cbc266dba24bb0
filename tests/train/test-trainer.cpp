// The trainer end to end on a tiny model: gist rows initialised to the mean rows, a run whose loss falls, a run
// killed mid-way and resumed that ends byte-identical to an uninterrupted one, checkpoint rotation, the data mix
// with a task generator (answer-only loss, retrieval eval), and the full-attention baseline from the same recipe.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "core/error.h"
#include "io/hf-config.h"
#include "model/llama.h"
#include "train/checkpoint.h"
#include "train/mix.h"
#include "train/model-init.h"
#include "train/sequence.h"
#include "train/stop-signal.h"
#include "train/trainer.h"
#include "train-test-util.h"

namespace gsa {
namespace {

namespace fs = std::filesystem;

std::string file_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST(GistRows, NewRowsAreTheMeanRows) {
  model_config c = run_model_config("tiny", 20, {{"tie_word_embeddings", false}});
  llama_model m(c);
  m.init_random(3, 0.5f);
  Tensor old_embed = m.w.embed.clone(), old_head = m.w.lm_head.clone();
  gist::gsa_config g;
  ASSERT_TRUE(setup_gsa(m, {{"chunk", {4, 2}}}, "unfold", g));
  EXPECT_EQ(m.config.vocab_size, 22);
  EXPECT_EQ(g.gist_token_ids, (std::vector<int32_t>{20, 21}));
  EXPECT_EQ(g.mode, gist::train_mode::unfold);
  EXPECT_EQ(m.config.gsa["gist_token_ids"], nlohmann::json({20, 21}));
  const int64_t C = c.hidden_size;
  for (int64_t j = 0; j < C; j++) {
    double me = 0, mh = 0;
    for (int r = 0; r < 20; r++) me += old_embed.f32()[r * C + j], mh += old_head.f32()[r * C + j];
    for (int r = 20; r < 22; r++) {
      EXPECT_NEAR(m.w.embed.f32()[r * C + j], me / 20, 1e-6);
      EXPECT_NEAR(m.w.lm_head.f32()[r * C + j], mh / 20, 1e-6);
    }
  }
  EXPECT_EQ(0, std::memcmp(m.w.embed.f32(), old_embed.f32(), 20 * C * 4)) << "old rows untouched";
  gist::gsa_config none;
  EXPECT_FALSE(setup_gsa(m, nullptr, "", none));
  EXPECT_TRUE(m.config.gsa.is_null());
}

TEST(GistRows, TokenizerGistTokensAreReusedNotAdded) {
  llama_model m(run_model_config("tiny", 20, nullptr));
  m.init_random(3, 0.5f);
  const nlohmann::json tok = {{"added_tokens",
                               {{{"id", 17}, {"content", "<|endoftext|>"}},
                                {{"id", 18}, {"content", "<|gist|>"}},
                                {{"id", 19}, {"content", "<|gist_1|>"}}}}};
  EXPECT_EQ(tokenizer_gist_ids(tok, 2), (std::vector<int32_t>{18, 19}));
  EXPECT_TRUE(tokenizer_gist_ids(tok, 3).empty()) << "no <|gist_2|>";
  gist::gsa_config g;
  bool added = true;
  ASSERT_TRUE(setup_gsa(m, {{"chunk", {4, 2}}}, "unfold", g, tok, &added));
  EXPECT_FALSE(added);
  EXPECT_EQ(m.config.vocab_size, 20) << "no rows added";
  EXPECT_EQ(g.gist_token_ids, (std::vector<int32_t>{18, 19}));
  // Three levels: the tokenizer lacks <|gist_2|>, so all three are new rows.
  llama_model m3(run_model_config("tiny", 20, nullptr));
  m3.init_random(3, 0.5f);
  ASSERT_TRUE(setup_gsa(m3, {{"chunk", {4, 2, 2}}}, "unfold", g, tok, &added));
  EXPECT_TRUE(added);
  EXPECT_EQ(g.gist_token_ids, (std::vector<int32_t>{20, 21, 22}));
  // Ids beyond the model's vocabulary (a tokenizer bigger than the model) are not usable either.
  const nlohmann::json big = {{"added_tokens", {{{"id", 40}, {"content", "<|gist|>"}}}}};
  llama_model m1(run_model_config("tiny", 20, nullptr));
  ASSERT_TRUE(setup_gsa(m1, {{"chunk", {4}}}, "unfold", g, big, &added));
  EXPECT_TRUE(added);
  EXPECT_EQ(g.gist_token_ids, (std::vector<int32_t>{20}));
}

// gist_init = mean: a plain model's rows of the tokenizer's gist ids become the mean of the other rows (embedding
// and untied head); the other rows and the vocabulary stay; keep (the default) leaves them; a GSA model's rows are
// never touched.
TEST(GistRows, ReusedRowsTakeTheMeanOnRequest) {
  const nlohmann::json tok = {{"added_tokens", {{{"id", 18}, {"content", "<|gist|>"}}}}};
  llama_model m(run_model_config("tiny", 20, {{"tie_word_embeddings", false}}));
  m.init_random(5, 0.5f);
  const Tensor embed = m.w.embed.clone(), head = m.w.lm_head.clone();
  const int64_t C = m.config.hidden_size;
  gist::gsa_config g;
  bool added = true;
  llama_model kept = m;
  ASSERT_TRUE(setup_gsa(kept, {{"chunk", {4}}}, "unfold", g, tok, &added));
  EXPECT_EQ(0, std::memcmp(kept.w.embed.f32(), embed.f32(), size_t(20 * C) * 4)) << "keep: rows as trained";
  ASSERT_TRUE(setup_gsa(m, {{"chunk", {4}}}, "unfold", g, tok, &added, true));
  EXPECT_FALSE(added);
  EXPECT_EQ(m.config.vocab_size, 20);
  EXPECT_EQ(g.gist_token_ids, (std::vector<int32_t>{18}));
  for (int64_t j = 0; j < C; j++) {
    double me = 0, mh = 0;
    for (int r = 0; r < 20; r++)
      if (r != 18) me += embed.f32()[r * C + j], mh += head.f32()[r * C + j];
    EXPECT_NEAR(m.w.embed.f32()[18 * C + j], me / 19, 1e-6);
    EXPECT_NEAR(m.w.lm_head.f32()[18 * C + j], mh / 19, 1e-6);
    for (int r = 0; r < 20; r++) {
      if (r != 18) {
        ASSERT_EQ(m.w.embed.f32()[r * C + j], embed.f32()[r * C + j]) << "row " << r;
      }
    }
  }
  // A GSA model continued: its gist rows are trained inputs, mean_init leaves them.
  m.w.embed.f32()[18 * C] += 1.0f;
  const float marked = m.w.embed.f32()[18 * C];
  ASSERT_TRUE(setup_gsa(m, {{"chunk", {4}}}, "compress", g, tok, &added, true));
  EXPECT_EQ(m.w.embed.f32()[18 * C], marked);
}

TEST(GistRows, AddedRowsAreNamedInTheTokenizer) {
  nlohmann::json tok = {{"added_tokens", {{{"id", 17}, {"content", "<|endoftext|>"}}}}};
  add_gist_tokens(tok, {20, 21});
  add_gist_tokens(tok, {20, 21});  // idempotent
  ASSERT_EQ(tok["added_tokens"].size(), 3u);
  EXPECT_EQ(tok["added_tokens"][1]["content"], "<|gist|>");
  EXPECT_EQ(tok["added_tokens"][1]["id"], 20);
  EXPECT_EQ(tok["added_tokens"][2]["content"], "<|gist_1|>");
  EXPECT_TRUE(tok["added_tokens"][2]["special"].get<bool>());
  EXPECT_EQ(tokenizer_gist_ids(tok, 2), (std::vector<int32_t>{20, 21}));
  nlohmann::json bare = nlohmann::json::object();
  add_gist_tokens(bare, {5});
  EXPECT_EQ(tokenizer_gist_ids(bare, 1), (std::vector<int32_t>{5}));
}

// The run's tokenizer decides the gist ids: its <|gist|> when it has one, else a new row that the final
// tokenizer.json then names.
TEST(Trainer, GistIdsFollowTheTokenizer) {
  auto dir = test::train_temp_dir("gistids");
  const std::string data = test::make_tiny_dataset(dir / "data");
  auto write_tok = [&](const std::string& name, const nlohmann::json& added) {
    fs::create_directories(dir / name);
    std::ofstream(dir / name / "tokenizer.json") << nlohmann::json{{"version", "1.0"}, {"added_tokens", added}}.dump();
    return (dir / name).string();
  };
  auto o = test::tiny_run(data, (dir / "with").string());
  o.steps = 2;
  o.tokenizer = write_tok("tok-with", {{{"id", 39}, {"content", "<|endoftext|>"}}, {{"id", 38}, {"content", "<|gist|>"}}});
  run_training(o, {});
  model_config with = load_model_config((dir / "with/final/config.json").string());
  EXPECT_EQ(with.vocab_size, 40);
  EXPECT_EQ(with.gsa["gist_token_ids"], nlohmann::json({38}));
  EXPECT_EQ(file_bytes(dir / "with/final/tokenizer.json"), file_bytes(dir / "tok-with/tokenizer.json"))
      << "nothing added: the tokenizer is copied byte for byte";

  o.out = (dir / "without").string();
  o.tokenizer = write_tok("tok-without", {{{"id", 39}, {"content", "<|endoftext|>"}}});
  run_training(o, {});
  model_config without = load_model_config((dir / "without/final/config.json").string());
  EXPECT_EQ(without.vocab_size, 41);
  EXPECT_EQ(without.gsa["gist_token_ids"], nlohmann::json({40}));
  auto saved = nlohmann::json::parse(file_bytes(dir / "without/final/tokenizer.json"));
  EXPECT_EQ(tokenizer_gist_ids(saved, 1), (std::vector<int32_t>{40})) << "the new row is named";
  EXPECT_EQ(saved["version"], "1.0") << "the rest of the tokenizer is kept";

  // Killed after the rows were added and resumed: the final tokenizer still names them.
  o.out = (dir / "resumed").string();
  o.steps = 4;
  train_hooks kill;
  kill.stop_after_steps = 3;  // the last checkpoint is step 2
  run_training(o, kill);
  run_training(o, {});
  auto resumed = nlohmann::json::parse(file_bytes(dir / "resumed/final/tokenizer.json"));
  EXPECT_EQ(tokenizer_gist_ids(resumed, 1), (std::vector<int32_t>{40}));
  fs::remove_all(dir);
}

TEST(Trainer, TinyRunLossFalls) {
  auto dir = test::train_temp_dir("falls");
  auto o = test::tiny_run(test::make_tiny_dataset(dir / "data"), (dir / "run").string());
  o.steps = 60;
  o.warmup = 5;
  o.eval_every = 30;
  o.save_every = 0;
  std::vector<double> losses, val;
  train_hooks h;
  h.on_record = [&](const nlohmann::json& j) {
    if (j.contains("loss")) losses.push_back(j["loss"]);
    if (j.contains("val_loss")) val.push_back(j["val_loss"]);
  };
  train_result r = run_training(o, h);
  ASSERT_EQ(losses.size(), 60u);
  ASSERT_EQ(val.size(), 2u);
  EXPECT_GT(losses[0], 3.0);  // ~ln(41) at random init
  double tail = 0;
  for (int i = 50; i < 60; i++) tail += losses[i] / 10;
  EXPECT_LT(tail, 0.6 * losses[0]) << "loss from " << losses[0] << " to " << tail;
  EXPECT_LT(val[1], val[0]);
  // The run folder holds the final model (a GSA model with the gist row), the log and the plot.
  model_config fc = load_model_config((dir / "run/final/config.json").string());
  EXPECT_EQ(fc.vocab_size, 41);
  EXPECT_EQ(fc.gsa["gist_token_ids"], nlohmann::json({40}));
  EXPECT_NE(file_bytes(dir / "run/loss.svg").find("<polyline"), std::string::npos);
  EXPECT_EQ(r.final_dir, (dir / "run/final").string());
  fs::remove_all(dir);
}

TEST(Trainer, KilledAndResumedRunIsBitExact) {
  auto dir = test::train_temp_dir("resume");
  auto data = test::make_tiny_dataset(dir / "data");
  auto a = test::tiny_run(data, (dir / "a").string());
  a.gsa["train_mode"] = "unfold";
  a.grad_accum = 2;
  a.steps = 7;
  auto b = a;
  b.out = (dir / "b").string();
  run_training(a);

  train_hooks kill;
  kill.stop_after_steps = 5;  // last checkpoint is step 4; step 5 is lost with the "kill"
  train_result killed = run_training(b, kill);
  EXPECT_EQ(killed.step, 5);
  EXPECT_TRUE(killed.final_dir.empty());
  EXPECT_EQ(file_bytes(dir / "b/latest"), "checkpoint-4\n");
  train_result resumed = run_training(b);
  EXPECT_EQ(resumed.resumed_from, 4);
  EXPECT_EQ(resumed.step, 7);

  auto wa = file_bytes(dir / "a/final/model.safetensors"), wb = file_bytes(dir / "b/final/model.safetensors");
  ASSERT_GT(wa.size(), 1000u);
  EXPECT_TRUE(wa == wb) << "final weights differ after resume";

  // Started again once finished: nothing trains, the weights stay, and the summary has the logged losses (it
  // printed "final loss nan, validation loss nan").
  train_result again = run_training(b);
  EXPECT_EQ(again.resumed_from, 7);
  EXPECT_EQ(again.step, 7);
  EXPECT_DOUBLE_EQ(again.last_loss, resumed.last_loss);
  EXPECT_DOUBLE_EQ(again.last_val_loss, resumed.last_val_loss);
  EXPECT_TRUE(file_bytes(dir / "b/final/model.safetensors") == wb);
  EXPECT_TRUE(file_bytes(dir / "a/checkpoint-7/optimizer.safetensors") ==
              file_bytes(dir / "b/checkpoint-7/optimizer.safetensors"));
  // Logged losses agree step for step, and the log has each step once.
  auto losses = [&](const fs::path& log) {
    std::vector<std::pair<int64_t, double>> v;
    std::ifstream f(log);
    std::string line;
    while (std::getline(f, line)) {
      auto j = nlohmann::json::parse(line);
      if (j.contains("loss")) v.emplace_back(j["step"], j["loss"]);
    }
    return v;
  };
  EXPECT_EQ(losses(dir / "a/log.jsonl"), losses(dir / "b/log.jsonl"));
  EXPECT_EQ(losses(dir / "b/log.jsonl").size(), 7u);
  // keep_checkpoints = 2: only the two newest remain.
  EXPECT_FALSE(fs::exists(dir / "a/checkpoint-4"));
  EXPECT_TRUE(fs::exists(dir / "a/checkpoint-6"));
  EXPECT_TRUE(fs::exists(dir / "a/checkpoint-7"));
  EXPECT_EQ(latest_checkpoint((dir / "a").string()), (dir / "a/checkpoint-7").string());
  fs::remove_all(dir);
}

// A fake task: a "key" token early, filler, then question marker and the key as the answer.
train_sample fake_task(const std::string& task, int64_t length, uint64_t seed) {
  rng r(seed);
  train_sample s;
  int32_t key = int32_t(r.below(30));
  s.raw.push_back(key);
  while (int64_t(s.raw.size()) < length - 3) s.raw.push_back(int32_t(30 + r.below(5)));
  s.ctx_end = int(s.raw.size());
  s.raw.push_back(38);  // "question"
  s.loss_begin = int(s.raw.size());
  s.raw.push_back(key);
  s.raw.push_back(39);  // separator / eos
  return s;
}

TEST(Trainer, MixWithTasksAndSuffixUnfold) {
  // Proportions: 2000 draws of a 0.25 task share land near 500 (deterministic for the seed).
  auto dir = test::train_temp_dir("mix");
  auto data = test::make_tiny_dataset(dir / "data");
  data::dataset ds = data::open_dataset(data);
  data::window_loader wl(ds.train, 32, 1);
  sample_mixer mx(parse_mix("text=3,passkey=1"), &wl, fake_task, 32, 5);
  int tasks = 0;
  for (int i = 0; i < 2000; i++) tasks += mx.next().source == "passkey";
  EXPECT_NEAR(tasks, 500, 70);
  EXPECT_NE(std::string(), [] {
    try {
      sample_mixer(parse_mix("text=1,passkey=1"), nullptr, {}, 32, 1);
    } catch (const gsa::error& e) {
      return std::string(e.what());
    }
    return std::string();
  }());

  // Task samples train on the answer only; suffix-unfold starts at the question.
  gist::gsa_config g;
  g.chunk = {4};
  g.gist_token_ids = {40};
  g.mode = gist::train_mode::suffix_unfold;
  train_sample t = fake_task("passkey", 32, 9);
  train_sequence q = make_sequence(t, &g, 8);
  int valid = 0;
  for (auto x : q.targets) valid += x != gist::ignore_label;
  EXPECT_EQ(valid, 2);  // the answer and the separator after it
  EXPECT_EQ(q.targets[q.answer_begin], t.raw[t.loss_begin]);
  EXPECT_EQ(q.s.raw_index[q.ctx_end], t.ctx_end);

  auto o = test::tiny_run(data, (dir / "run").string());
  o.mix = "text=0.5,passkey=0.5";
  o.gsa["train_mode"] = "suffix-unfold";
  o.eval_samples = 3;
  std::vector<nlohmann::json> evals;
  train_hooks h;
  h.tasks = fake_task;
  h.on_record = [&](const nlohmann::json& j) {
    if (j.contains("val_loss")) evals.push_back(j);
  };
  run_training(o, h);
  ASSERT_EQ(evals.size(), 2u);
  ASSERT_TRUE(evals[1].contains("tasks"));
  double ex = evals[1]["tasks"]["passkey"]["exact"], acc = evals[1]["tasks"]["passkey"]["token_accuracy"];
  EXPECT_TRUE(ex >= 0 && ex <= 1 && acc >= 0 && acc <= 1);
  // Trained per chunk: the eval also reports the training selection's figure; per token it has nothing to add.
  EXPECT_TRUE(evals[1]["tasks"]["passkey"].contains("exact_train_select"));
  o.out = (dir / "run-token").string();
  o.gsa["train_select"] = "token";
  evals.clear();
  run_training(o, h);
  ASSERT_EQ(evals.size(), 2u);
  EXPECT_FALSE(evals[1]["tasks"]["passkey"].contains("exact_train_select"));
  EXPECT_TRUE(evals[1]["tasks"]["passkey"].contains("exact"));
  fs::remove_all(dir);
}

TEST(Trainer, FullAttentionBaselineFromTheSameRecipe) {
  auto dir = test::train_temp_dir("full");
  auto o = test::tiny_run(test::make_tiny_dataset(dir / "data"), (dir / "run").string());
  o.gsa = nullptr;
  o.steps = 3;
  run_training(o);
  model_config fc = load_model_config((dir / "run/final/config.json").string());
  EXPECT_EQ(fc.vocab_size, 40) << "no gist rows";
  EXPECT_TRUE(fc.gsa.is_null());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace gsa


namespace gsa {

// --on-nan (issue 12): a step whose loss is not finite stops the run with a clear error and leaves the last good
// checkpoint as it was (stop), or is dropped without touching the weights (skip).
TEST(Trainer, NonFiniteLossStopsOrSkipsAndNeverPoisonsACheckpoint) {
  auto dir = test::train_temp_dir("onnan");
  auto data = test::make_tiny_dataset(dir / "data");
  auto o = test::tiny_run(data, (dir / "stop").string());
  o.steps = 6;
  o.save_every = 2;
  train_hooks poison;
  poison.before_update = [](int64_t step, double& loss) {
    if (step == 5) loss = std::numeric_limits<double>::quiet_NaN();
  };
  try {
    run_training(o, poison);
    FAIL() << "a NaN loss did not stop the run";
  } catch (const error& e) {
    EXPECT_NE(std::string(e.what()).find("the loss is nan at step 5"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--on-nan skip"), std::string::npos) << e.what();
  }
  EXPECT_EQ(file_bytes(dir / "stop/latest"), "checkpoint-4\n");
  EXPECT_FALSE(fs::exists(dir / "stop/final"));

  // skip: step 5 is dropped; every other step updates; the run ends with finite weights and a checkpoint.
  auto s = o;
  s.out = (dir / "skip").string();
  s.on_nan = "skip";
  train_result r = run_training(s, poison);
  EXPECT_EQ(r.step, 6);
  EXPECT_EQ(r.skipped_steps, 1);
  EXPECT_TRUE(std::isfinite(r.last_val_loss));
  auto tj = nlohmann::json::parse(file_bytes(dir / "skip/checkpoint-6/trainer.json"));
  EXPECT_EQ(tj.at("step"), 6);

  // Ten in a row stop even with skip.
  auto t = s;
  t.out = (dir / "skip10").string();
  t.steps = 14;
  train_hooks always;
  always.before_update = [](int64_t, double& loss) { loss = std::numeric_limits<double>::infinity(); };
  EXPECT_THROW(run_training(t, always), error);
  EXPECT_FALSE(fs::exists(dir / "skip10/final"));
  fs::remove_all(dir);
}

}  // namespace gsa

#include <fcntl.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <sys/wait.h>

namespace gsa {
namespace {

// Crash-safe training, proven (issue 12 item 6): a child process trains and is killed with SIGKILL at random
// moments (mid-step and, with a checkpoint every step, often mid-write), again and again; every restart resumes
// from OUT/latest. The final weights must equal an uninterrupted run's bit for bit: a partial checkpoint that got
// loaded, a lost log line or a skipped data position would all show. The child is this test program started
// again (fork + exec of /proc/self/exe running TrainerChild.RunFromEnvironment): a bare fork of a process whose
// OpenMP and OpenBLAS threads ran earlier tests can deadlock in the child.
// Starts this test program again (fork + exec) running only the test `filter`, with GSA_TEST_CHILD_DATA and
// GSA_TEST_CHILD_OUT set for it; its stdout (the gtest report would mix into ours) and, if quiet_stderr, its
// stderr go to /dev/null. Returns its pid.
pid_t start_child(const char* filter, const std::string& data, const std::string& out, bool quiet_stderr) {
  const std::string f = std::string("--gtest_filter=") + filter;  // (no allocation in the child before exec)
  const pid_t pid = fork();
  if (pid == 0) {
    const int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) dup2(devnull, 1);
    if (devnull >= 0 && quiet_stderr) dup2(devnull, 2);
    setenv("GSA_TEST_CHILD_DATA", data.c_str(), 1);
    setenv("GSA_TEST_CHILD_OUT", out.c_str(), 1);
    execl("/proc/self/exe", "test_train", f.c_str(), "--gtest_brief=1", static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

train_options sigkill_run(const std::string& data, const std::string& out) {
  auto o = test::tiny_run(data, out);
  o.gsa["train_mode"] = "unfold";
  o.steps = 40;
  o.save_every = 1;  // a checkpoint write in almost every moment
  o.keep_checkpoints = 2;
  o.eval_every = 10;
  return o;
}

TEST(TrainerChild, RunFromEnvironment) {
  const char* data = std::getenv("GSA_TEST_CHILD_DATA");
  const char* out = std::getenv("GSA_TEST_CHILD_OUT");
  if (!data || !out) GTEST_SKIP() << "the child of Trainer.SigkilledAtRandomMomentsAndResumedIsBitExact";
  run_training(sigkill_run(data, out));
}

TEST(Trainer, SigkilledAtRandomMomentsAndResumedIsBitExact) {
  auto dir = test::train_temp_dir("sigkill");
  auto data = test::make_tiny_dataset(dir / "data");
  auto o = sigkill_run(data, (dir / "killed").string());
  // The child's run from start to end (`out` from scratch, never killed) times the kills: the delays below are
  // fractions of it, so that on a slow or a fast machine alike every kill lands mid-run and the run needs several.
  auto run_child = [&](const std::string& out, int64_t delay_us) {  // true when the run finished before the kill
    const pid_t pid = start_child("TrainerChild.RunFromEnvironment", data, out, false);
    if (delay_us > 0) usleep(useconds_t(delay_us));
    if (delay_us > 0) kill(pid, SIGKILL);
    int st = 0;
    waitpid(pid, &st, 0);
    if (WIFEXITED(st)) {
      EXPECT_EQ(WEXITSTATUS(st), 0) << "the training child failed (a partial checkpoint loaded?)";
      return WEXITSTATUS(st) == 0;
    }
    return false;
  };
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(run_child((dir / "ref").string(), 0)) << "the uninterrupted reference run failed";
  const int64_t whole_us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
  // Each kill comes 1/20 to 1/5 of a whole run into a child's life, so one life makes at most a fifth of the run's
  // progress (less its start-up) and at least four kills land before a child can finish.
  rng r(2026);
  int kills = 0;
  for (int i = 0; i < 80 && !fs::exists(dir / "killed/final/model.safetensors"); i++) {
    if (run_child(o.out, whole_us / 20 + int64_t(r.below(uint64_t(whole_us * 3 / 20))))) break;
    kills++;
  }
  ASSERT_TRUE(run_child(o.out, 0)) << "the run did not finish after " << kills << " kills";  // finish it
  EXPECT_GE(kills, 3) << "too few kills landed before the run finished (whole run " << whole_us << " us)";

  auto wa = file_bytes(dir / "ref/final/model.safetensors"), wb = file_bytes(dir / "killed/final/model.safetensors");
  ASSERT_GT(wa.size(), 1000u);
  EXPECT_TRUE(wa == wb) << "final weights differ after " << kills << " SIGKILLs";
  // The log holds each step once, in order, despite the kills.
  std::ifstream f(dir / "killed/log.jsonl");
  std::string line;
  int64_t last = 0;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line);
    if (!j.contains("loss")) continue;
    EXPECT_EQ(j.at("step").get<int64_t>(), last + 1);
    last = j.at("step").get<int64_t>();
  }
  EXPECT_EQ(last, 40);
  fs::remove_all(dir);
}

// A run that `timeout` or a scheduler stops with SIGTERM (train/stop-signal.h): no periodic checkpoints, so the
// only one before the end is the one the stop writes, at the step reached.
train_options sigterm_run(const std::string& data, const std::string& out) {
  auto o = sigkill_run(data, out);
  o.save_every = 0;
  o.eval_every = 0;
  return o;
}

TEST(TrainerChild, StopFromEnvironment) {
  const char* data = std::getenv("GSA_TEST_CHILD_DATA");
  const char* out = std::getenv("GSA_TEST_CHILD_OUT");
  if (!data || !out) GTEST_SKIP() << "the child of Trainer.SigtermSavesTheStepReachedAndResumesBitExact";
  install_stop_signals();
  const train_result r = run_training(sigterm_run(data, out));
  std::fflush(nullptr);
  std::_Exit(r.stopped_by ? 128 + r.stopped_by : 0);
}

TEST(Trainer, SigtermSavesTheStepReachedAndResumesBitExact) {
  auto dir = test::train_temp_dir("sigterm");
  auto data = test::make_tiny_dataset(dir / "data");
  auto o = sigterm_run(data, (dir / "stopped").string());
  // The child's exit status after a SIGTERM delay_us into its life (-1: the signal's default action ended it,
  // i.e. it came before the handlers were installed). The signal comes twice, as coreutils' timeout sends it (to
  // the command, then to its process group; test-stop-signal.cpp tests that the handler takes that as one stop).
  auto run_child = [&](int64_t delay_us) {
    fs::remove_all(o.out);
    const pid_t pid = start_child("TrainerChild.StopFromEnvironment", data, o.out, true);
    usleep(useconds_t(delay_us));
    kill(pid, SIGTERM);
    usleep(1000);
    kill(pid, SIGTERM);
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  };
  // Until the signal lands mid-run: a child that finished first is signalled earlier next time, one the signal
  // ended before its handlers were installed later.
  int status = -1;
  int64_t delay = 400000;
  for (int i = 0; i < 24 && status != 128 + SIGTERM; i++) {
    status = run_child(delay);
    ASSERT_NE(status, 127) << "the child could not start";
    ASSERT_TRUE(status == 0 || status == -1 || status == 128 + SIGTERM) << "the child failed: exit " << status;
    if (status == 0) delay = std::max<int64_t>(1000, delay / 2);
    if (status == -1) delay = delay * 3 / 2;
  }
  ASSERT_EQ(status, 128 + SIGTERM) << "no SIGTERM landed during the run";
  // One checkpoint, at the step reached, and no final/.
  EXPECT_FALSE(fs::exists(dir / "stopped/final"));
  std::vector<int64_t> saved;
  for (const auto& e : fs::directory_iterator(o.out)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("checkpoint-", 0) == 0) saved.push_back(std::stoll(n.substr(11)));
  }
  ASSERT_EQ(saved.size(), 1u) << "the stop wrote no checkpoint (or periodic saves were on)";
  EXPECT_GT(saved[0], 0);
  EXPECT_LT(saved[0], 40);
  // The same command again resumes there and ends with an unstopped run's weights, bit for bit.
  const train_result r = run_training(o);
  EXPECT_EQ(r.resumed_from, saved[0]);
  EXPECT_EQ(r.step, 40);
  EXPECT_EQ(r.stopped_by, 0);
  auto ref = o;
  ref.out = (dir / "ref").string();
  run_training(ref);
  auto wa = file_bytes(dir / "ref/final/model.safetensors"), wb = file_bytes(dir / "stopped/final/model.safetensors");
  ASSERT_GT(wa.size(), 1000u);
  EXPECT_TRUE(wa == wb) << "a run stopped by SIGTERM at step " << saved[0] << " and resumed ends elsewhere";
  fs::remove_all(dir);
}

}  // namespace
}  // namespace gsa

#include <omp.h>

namespace gsa {
namespace {

// Issue 12: resume was bit-exact only at the same OpenMP thread count (1 and 2 threads gave different weights).
// Every reduction is now independent of the thread count: a run killed at 1 thread and resumed at 2 ends with the
// weights of an uninterrupted 3-thread run, bit for bit (unfold mode: the plan-driven attention backward).
TEST(Trainer, WeightsDoNotDependOnTheThreadCount) {
  auto dir = test::train_temp_dir("threads");
  auto data = test::make_tiny_dataset(dir / "data");
  auto o = test::tiny_run(data, (dir / "t3").string());
  o.gsa["train_mode"] = "unfold";
  o.grad_accum = 2;
  o.steps = 6;
  const int saved = omp_get_max_threads();
  omp_set_num_threads(3);
  run_training(o);
  auto b = o;
  b.out = (dir / "t12").string();
  train_hooks kill;
  kill.stop_after_steps = 3;
  omp_set_num_threads(1);
  run_training(b, kill);
  omp_set_num_threads(2);
  run_training(b);
  omp_set_num_threads(saved);
  auto wa = file_bytes(dir / "t3/final/model.safetensors"), wb = file_bytes(dir / "t12/final/model.safetensors");
  ASSERT_GT(wa.size(), 1000u);
  EXPECT_TRUE(wa == wb) << "weights depend on the OpenMP thread count";
  fs::remove_all(dir);
}

}  // namespace
}  // namespace gsa
