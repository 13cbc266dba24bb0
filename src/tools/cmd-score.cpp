// `gsa score --pred FILE.jsonl [--dataset NAME] [--e] [--per-sample] [--json]`: scores a LongBench prediction
// file (pred, answers, all_classes, length per line) exactly as THUDM/LongBench's eval.py does
// (eval/longbench-score.h), so any system's output can be scored here. Prints the score in percent with two
// decimals, or the JSON report with every sample's score.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "core/error.h"
#include "eval/longbench-score.h"
#include "eval/longbench.h"
#include "tools/commands.h"

namespace gsa::tools {

namespace {

struct score_args {
  std::string pred, dataset;
  bool longbench_e = false, per_sample = false, json = false;
};

int run_score(const score_args& a) {
  std::string dataset = a.dataset;
  if (dataset.empty()) {
    dataset = eval::dataset_from_file_name(a.pred);
    const auto known = eval::longbench_datasets();
    if (std::find(known.begin(), known.end(), dataset) == known.end())
      fail("--dataset is missing and the file name '{}' names no LongBench dataset (eval.py reads the dataset "
           "from the name before its first '.'); give --dataset NAME, one of {}",
           a.pred, fmt::join(known, ", "));
  } else {
    eval::longbench_metric(dataset);  // an unknown name fails here, listing the known ones
  }
  const auto preds = eval::load_predictions(a.pred, dataset, a.longbench_e);
  const auto s = eval::score_predictions(dataset, preds, a.longbench_e, a.pred);
  if (a.json) fmt::print("{}\n", eval::dataset_score_json(s, preds));
  else fmt::print("{}", eval::dataset_score_text(s, a.per_sample, preds));
  return 0;
}

}  // namespace

void register_score(CLI::App& app, command_list& cmds) {
  auto* sub = app.add_subcommand("score", "Score a LongBench prediction file exactly as LongBench's eval.py does");
  static score_args a;
  sub->add_option("--pred", a.pred, "Prediction .jsonl: pred, answers, all_classes, length per line")->required();
  sub->add_option("--dataset", a.dataset,
                  "LongBench dataset (hotpotqa, trec, ...; default: the file name before its first '.', as "
                  "eval.py reads it)");
  sub->add_flag("--e", a.longbench_e, "LongBench-E: scores per length bucket 0-4k, 4-8k, 8k+");
  sub->add_flag("--per-sample", a.per_sample, "Also print each line's score in [0, 1]");
  sub->add_flag("--json", a.json, "Print a JSON report (score, per_sample) instead of text");
  cmds.push_back({sub, [] { return run_score(a); }});
}

}  // namespace gsa::tools
