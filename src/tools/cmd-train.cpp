// `gsa train [--config RECIPE.json] [--flag value ...]`: the trainer (train/trainer.h) with flags generated
// from the option table (train/options-cli.h). Generated retrieval tasks in the mix come from eval/tasks.h,
// tokenized with the run's tokenizer (--tokenizer, else the model's folder, else the one the data was
// prepared with): context, then "\n\n" + question + "\n", then the answer (the only tokens with a loss), then
// the data's separator.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <thread>

#include "core/error.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "dist/communicator.h"
#include "dist/launcher.h"
#include "eval/tasks.h"
#include "tokenizer/tokenizer.h"
#include "tools/commands.h"
#include "tools/task-samples.h"
#include "train/options-cli.h"
#include "train/stop-signal.h"
#include "train/trainer.h"

namespace gsa::tools {
namespace {

namespace fs = std::filesystem;

task_source make_task_source(const train_options& o) {
  bool needs = false;
  for (auto& e : parse_mix(o.mix)) {
    needs |= e.source != "text" && e.weight > 0;
    if (e.source == "qa" && e.weight > 0 && o.qa_jsonl.empty())
      fail("the mix draws qa samples, which are cut from a QA file: set qa_jsonl in the config or --qa-jsonl FILE "
           "(a jsonl of {{question, answers, context or passages}}; scripts/fetch-corpus.sh writes one)");
  }
  if (!needs) return {};
  data::dataset ds = data::open_dataset(o.data, /*verify_checksums=*/false);
  std::string tok_path = o.tokenizer;
  if (tok_path.empty() && !o.model.empty() && fs::exists(fs::path(o.model) / "tokenizer.json")) tok_path = o.model;
  if (tok_path.empty()) tok_path = ds.meta.value("source", nlohmann::json::object()).value("tokenizer", "");
  if (tok_path.empty())
    fail("the mix has generated tasks but no tokenizer was found; give --tokenizer (a tokenizer.json or its folder)");
  auto tok = std::make_shared<tokenizer>(tokenizer::load(tok_path));
  const int64_t sep = ds.separator;
  const std::string haystack = o.haystack_dir;
  const bool loss_on_all = o.task_loss == "all";
  const std::string qa = o.qa_jsonl;
  return [tok, sep, haystack, loss_on_all, qa](const std::string& task, int64_t length, uint64_t seed) {
    return make_task_sample(*tok, sep, haystack, task, length, seed, loss_on_all, qa);
  };
}

}  // namespace

void register_train(CLI::App& app, command_list& cmds) {
  auto* sub = app.add_subcommand("train", "Train or continue pretraining a model (GSA or the full-attention baseline)");
  static train_cli cli;
  add_train_flags(sub, cli);
  sub->footer("Every option can also be a key of the --config JSON file; flags override the file.");
  cmds.push_back({sub, [] {
                    train_options o = cli.resolve();
                    const dist::process_group pg = dist::process_group_from_environment();
                    if (o.gpus > 1 && !pg.distributed()) {
                      // This process only starts the group: one child per GPU, each running this command with
                      // RANK / WORLD_SIZE / MASTER_* set (torchrun's variables), and waits for them.
                      std::string why;
                      if (o.device == "cuda" && !dist::gpu_communicator_built(&why)) fail("--gpus {}: {}", o.gpus, why);
                      validate_train_options(o);
                      // The host's cores shared among the ranks (each one's OpenMP team), unless the user chose.
                      std::vector<std::string> env;
                      if (!std::getenv("OMP_NUM_THREADS"))
                        env.push_back(fmt::format("OMP_NUM_THREADS={}",
                                                  std::max(1u, std::thread::hardware_concurrency() / unsigned(o.gpus))));
                      const dist::launch_result lr =
                          dist::launch_local(dist::self_command_line(), int(o.gpus), env);
                      if (lr.failed_rank >= 0)
                        fail("--gpus {}: {}; the other ranks were stopped (the failing rank's message is above)",
                             o.gpus, lr.what);
                      if (lr.stopped_by) {
                        fmt::print(stderr, "--gpus {}: signal {} passed on to every rank (rank 0's message is above); "
                                   "run the same command again to resume\n", o.gpus, lr.stopped_by);
                        return 128 + lr.stopped_by;
                      }
                      return 0;
                    }
                    train_hooks h;
                    h.tasks = make_task_source(o);
                    install_stop_signals();  // SIGTERM / SIGINT: save the step reached, then stop
                    train_result r = run_training(o, h);
                    if (r.stopped_by) {
                      if (pg.rank == 0)
                        fmt::print(stderr, "stopped by signal {} after step {} of {}: {}; run the same command again "
                                   "to resume from there\n", r.stopped_by, r.step, o.steps,
                                   o.save ? "checkpoint written" : "nothing saved (--no-save)");
                      return 128 + r.stopped_by;  // the shell's code for a run a signal ended
                    }
                    if (pg.rank == 0)
                      fmt::print("trained {} steps; final loss {:.4f}, validation loss {:.4f}; model in {}\n", r.step,
                                 r.last_loss, r.last_val_loss, r.final_dir.empty() ? "(not saved)" : r.final_dir);
                    return 0;
                  }});
}

}  // namespace gsa::tools
