// `gsa eval --model DIR (--tasks LIST | --jsonl FILE) [--lengths LIST] [--depths LIST] [--methods LIST]
//  [--ratios LIST] [--samples N] [--seed S] [--full-model DIR] [--tokenizer PATH] [--template T] [--max-tokens N]
//  [--prefill auto|gist-mask|unfold] [--json OUT] [--plot OUT.svg] [--by-depth] [--progress]
//  [--longbench-e] [--pred-dir DIR]`:
// runs every (task, method, ratio, length, depth) cell through the decoding engine with a progress bar and ETA on
// stderr, prints the markdown table (mean over depths; per depth with --by-depth) on stdout, writes the records
// as a JSON array and an accuracy-vs-length SVG plot. Generated tasks run through infer/eval-runner.h; a
// LongBench file runs LongBench's pred.py protocol (eval/longbench-protocol.h, longbench-run below), one length
// budget per --lengths entry, and is also scored by eval.py's rules (eval/longbench-score.h).
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <span>

#include "core/error.h"
#include "eval/longbench-protocol.h"
#include "eval/longbench-score.h"
#include "eval/longbench.h"
#include "eval/plot-svg.h"
#include "eval/text-util.h"
#include "eval/results.h"
#include "infer/eval-runner.h"
#include "infer/generate.h"
#include "infer/session.h"
#include "io/atomic-file.h"
#include "tools/commands.h"
#include "tools/model-device.h"

namespace gsa::tools {

namespace {

struct eval_args {
  std::string model, full_model, tok_path, tasks, jsonl, lengths = "1k", depths = "0.5", methods, ratios = "8";
  std::string tmpl = "{context}\\n\\n{question}\\n", haystack = "../shared/data/text/haystack", qa_jsonl;
  std::string json_out, plot_out, prefill = "auto";
  int64_t gpu_kv_budget = 0;
  int samples = 1, max_tokens = 16;
  uint64_t seed = 0;
  bool by_depth = false, progress = false, show = false, longbench_e = false, ci = false;
  std::string pred_dir;
  bool max_tokens_given = false, template_given = false;
  device_options dev;
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

// ---- LongBench's pred.py protocol -------------------------------------------------------------------------

// One answer as pred.py generates it: greedy, at most the dataset's answer length, stopping after an
// end-of-sequence id; on samsum also after the newline token (tokenizer.encode("\n")[-1]), which like the
// end-of-sequence ids may not be the first token (pred.py's min_length = prompt + 1). The prompt's context part
// is prefilled and the rest appended, so the question's rows select chunks like any decoded token.
std::string longbench_answer(const infer::eval_models& models, const infer::eval_variant& v, int64_t budget,
                             infer::prefill_mode prefill, int64_t gpu_kv_budget, const std::vector<int32_t>& ids,
                             size_t split,
                             const eval::longbench_dataset_info& info) {
  const llama_model& m = models.for_method(v.meth);
  const tokenizer& tok = *models.tok;
  infer::session_options o;
  o.meth = v.meth;
  o.budget = budget;
  o.prefill = prefill;
  o.gpu_kv_budget = gpu_kv_budget;
  if (v.budget_ratio > 0) o.ratio = float(v.budget_ratio);
  infer::session s(m, o);
  s.prefill(std::vector<int32_t>(ids.begin(), ids.begin() + long(split)));
  s.append(std::vector<int32_t>(ids.begin() + long(split), ids.end()));
  infer::run_pending({&s});
  infer::generate_options g;
  g.max_tokens = info.max_new_tokens;
  for (int64_t id : m.config.eos_token_id) g.stop_ids.push_back(int32_t(id));
  std::vector<int32_t> out;
  if (eval::longbench_stops_at_newline(info.dataset)) {
    if (auto nl = tok.encode("\n"); !nl.empty()) g.stop_ids.push_back(nl.back());
    const std::vector<float>& lg = s.logits();
    int32_t best = -1;
    for (int32_t i = 0; i < int32_t(lg.size()); i++)
      if (std::find(g.stop_ids.begin(), g.stop_ids.end(), i) == g.stop_ids.end() && (best < 0 || lg[i] > lg[best]))
        best = i;
    out.push_back(best);
    s.append({best});
    g.max_tokens--;
  }
  if (g.max_tokens > 0) {
    const auto gen = infer::generate({&s}, g);
    out.insert(out.end(), gen[0].ids.begin(), gen[0].ids.end());
  }
  std::vector<int32_t> text;  // a weak model may emit gist ids or padded-vocabulary ids: not text
  for (int32_t id : out)
    if (id >= 0 && size_t(id) < tok.vocab_size()) text.push_back(id);
  return eval::utf8_sanitize(tok.decode(text, true));
}

// Where the prefill ends in the tokenized prompt: after the tokens it shares with the prompt's context part
// tokenized alone (a BPE merge across the boundary only moves the split), leaving at least one token to append.
size_t longbench_split(const tokenizer& tok, const std::vector<int32_t>& ids, const std::string& prompt,
                       const std::string& after_context) {
  size_t k = ids.size() - 1;
  if (prompt.size() >= after_context.size() &&
      prompt.compare(prompt.size() - after_context.size(), after_context.size(), after_context) == 0) {
    const auto pre = tok.encode(std::string_view(prompt).substr(0, prompt.size() - after_context.size()), true);
    size_t common = 0;
    while (common < pre.size() && common < ids.size() && pre[common] == ids[common]) common++;
    k = std::min(k, common);
  }
  return std::max<size_t>(k, 1);
}

struct longbench_result {
  std::vector<eval::result_record> records;
  std::string scores_markdown;  // eval.py's numbers
};

longbench_result run_longbench(const eval_args& a, const infer::eval_spec& spec, const infer::eval_models& models,
                               const std::vector<eval::longbench_record>& all, eval_bar& bar) {
  const tokenizer& tok = *models.tok;
  std::vector<std::string> datasets;
  std::map<std::string, std::vector<const eval::longbench_record*>> by_set;
  for (const auto& r : all) {
    auto& v = by_set[r.dataset];
    if (v.empty()) datasets.push_back(r.dataset);
    if (spec.samples == 0 || int(v.size()) < spec.samples) v.push_back(&r);
  }
  const auto variants = infer::eval_variants(spec, models);
  const auto prefill = infer::prefill_mode_from_name(a.prefill);
  const eval::token_encoder encode = [&tok](std::string_view t) { return tok.encode(t, true); };
  // Hugging Face's decode replaces the bytes of a character that a cut split; the tokenizer refuses them.
  const eval::token_decoder decode = [&tok](std::span<const int32_t> ids) {
    return eval::utf8_sanitize(tok.decode(ids, true));
  };
  size_t total = 0, done = 0;
  for (const auto& d : datasets) total += by_set[d].size() * spec.lengths.size() * variants.size();
  bar(0, total);

  // (dataset, variant, length) -> predictions in record order, as pred.py writes them.
  std::map<std::array<size_t, 3>, std::vector<eval::prediction_record>> preds;
  for (size_t di = 0; di < datasets.size(); di++) {
    const auto& info = eval::longbench_info(datasets[di]);
    for (size_t li = 0; li < spec.lengths.size(); li++)
      for (const auto* r : by_set[datasets[di]]) {
        const auto text = eval::longbench_prompt(*r);
        const std::string prompt = eval::truncate_prompt_middle(text.prompt, spec.lengths[li], encode, decode);
        const std::vector<int32_t> ids = encode(prompt);
        const size_t split = longbench_split(tok, ids, prompt, text.after_context);
        for (size_t vi = 0; vi < variants.size(); vi++) {
          const auto& v = variants[vi];
          const int64_t max_pos = models.for_method(v.meth).config.max_position_embeddings;
          if (int64_t(ids.size()) + info.max_new_tokens > max_pos)
            fail("{}:{}: the {} prompt is {} tokens at --lengths {}, + {} answer tokens is beyond the model's {} "
                 "positions; lower --lengths",
                 a.jsonl, r->line, r->dataset, ids.size(), spec.lengths[li], info.max_new_tokens, max_pos);
          const int64_t budget =
              v.budget_ratio > 0 ? std::max<int64_t>(1, int64_t(std::floor(double(split) / v.budget_ratio))) : -1;
          std::string pred = longbench_answer(models, v, budget, prefill, a.gpu_kv_budget, ids, split, info);
          if (a.show)
            fmt::print(stderr, "\n[{} {} {:g} L={} line {}] expected \"{}\", got \"{}\"\n", r->dataset,
                       infer::method_name(v.meth), v.ratio, spec.lengths[li], r->line, fmt::join(r->answers, "\" & \""),
                       pred);
          eval::prediction_record p;
          p.pred = std::move(pred);
          p.answers = r->answers;
          if (!r->all_classes.empty()) p.all_classes = r->all_classes;
          p.length = r->length;
          p.line = r->line;
          preds[{di, vi, li}].push_back(std::move(p));
          bar(++done, total);
        }
      }
  }

  longbench_result out;
  out.scores_markdown = a.longbench_e ? "| dataset | method | length | 0-4k | 4-8k | 8k+ |\n|---|---|---:|---:|---:|---:|\n"
                                      : "| dataset | method | length | score |\n|---|---|---:|---:|\n";
  for (const auto& [key, list] : preds) {
    const auto& [di, vi, li] = key;
    const auto& v = variants[vi];
    const auto s = eval::score_predictions(datasets[di], list, a.longbench_e, a.jsonl);
    eval::result_record base;
    base.method = infer::method_name(v.meth);
    base.ratio = v.ratio;
    base.length = spec.lengths[li];
    base.depth = 0;
    const std::string label = eval::method_label({datasets[di], base.method, base.ratio});
    if (!a.longbench_e) {
      base.task = datasets[di];
      base.n = s.n;
      double sum = 0;
      for (double x : s.per_sample) sum += x;
      base.score = sum / double(s.n);
      out.records.push_back(base);
      out.scores_markdown += fmt::format("| {} | {} | {} | {:.2f} |\n", datasets[di], label, base.length, s.score);
    } else {
      out.scores_markdown += fmt::format("| {} | {} | {} |", datasets[di], label, base.length);
      for (const auto& b : s.buckets) {
        out.scores_markdown += std::isnan(b.score) ? " - |" : fmt::format(" {:.2f} |", b.score);
        if (b.n == 0) continue;
        eval::result_record r = base;
        r.task = datasets[di] + " " + b.name;
        r.n = b.n;
        double sum = 0;
        for (size_t i = 0; i < list.size(); i++)
          if (eval::longbench_e_bucket(*list[i].length) == b.name) sum += s.per_sample[i];
        r.score = sum / double(b.n);
        out.records.push_back(r);
      }
      out.scores_markdown += "\n";
    }
    if (!a.pred_dir.empty()) {
      // pred.py's layout: one file per dataset, one folder per run (here per method and length).
      const std::filesystem::path dir = std::filesystem::path(a.pred_dir) /
          fmt::format("{}-{}", label == "full" ? label : fmt::format("{}-{:g}x", base.method, base.ratio), base.length);
      std::filesystem::create_directories(dir);
      std::string lines;
      for (const auto& p : list)
        lines += nlohmann::json{{"pred", p.pred}, {"answers", p.answers},
                                {"all_classes", p.all_classes ? nlohmann::json(*p.all_classes) : nlohmann::json(nullptr)},
                                {"length", *p.length}}
                     .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
                 "\n";
      write_file_atomic((dir / (datasets[di] + ".jsonl")).string(), lines);
    }
  }
  return out;
}

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

  // A LongBench file is read and checked whole before any model loads: a bad record fails in seconds.
  std::vector<eval::longbench_record> longbench;
  std::vector<std::string> notes;
  if (!a.jsonl.empty() && a.tasks.empty()) {
    if (a.template_given)
      fail("--template applies to --tasks; --jsonl prompts with LongBench's own template per dataset");
    if (a.max_tokens_given)
      fail("--max-tokens applies to --tasks; --jsonl generates LongBench's answer length per dataset "
           "(hotpotqa 32, gov_report 512, ...)");
    if (!std::filesystem::is_regular_file(a.jsonl))
      fail("--jsonl: cannot open '{}'; give a LongBench-format .jsonl file", a.jsonl);
    longbench = eval::load_longbench(a.jsonl);
    spec.max_tokens = 1;
    int64_t from_name = 0;
    for (const auto& r : longbench) {
      spec.max_tokens = std::max(spec.max_tokens, eval::longbench_info(r.dataset).max_new_tokens);
      from_name += r.dataset_from_file_name;
    }
    if (from_name)
      notes.push_back(fmt::format("{} record(s) of {} have no \"dataset\" field; they ran as {}, the file's name",
                                  from_name, a.jsonl, eval::dataset_from_file_name(a.jsonl)));
  } else if (a.longbench_e || !a.pred_dir.empty()) {
    fail("--longbench-e and --pred-dir apply to --jsonl (a LongBench file)");
  }

  llama_model model = model_on_device(load_model(a.model), a.dev);
  llama_model full;
  if (!a.full_model.empty()) full = model_on_device(load_model(a.full_model), a.dev);
  tokenizer tok = tokenizer::load(a.tok_path.empty() ? a.model : a.tok_path);
  tok.check_fits_model(model.config.vocab_size, model.config.bos_token_id, model.config.eos_token_id, a.model);
  if (!a.full_model.empty())
    tok.check_fits_model(full.config.vocab_size, full.config.bos_token_id, full.config.eos_token_id, a.full_model);
  infer::eval_models models{&model, a.full_model.empty() ? nullptr : &full, &tok};
  const bool has_gsa = !model.config.gsa.is_null();
  spec.methods = a.methods.empty() ? std::vector<std::string>{has_gsa ? "full,gsa" : "full"}
                                   : std::vector<std::string>{a.methods};
  spec.methods = infer::parse_name_list(spec.methods[0], "--methods");
  infer::validate_eval(spec, models);

  bool baselines = false;
  for (const auto& m : spec.methods) baselines = baselines || !infer::uses_gists(infer::method_from_name(m));
  if (baselines && has_gsa && a.full_model.empty())
    notes.push_back("the baselines ran on --model's weights without gists (no --full-model given)");
  for (const auto& v : infer::eval_variants(spec, models))
    if (v.meth == infer::method::gist)
      notes.push_back(fmt::format("gist runs at the model's own ratio c/g = {:g}", v.ratio));

  eval_bar bar(a.progress || isatty(STDERR_FILENO));
  std::vector<eval::result_record> records;
  std::string longbench_scores;
  if (!longbench.empty()) {
    auto lb = run_longbench(a, spec, models, longbench, bar);
    records = std::move(lb.records);
    longbench_scores = std::move(lb.scores_markdown);
  } else {
    const infer::eval_predictor model_pred =
        infer::model_predictor(models, spec.max_tokens, infer::prefill_mode_from_name(a.prefill), a.gpu_kv_budget);
    auto predict = [&](const infer::eval_query& q) {
      infer::eval_answer got = model_pred(q);
      if (a.show)
        fmt::print(stderr, "\n[{} {} {:g} L={} depth={:g}] expected \"{}\", got \"{}\"\n", q.sample->task,
                   infer::method_name(q.variant.meth), q.variant.ratio, q.length, q.sample->depth_percent / 100.0,
                   fmt::join(q.sample->answers, "\" & \""), got.text);
      return got;
    };
    records = infer::run_eval(spec, models, predict, [&bar](size_t done, size_t total) { bar(done, total); });
  }

  fmt::print("{}", eval::results_markdown(records, a.ci));
  if (!longbench_scores.empty())
    fmt::print("\nLongBench{} scores by eval.py's rules (percent, two decimals):\n\n{}", a.longbench_e ? "-E" : "",
               longbench_scores);
  if (a.by_depth) fmt::print("\n{}", infer::results_markdown_by_depth(records));
  for (const auto& n : notes) fmt::print("\n> note: {}\n", n);
  if (!a.json_out.empty()) {
    write_file_atomic(a.json_out, eval::results_json(records) + "\n");
    fmt::print(stderr, "wrote {} records to {}\n", records.size(), a.json_out);
  }
  if (!a.pred_dir.empty()) fmt::print(stderr, "wrote LongBench prediction files under {}\n", a.pred_dir);
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
  sub->add_option("--jsonl", a.jsonl,
                  "LongBench file instead of --tasks: LongBench's pred.py protocol (per-dataset prompt and answer "
                  "length, the middle of a prompt longer than each --lengths budget cut out; docs/longbench.md)");
  sub->add_option("--lengths", a.lengths, "Context lengths in tokens, e.g. 1k,4k,16k")->capture_default_str();
  sub->add_option("--depths", a.depths, "Needle depths: fractions 0,0.5,1 or percents 0%,50%,100%")
      ->capture_default_str();
  sub->add_option("--methods", a.methods,
                  "full,gist,gsa,hgsa,streaming,quest,moba,h2o (default: full,gsa; full for a model without gists)");
  sub->add_option("--ratios", a.ratios, "Compression ratios r: budget L / r for every method but full and gist (1: the whole context, where "
                  "gsa / hgsa unfold every chunk: the unfold-everything ablation)")
      ->capture_default_str();
  sub->add_option("--samples", a.samples, "Samples per cell (--jsonl: records per dataset, 0 = all)")
      ->capture_default_str();
  sub->add_option("--seed", a.seed, "Task generation seed")->capture_default_str();
  auto* max_tokens = sub->add_option("--max-tokens", a.max_tokens,
                                     "Greedy answer tokens (stops at a newline); --tasks only")
                         ->capture_default_str();
  auto* tmpl = sub->add_option("--template", a.tmpl, "Prompt with {context} and {question}; \\n is a newline; --tasks only")
                   ->capture_default_str();
  sub->add_option("--haystack", a.haystack, "Folder of filler text for the niah_* tasks")->capture_default_str();
  sub->add_option("--qa-jsonl", a.qa_jsonl, "Source of the qa task");
  sub->add_option("--json", a.json_out, "Write the records as a JSON array here");
  sub->add_option("--plot", a.plot_out, "Write an accuracy-vs-length SVG plot here (.svg)");
  add_gpu_kv_budget_option(sub, a.gpu_kv_budget);
  sub->add_option("--prefill", a.prefill,
                  "gsa / hgsa context prefill: auto (unfold for a model trained in unfold mode), gist-mask, unfold")
      ->capture_default_str();
  sub->add_flag("--by-depth", a.by_depth, "Also print a table per depth");
  sub->add_flag("--ci", a.ci, "Show each accuracy cell's 95% Wilson interval over its samples (the JSON always has it)");
  sub->add_flag("--show-predictions", a.show, "Print every expected answer and prediction on stderr");
  sub->add_flag("--progress", a.progress, "Progress bar even when stderr is not a terminal");
  sub->add_flag("--longbench-e", a.longbench_e,
                "--jsonl: score LongBench-E style, per length bucket of the records (0-4k, 4-8k, 8k+)");
  sub->add_option("--pred-dir", a.pred_dir,
                  "--jsonl: write LongBench prediction files DIR/<method>-<length>/<dataset>.jsonl (for gsa score "
                  "or LongBench's eval.py)");
  add_device_options(sub, a.dev);
  cmds.push_back({sub, [max_tokens, tmpl] {
                    a.max_tokens_given = max_tokens->count() > 0;
                    a.template_given = tmpl->count() > 0;
                    return run_eval_cmd(a);
                  }});
}

}  // namespace gsa::tools
