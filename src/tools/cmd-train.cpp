// `gsa train [--config RECIPE.json] [--flag value ...]`: the trainer (train/trainer.h) with flags generated
// from the option table (train/options-cli.h). Generated retrieval tasks in the mix come from eval/tasks.h,
// tokenized with the run's tokenizer (--tokenizer, else the model's folder, else the one the data was
// prepared with): context, then "\n\n" + question + "\n", then the answer (the only tokens with a loss), then
// the data's separator.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <filesystem>
#include <memory>

#include "core/error.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "eval/tasks.h"
#include "tokenizer/tokenizer.h"
#include "tools/commands.h"
#include "train/options-cli.h"
#include "train/trainer.h"

namespace gsa::tools {
namespace {

namespace fs = std::filesystem;

task_source make_task_source(const train_options& o) {
  bool needs = false;
  for (auto& e : parse_mix(o.mix)) needs |= e.source != "text" && e.weight > 0;
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
  return [tok, sep, haystack, loss_on_all](const std::string& task, int64_t length, uint64_t seed) {
    eval::task_params p;
    p.task = task;
    p.seed = seed;
    rng r(seed);
    p.depth = double(r.uniform());
    p.length_tokens = std::max<int64_t>(32, length - 48);  // room for the question and the answer
    p.haystack_dir = haystack;
    eval::sample s = eval::generate(p, [&](std::string_view t) { return tok->encode(t); });
    train_sample x;
    x.raw = tok->encode(s.context);
    x.ctx_end = int(x.raw.size());
    auto q = tok->encode("\n\n" + s.question + "\n");
    x.raw.insert(x.raw.end(), q.begin(), q.end());
    // "all": the whole sample is text to predict too; the needle repeats its value, so predicting the repeat is a
    // short-range copy that teaches the mechanism the answer needs at long range.
    x.answer_begin = int(x.raw.size());
    x.loss_begin = loss_on_all ? 0 : x.answer_begin;
    std::string ans;
    for (auto& a : s.answers) ans += (ans.empty() ? "" : ", ") + a;
    auto av = tok->encode(ans);
    x.raw.insert(x.raw.end(), av.begin(), av.end());
    if (sep >= 0) x.raw.push_back(int32_t(sep));
    return x;
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
                    train_hooks h;
                    h.tasks = make_task_source(o);
                    train_result r = run_training(o, h);
                    fmt::print("trained {} steps; final loss {:.4f}, validation loss {:.4f}; model in {}\n", r.step,
                               r.last_loss, r.last_val_loss, r.final_dir);
                    return 0;
                  }});
}

}  // namespace gsa::tools
