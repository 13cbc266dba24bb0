// `gsa eval --model DIR (--tasks LIST | --jsonl FILE) [--lengths LIST] [--depths LIST] [--methods LIST]
//  [--ratios LIST] [--samples N] [--seed S] [--full-model DIR] [--tokenizer PATH] [--template T] [--max-tokens N]
//  [--prefill auto|gist-mask|unfold] [--json OUT] [--plot OUT.svg] [--by-depth] [--progress]`:
// runs every (task, method, ratio, length, depth) cell through the decoding engine (infer/eval-runner.h) with a
// progress bar and ETA on stderr, prints the markdown table (mean over depths; per depth with --by-depth) on
// stdout, writes the records as a JSON array and an accuracy-vs-length SVG plot.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "core/error.h"
#include "eval/plot-svg.h"
#include "eval/results.h"
#include "infer/eval-runner.h"
#include "io/atomic-file.h"
#include "tools/commands.h"

namespace gsa::tools {

namespace {

struct eval_args {
  std::string model, full_model, tok_path, tasks, jsonl, lengths = "1k", depths = "0.5", methods, ratios = "8";
  std::string tmpl = "{context}\\n\\n{question}\\n", haystack = "../shared/data/text/haystack", qa_jsonl;
  std::string json_out, plot_out, prefill = "auto";
  int samples = 1, max_tokens = 16;
  uint64_t seed = 0;
  bool by_depth = false, progress = false, show = false;
};

std::string duration(double s) {
  const int64_t t = int64_t(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02}m", t / 3600, t / 60 % 60);
  if (t >= 60) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

// "[=========>          ] 12/40 runs  30%  elapsed 1m02s  ETA 2m25s", redrawn in place.
class eval_bar {
 public:
  explicit eval_bar(bool on) : on_(on), start_(std::chrono::steady_clock::now()) {}
  void operator()(size_t done, size_t total) {
    if (!on_ || total == 0) return;
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const int width = 30, fill = int(width * done / total);
    std::string bar(size_t(fill), '=');
    if (fill < width) bar += '>' + std::string(size_t(width - fill - 1), ' ');
    const std::string eta = done ? duration(el / double(done) * double(total - done)) : "?";
    fmt::print(stderr, "\r[{}] {}/{} runs {:3}%  elapsed {}  ETA {}   ", bar, done, total, 100 * done / total,
               duration(el), eta);
    if (done == total) fmt::print(stderr, "\n");
    std::fflush(stderr);
  }

 private:
  bool on_;
  std::chrono::steady_clock::time_point start_;
};

int run_eval_cmd(const eval_args& a) {
  infer::eval_spec spec;
  if (!a.tasks.empty()) spec.tasks = infer::parse_name_list(a.tasks, "--tasks");
  spec.jsonl = a.jsonl;
  spec.lengths = parse_lengths(a.lengths, "--lengths");
  spec.depths = infer::parse_depths(a.depths);
  spec.ratios = infer::parse_ratios(a.ratios);
  spec.samples = a.samples;
  spec.seed = a.seed;
  spec.max_tokens = a.max_tokens;
  spec.prompt_template = infer::unescape_template(a.tmpl);
  spec.haystack_dir = a.haystack;
  spec.qa_jsonl = a.qa_jsonl;
  if (!a.plot_out.empty() && std::filesystem::path(a.plot_out).extension() != ".svg")
    fail("--plot {}: the plot is an SVG file (any browser shows it); give a name ending in .svg", a.plot_out);

  llama_model model = load_model(a.model);
  llama_model full;
  if (!a.full_model.empty()) full = load_model(a.full_model);
  tokenizer tok = tokenizer::load(a.tok_path.empty() ? a.model : a.tok_path);
  infer::eval_models models{&model, a.full_model.empty() ? nullptr : &full, &tok};
  const bool has_gsa = !model.config.gsa.is_null();
  spec.methods = a.methods.empty() ? std::vector<std::string>{has_gsa ? "full,gsa" : "full"}
                                   : std::vector<std::string>{a.methods};
  spec.methods = infer::parse_name_list(spec.methods[0], "--methods");
  infer::validate_eval(spec, models);

  std::vector<std::string> notes;
  bool baselines = false;
  for (const auto& m : spec.methods) baselines = baselines || !infer::uses_gists(infer::method_from_name(m));
  if (baselines && has_gsa && a.full_model.empty())
    notes.push_back("the baselines ran on --model's weights without gists (no --full-model given)");
  for (const auto& v : infer::eval_variants(spec, models))
    if (v.meth == infer::method::gist)
      notes.push_back(fmt::format("gist runs at the model's own ratio c/g = {:g}", v.ratio));

  eval_bar bar(a.progress || isatty(STDERR_FILENO));
  const infer::eval_predictor model_pred = infer::model_predictor(models, spec.max_tokens,
                                                                  infer::prefill_mode_from_name(a.prefill));
  auto predict = [&](const infer::eval_query& q) {
    infer::eval_answer got = model_pred(q);
    if (a.show)
      fmt::print(stderr, "\n[{} {} {:g} L={} depth={:g}] expected \"{}\", got \"{}\"\n", q.sample->task,
                 infer::method_name(q.variant.meth), q.variant.ratio, q.length, q.sample->depth_percent / 100.0,
                 fmt::join(q.sample->answers, "\" & \""), got.text);
    return got;
  };
  auto records = infer::run_eval(spec, models, predict,
                                 [&bar](size_t done, size_t total) { bar(done, total); });

  fmt::print("{}", eval::results_markdown(records));
  if (a.by_depth) fmt::print("\n{}", infer::results_markdown_by_depth(records));
  for (const auto& n : notes) fmt::print("\n> note: {}\n", n);
  if (!a.json_out.empty()) {
    write_file_atomic(a.json_out, eval::results_json(records) + "\n");
    fmt::print(stderr, "wrote {} records to {}\n", records.size(), a.json_out);
  }
  if (!a.plot_out.empty()) {
    eval::plot_options po;
    po.title = fmt::format("Accuracy vs context length ({})", spec.tasks.empty() ? spec.jsonl.filename().string()
                                                                              : a.tasks);
    eval::write_plot_svg(a.plot_out, records, po);
    fmt::print(stderr, "wrote the plot to {}\n", a.plot_out);
  }
  return 0;
}

}  // namespace

void register_eval(CLI::App& app, command_list& cmds) {
  auto* sub = app.add_subcommand("eval", "Long-context accuracy of GSA and the baselines over tasks, lengths, depths");
  static eval_args a;
  sub->add_option("--model", a.model, "Model directory (config.json, model.safetensors, tokenizer.json)")->required();
  sub->add_option("--full-model", a.full_model,
                  "Model without gists for full and the baselines (default: --model's weights without gists)");
  sub->add_option("--tokenizer", a.tok_path, "tokenizer.json or its folder (default: --model's)");
  sub->add_option("--tasks", a.tasks,
                  "Generated tasks: passkey,niah_single,niah_multikey,niah_multivalue,niah_multiquery,"
                  "variable_tracking,kv_retrieval,qa");
  sub->add_option("--jsonl", a.jsonl, "LongBench-format file instead of --tasks (dataset = task)");
  sub->add_option("--lengths", a.lengths, "Context lengths in tokens, e.g. 1k,4k,16k")->capture_default_str();
  sub->add_option("--depths", a.depths, "Needle depths: fractions 0,0.5,1 or percents 0%,50%,100%")
      ->capture_default_str();
  sub->add_option("--methods", a.methods,
                  "full,gist,gsa,hgsa,streaming,quest,moba,h2o (default: full,gsa; full for a model without gists)");
  sub->add_option("--ratios", a.ratios, "Compression ratios r: budget L / r for every method but full and gist")
      ->capture_default_str();
  sub->add_option("--samples", a.samples, "Samples per cell (--jsonl: records per dataset, 0 = all)")
      ->capture_default_str();
  sub->add_option("--seed", a.seed, "Task generation seed")->capture_default_str();
  sub->add_option("--max-tokens", a.max_tokens, "Greedy answer tokens (stops at a newline)")->capture_default_str();
  sub->add_option("--template", a.tmpl, "Prompt with {context} and {question}; \\n is a newline")
      ->capture_default_str();
  sub->add_option("--haystack", a.haystack, "Folder of filler text for the niah_* tasks")->capture_default_str();
  sub->add_option("--qa-jsonl", a.qa_jsonl, "Source of the qa task");
  sub->add_option("--json", a.json_out, "Write the records as a JSON array here");
  sub->add_option("--plot", a.plot_out, "Write an accuracy-vs-length SVG plot here (.svg)");
  sub->add_option("--prefill", a.prefill,
                  "gsa / hgsa context prefill: auto (unfold for a model trained in unfold mode), gist-mask, unfold")
      ->capture_default_str();
  sub->add_flag("--by-depth", a.by_depth, "Also print a table per depth");
  sub->add_flag("--show-predictions", a.show, "Print every expected answer and prediction on stderr");
  sub->add_flag("--progress", a.progress, "Progress bar even when stderr is not a terminal");
  cmds.push_back({sub, [] { return run_eval_cmd(a); }});
}

}  // namespace gsa::tools
