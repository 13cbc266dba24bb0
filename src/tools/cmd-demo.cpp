// `gsa demo`: the README's main command. On the model shipped in models/demo (a small GSA model trained by the
// repo's recipe, and its full-attention twin trained on the same data), it builds a long context with a hidden
// fact, asks for it with GSA and with every baseline at the same budget, shows which chunks GSA unfolded (their
// text), the latency per token and the KV memory per method, and ends with a small accuracy table.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <omp.h>

#include <chrono>
#include <cstdlib>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "core/error.h"
#include "eval/tasks.h"
#include "infer/eval-runner.h"
#include "infer/generate.h"
#include "infer/perplexity.h"
#include "tokenizer/tokenizer.h"
#include "tools/commands.h"
#include "tools/model-device.h"

namespace gsa::tools {

namespace {

namespace fs = std::filesystem;

constexpr const char* kDefaultMethods = "gsa,gist,full,streaming,quest,moba,h2o";

struct demo_args {
  std::string model = "models/demo";
  std::string task = "passkey";
  std::string methods = kDefaultMethods;
  std::string haystack = "../shared/data/text/haystack";
  int64_t length = 2048;
  int samples = 5;
  int max_tokens = 10;
  uint64_t seed = 7;
  device_options dev;
  int64_t gpu_kv_budget = 0;
  double ratio = 0;  // 0: the demo folder's demo.json "ratio", else the GSA model's own ratio
};

struct answer {
  std::string text;
  double ms_per_token = 0, attended = 0;
  int64_t kv_resident = 0, kv_total = 0;
  infer::step_stats at_question;  // statistics of the row that produced the first answer token
  int tokens = 0;
};

struct demo_models {
  llama_model gsa, full;
  bool has_full = false;
  std::optional<tokenizer> tok_;
  const tokenizer& tok() const { return *tok_; }
  std::vector<int32_t> stop_ids;
  int64_t gpu_kv_budget = 0;  // every session's (session_options::gpu_kv_budget)
};

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB"};
  int u = 0;
  while (b >= 1024 && u < 3) b /= 1024, u++;
  return fmt::format("{:.1f} {}", b, units[u]);
}

std::string one_line(std::string s, size_t max) {
  for (auto& ch : s)
    if (ch == '\n' || ch == '\r' || ch == '\t') ch = ' ';
  if (s.size() > max) s = s.substr(0, max - 3) + "...";
  return s;
}

// The prompt layout the trainer uses for generated tasks (tools/cmd-train.cpp): context, "\n\n", question, "\n",
// then the answer; pieces are encoded separately, as in training.
// One budget for every sparse method: L / r raw KV tokens per step and KV head (r: --ratio, demo.json or the model).
int64_t budget_for(infer::method meth, int64_t context_tokens, double ratio) {
  if (meth == infer::method::full || meth == infer::method::gist) return -1;
  return std::max<int64_t>(1, int64_t(double(context_tokens) / ratio));
}

answer ask(const demo_models& dm, infer::method meth, const std::vector<int32_t>& ctx,
           const std::vector<int32_t>& question, int max_tokens, double ratio) {
  const llama_model& m = (infer::uses_gists(meth) || !dm.has_full) ? dm.gsa : dm.full;
  infer::session_options o;
  o.meth = meth;
  o.budget = budget_for(meth, int64_t(ctx.size()), ratio);
  o.gpu_kv_budget = dm.gpu_kv_budget;
  infer::session s(m, o);
  s.prefill(ctx);
  s.take_stats();
  s.append(question);
  infer::run_pending({&s});
  answer a;
  a.at_question = s.take_stats();
  infer::generate_options g;
  g.max_tokens = max_tokens;
  g.stop_ids = dm.stop_ids;
  g.stop = [&](int, const std::vector<int32_t>& ids) {
    return dm.tok().decode(ids).find('\n') != std::string::npos;
  };
  double ms = 0, att = 0;
  int steps = 0;
  infer::step_stats last;
  g.on_step = [&](int, const infer::step_stats& st) {
    ms += st.ms;
    att += st.attended_tokens;
    steps++;
    last = st;
  };
  auto gen = infer::generate({&s}, g);
  std::vector<int32_t> ids = gen[0].ids;
  if (!ids.empty() && std::find(dm.stop_ids.begin(), dm.stop_ids.end(), ids.back()) != dm.stop_ids.end())
    ids.pop_back();
  a.text = dm.tok().decode(ids);
  a.tokens = int(gen[0].ids.size());
  a.ms_per_token = steps ? ms / steps : 0;
  a.attended = steps ? att / steps : a.at_question.attended_tokens;
  auto kv = (steps ? last : a.at_question).kv;
  a.kv_resident = kv.resident;
  a.kv_total = kv.total();
  return a;
}

int run_demo(const demo_args& a) {
  auto t0 = std::chrono::steady_clock::now();
  // The demo models are tiny (hidden 128): a decode step is microseconds of work per op, below what a thread team
  // repays, and on a busy machine a descheduled team member stalls every barrier. One thread unless asked.
  if (!std::getenv("OMP_NUM_THREADS")) omp_set_num_threads(1);
  const bool on_cpu = a.dev.device == "cpu";
  if (a.gpu_kv_budget > 0 && on_cpu)
    fail("--gpu-kv-budget caps the KV cache's GPU memory; add --device cuda (the demo runs on the CPU by default)");
  std::vector<infer::method> methods;
  {
    std::stringstream ss(a.methods);
    std::string name;
    while (std::getline(ss, name, ','))
      if (!name.empty()) methods.push_back(infer::method_from_name(name));
  }
  if (methods.empty()) fail("--methods is empty; give e.g. gsa,full,streaming");
  demo_models dm;
  dm.gpu_kv_budget = a.gpu_kv_budget;
  fs::path root = a.model;
  fs::path gsa_dir = fs::exists(root / "gsa" / "config.json") ? root / "gsa" : root;
  if (!fs::exists(gsa_dir / "config.json"))
    fail("--model {}: no GSA model found (expected {}/gsa/config.json or {}/config.json); train one with the "
         "stages of models/demo/recipe-gsa/ (`gsa train --config` each, in order; scripts/results.sh runs them)",
         a.model, a.model, a.model);
  dm.gsa = load_model(gsa_dir.string());
  if (dm.gsa.config.gsa.is_null())
    fail("{}: the model has no \"gsa\" config; the demo needs a GSA model", gsa_dir.string());
  dm.gsa = model_on_device(std::move(dm.gsa), a.dev);
  // Before any output: a shape the GPU's decode kernel does not cover (head dims 32, 64 and 128 are compiled).
  if (const std::string why = on_cpu ? std::string() : infer::decode_refusal(dm.gsa); !why.empty())
    fail("{} {}; use --device cpu, or a model the GPU decodes (head dim 32, 64 or 128)", gsa_dir.string(), why);
  if (fs::exists(root / "full" / "config.json")) {
    dm.full = model_on_device(load_model((root / "full").string()), a.dev);
    dm.has_full = true;
  }
  dm.tok_.emplace(tokenizer::load(gsa_dir));
  dm.tok_->check_fits_model(dm.gsa.config.vocab_size, dm.gsa.config.bos_token_id, dm.gsa.config.eos_token_id,
                            gsa_dir.string());
  for (const char* t : {"<|endoftext|>", "</s>", "<|end_of_text|>"})
    if (int32_t id = dm.tok().token_id(t); id >= 0) dm.stop_ids.push_back(id);

  auto counter = [&](std::string_view t) { return dm.tok().encode(t); };
  const int64_t max_ctx = dm.gsa.config.max_position_embeddings - 64;
  if (a.length > max_ctx) fail("--length {} is beyond the model's {} positions", a.length, max_ctx);

  auto gcfg = gist::gsa_config_from_json(dm.gsa.config.gsa);
  // The budget ratio: --ratio, else the demo folder's (demo.json: the largest ratio at which its GSA model still
  // answers, models/demo/README.md), else the model's own c / g.
  double ratio = a.ratio;
  if (ratio <= 0 && fs::exists(root / "demo.json")) {
    std::ifstream f(root / "demo.json");
    const nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
    if (j.is_discarded() || !j.contains("ratio") || !j["ratio"].is_number() || j["ratio"].get<double>() < 1)
      fail("{}: expected {{\"ratio\": R}} with R >= 1; fix it or pass --ratio", (root / "demo.json").string());
    ratio = j["ratio"].get<double>();
  }
  if (ratio <= 0) ratio = gcfg.ratio();
  fmt::print("gsa demo: {} ({:.1f} M parameters, GSA {}x: {} raw tokens per chunk + {} gist){}{}\n\n",
             gsa_dir.string(), dm.gsa.parameter_count() / 1e6, gcfg.ratio(), gcfg.chunk[0], gcfg.gists_per_chunk,
             dm.has_full ? fmt::format("; baselines on its full-attention twin {}", (root / "full").string())
                         : "; baselines on the same weights without gists",
             on_cpu ? std::string() : fmt::format("; on {}", dm.gsa.ops().describe()));

  // 1. One sample, shown in full.
  eval::task_params p;
  p.task = a.task;
  p.length_tokens = a.length;
  p.depth = 0.35;
  p.seed = a.seed;
  p.haystack_dir = a.haystack;
  eval::sample smp = eval::generate(p, counter);
  auto ctx = dm.tok().encode(smp.context);
  auto question = dm.tok().encode("\n\n" + smp.question + "\n");
  fmt::print("context   {} tokens of filler with one hidden fact at {}% depth\n", ctx.size(), smp.depth_percent);
  fmt::print("question  {}\n", one_line(smp.question, 120));
  fmt::print("expected  {}\n\n", fmt::join(smp.answers, ", "));
  fmt::print("{:<10} {:<22} {:>7} {:>10} {:>9} {:>11} {:>11}\n", "method", "answer", "correct", "ms/token",
             "attended", "KV resident", "KV total");
  answer gsa_answer;
  bool have_gsa = false;
  for (auto meth : methods) {
    answer ans = ask(dm, meth, ctx, question, a.max_tokens, ratio);
    double sc = eval::score(smp, ans.text);
    fmt::print("{:<10} {:<22} {:>7} {:>10.2f} {:>9.0f} {:>11} {:>11}\n", infer::method_name(meth),
               one_line(ans.text, 22), sc >= 1.0 ? "yes" : "no", ans.ms_per_token, ans.attended,
               human_bytes(double(ans.kv_resident)), human_bytes(double(ans.kv_total)));
    if (meth == infer::method::gsa) gsa_answer = ans, have_gsa = true;
  }
  fmt::print("(attended = KV tokens per layer and KV head per generated token, gists included; every sparse "
             "method gets L/{} = {} raw KV tokens)\n\n", ratio, budget_for(infer::method::gsa, int64_t(ctx.size()), ratio));

  // 2. What GSA recalled to produce the first answer token: the chunks chosen most often over layers and heads.
  if (have_gsa) {
    std::map<int32_t, int> votes;
    int lists = 0;
    for (const auto& v : gsa_answer.at_question.unfolded) {
      if (!v.empty()) lists++;
      for (int32_t c : v) votes[c]++;
    }
    std::vector<std::pair<int, int32_t>> order;
    for (auto& [c, n] : votes) order.push_back({-n, c});
    std::sort(order.begin(), order.end());
    const int c0 = gcfg.chunk[0];
    auto chunk_text = [&](int32_t c) {
      int64_t b = int64_t(c) * c0, e = std::min<int64_t>(b + c0, int64_t(ctx.size()));
      return dm.tok().decode(std::vector<int32_t>(ctx.begin() + b, ctx.begin() + e));
    };
    // The chunks holding the hidden fact: those overlapping an occurrence of the answer (the fact may state it
    // more than once). The span estimate's one token of slack on each side is taken off: the chunks listed and
    // the selections counted below are those of the answer's own tokens.
    auto spans = infer::answer_spans(smp.context, smp.answers, dm.tok(), false);
    std::set<int32_t> fact;
    for (auto& [b, e] : spans) {
      b++, e--;
      for (int64_t t = b; t < e; t++) fact.insert(int32_t(t / c0));
    }
    fmt::print("GSA unfolded {} distinct chunks over {} (layer, KV head) selections for the first answer token; "
               "the most chosen:\n", votes.size(), lists);
    for (size_t i = 0; i < order.size() && i < 4; i++) {
      int32_t c = order[i].second;
      fmt::print("  chunk {:4d} ({:2d} of {:2d} selections) tokens {:5d}-{:5d}: \"{}\"{}\n", c, -order[i].first,
                 lists, int64_t(c) * c0, int64_t(c) * c0 + c0 - 1, one_line(chunk_text(c), 70),
                 fact.count(c) ? "   <- the hidden fact" : "");
    }
    if (!fact.empty()) {
      std::string text;
      for (int32_t c : fact) text += chunk_text(c);
      const double hit = infer::needle_hit(gsa_answer.at_question.unfolded, c0, spans);
      fmt::print("  the hidden fact sits in chunk{} {} (\"{}\"); a chunk of it was chosen in {:.0f} of {} selections\n",
                 fact.size() > 1 ? "s" : "", fmt::join(fact, ", "), one_line(text, 60),
                 hit < 0 ? 0.0 : hit * lists, lists);
    }
    fmt::print("\n");
  }

  // 3. A small accuracy table: samples at several depths, every method.
  const double depths[] = {0.1, 0.3, 0.5, 0.7, 0.9};
  std::vector<double> correct(methods.size(), 0);
  int n = 0;
  for (int i = 0; i < a.samples; i++) {
    eval::task_params q = p;
    q.depth = depths[i % 5];
    q.seed = a.seed + 1000 + uint64_t(i);
    eval::sample s2 = eval::generate(q, counter);
    auto c2 = dm.tok().encode(s2.context);
    auto q2 = dm.tok().encode("\n\n" + s2.question + "\n");
    for (size_t k = 0; k < methods.size(); k++)
      correct[k] += eval::score(s2, ask(dm, methods[k], c2, q2, a.max_tokens, ratio).text);
    n++;
  }
  fmt::print("accuracy on {} {} samples of {} tokens (depths 10-90%):\n\n| method |", n, a.task, a.length);
  for (auto meth : methods) fmt::print(" {} |", infer::method_name(meth));
  fmt::print("\n|---|");
  for (size_t k = 0; k < methods.size(); k++) fmt::print("---|");
  fmt::print("\n| accuracy |");
  for (size_t k = 0; k < methods.size(); k++) fmt::print(" {:.0f}% |", 100.0 * correct[k] / std::max(1, n));
  // 4. Recall measured without a task: next-token quality on held-out text (this repo's own docs, which no
  //    model here was trained on) when the text is decoded through each method after a long prefix.
  {
    std::string text;
    for (const char* f : {"README.md", "docs/results.md", "docs/decode.md", "docs/cuda.md", "docs/tokenizer.md",
                          "docs/verification.md", "docs/benchmarks.md"}) {
      std::ifstream in(f, std::ios::binary);
      if (!in) continue;
      std::stringstream ss;
      ss << in.rdbuf();
      text += ss.str() + "\n\n";
    }
    auto ids = dm.tok().encode(text);
    const int predict = 64;
    if (int64_t(ids.size()) >= a.length + predict) {
      fmt::print("\n\nnext-token quality on held-out text (this repository's docs), {} tokens of prefix, {} "
                 "decoded through each method; lower is better:\n\n| method |", a.length, predict);
      for (auto meth : methods) fmt::print(" {} |", infer::method_name(meth));
      fmt::print("\n|---|");
      for (size_t k = 0; k < methods.size(); k++) fmt::print("---|");
      fmt::print("\n| bits/byte |");
      std::vector<int32_t> win(ids.end() - (a.length + predict), ids.end());
      for (auto meth : methods) {
        const llama_model& m = (infer::uses_gists(meth) || !dm.has_full) ? dm.gsa : dm.full;
        int64_t budget = budget_for(meth, a.length, ratio);
        infer::nll_result r =
            infer::score_continuation(m, meth, budget, win, a.length, predict, a.gpu_kv_budget);
        double bytes = double(dm.tok().decode(r.scored_ids).size());
        fmt::print(" {:.3f} |", r.nats / std::log(2.0) / std::max(1.0, bytes));
      }
    }
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print("\n\n(demo ran in {:.1f} s; `gsa eval` runs the full grid, docs/results.md has the measured tables)\n", secs);
  return 0;
}

}  // namespace

void register_demo(CLI::App& app, command_list& cmds) {
  auto* sub = app.add_subcommand("demo", "Hide a fact in a long context and recall it with GSA and every baseline");
  static demo_args a;
  sub->add_option("--model", a.model, "Demo folder (gsa/ and full/ model directories) or one GSA model directory")
      ->capture_default_str();
  sub->add_option("--task", a.task, "Task (passkey needs no data; niah_* read --haystack)")->capture_default_str();
  sub->add_option("--length", a.length, "Context length in tokens")->capture_default_str();
  sub->add_option("--methods", a.methods, "Comma-separated methods")->capture_default_str();
  sub->add_option("--samples", a.samples, "Samples in the accuracy table")->capture_default_str()->check(CLI::Range(1, 100000));
  sub->add_option("--max-tokens", a.max_tokens, "Tokens generated per answer")->capture_default_str();
  sub->add_option("--seed", a.seed, "Seed of the generated samples")->capture_default_str();
  sub->add_option("--haystack", a.haystack, "Filler text folder for niah_* tasks")->capture_default_str();
  sub->add_option("--ratio", a.ratio,
                  "Budget L/r raw KV tokens for every sparse method (default: the demo folder's demo.json, else the "
                  "GSA model's ratio)")
      ->check(CLI::Range(1.0, 1e9));
  add_device_options(sub, a.dev);
  add_gpu_kv_budget_option(sub, a.gpu_kv_budget);
  cmds.push_back({sub, [] { return run_demo(a); }});
}

}  // namespace gsa::tools
