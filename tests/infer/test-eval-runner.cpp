// The evaluation runner (`gsa eval`): every cell is run and recorded with the right keys and counts, scores stay in
// [0, 1], an oracle predictor scores 1 and a wrong one 0, every method sees the same samples with the right budget,
// and the user errors (lists, methods, lengths, template, both/neither input) are clear. A tiny random model
// directory (saved and loaded like the CLI does) with the small trained tokenizer.
#include <filesystem>
#include <fstream>
#include <map>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "eval/results.h"
#include "gist/config.h"
#include "infer/eval-runner.h"
#include "test-models.h"
#include "test-util.h"

namespace gsa::infer {
namespace {

namespace fs = std::filesystem;

constexpr int kV = 1000;  // the trained tokenizer's ids, <|gist|> = 996

llama_model tiny(bool with_gsa) {
  model_config c = test::tiny_config(kV);
  c.eos_token_id = {995};
  if (with_gsa) {
    gist::gsa_config g;
    g.chunk = {8};
    g.gists_per_chunk = 2;
    g.gist_token_ids = {996};
    g.sink = 2;
    g.dense_layers = {0};
    c.gsa = gist::gsa_config_to_json(g);
  }
  llama_model m(c);
  m.init_random(11, 0.3f);
  return m;
}

// A model directory as the CLI reads it: config.json, model.safetensors and tokenizer.json.
struct model_dir {
  fs::path dir;
  llama_model model;
  tokenizer tok;
  explicit model_dir(bool with_gsa)
      : dir(fs::temp_directory_path() / fmt::format("gsa-eval-test-{}-{}", with_gsa, ::getpid())),
        tok(tokenizer::load(test::source_dir() / "tests/data/tokenizer/trained")) {
    save_model(tiny(with_gsa), dir.string());
    fs::copy_file(test::source_dir() / "tests/data/tokenizer/trained/tokenizer.json", dir / "tokenizer.json",
                  fs::copy_options::overwrite_existing);
    model = load_model(dir.string());
    tok = tokenizer::load(dir);
  }
  ~model_dir() { fs::remove_all(dir); }
};

eval_spec small_spec() {
  eval_spec s;
  s.tasks = {"passkey", "variable_tracking"};
  s.methods = {"full", "gsa"};
  s.lengths = {160, 256};
  s.depths = {0.5};
  s.ratios = {4};
  s.samples = 2;
  s.max_tokens = 4;
  return s;
}

std::string joined_answers(const eval_query& q) {
  std::string out;
  for (const auto& a : q.sample->answers) out += a + " ";
  return out;
}

// --gpu-kv-budget reaches every session the predictor opens: on a host model it is refused, naming the option.
TEST(EvalRunner, GpuKvBudgetReachesTheSessions) {
  model_dir d(true);
  eval_models models{&d.model, nullptr, &d.tok};
  eval_spec spec = small_spec();
  const eval_predictor model = model_predictor(models, spec.max_tokens, prefill_mode::automatic, int64_t(1) << 30);
  try {
    run_eval(spec, models, model);
    ADD_FAILURE() << "no error";
  } catch (const gsa::error& e) {
    EXPECT_NE(std::string(e.what()).find("--gpu-kv-budget"), std::string::npos) << e.what();
  }
}

TEST(EvalRunner, RunsEveryCellWithTheModel) {
  model_dir d(true);
  eval_models models{&d.model, nullptr, &d.tok};
  eval_spec spec = small_spec();
  size_t last_done = 0, last_total = 0, calls = 0;
  const eval_predictor model = model_predictor(models, spec.max_tokens);
  std::vector<std::string> answers;
  auto predict = [&](const eval_query& q) {
    eval_answer a = model(q);
    answers.push_back(a.text);
    return a;
  };
  auto recs = run_eval(spec, models, predict, [&](size_t done, size_t total) {
    EXPECT_GE(done, last_done);
    last_done = done, last_total = total, calls++;
  });
  // 2 tasks x 2 methods x 2 lengths x 1 depth cells, 2 samples each.
  ASSERT_EQ(recs.size(), 8u);
  EXPECT_EQ(last_total, 16u);
  EXPECT_EQ(last_done, 16u);
  EXPECT_EQ(calls, 17u);  // the initial 0 and one per run
  ASSERT_EQ(answers.size(), 16u);
  for (const auto& a : answers) {  // the first line only, trimmed
    EXPECT_EQ(a.find('\n'), std::string::npos) << a;
    if (!a.empty()) {
      EXPECT_TRUE(a.front() != ' ' && a.back() != ' ') << a;
    }
  }
  std::map<std::string, int> per_method;
  for (const auto& r : recs) {
    EXPECT_EQ(r.n, 2);
    EXPECT_GE(r.score, 0.0);
    EXPECT_LE(r.score, 1.0);
    EXPECT_DOUBLE_EQ(r.depth, 0.5);
    EXPECT_TRUE(r.length == 160 || r.length == 256);
    EXPECT_DOUBLE_EQ(r.ratio, r.method == "full" ? 0.0 : 4.0);
    per_method[r.method]++;
  }
  EXPECT_EQ(per_method["full"], 4);
  EXPECT_EQ(per_method["gsa"], 4);
  // Ordered by task, method, length.
  EXPECT_EQ(recs[0].task, "passkey");
  EXPECT_EQ(recs[0].method, "full");
  EXPECT_EQ(recs[0].length, 160);
  EXPECT_EQ(recs[1].length, 256);
  EXPECT_EQ(recs[2].method, "gsa");
  EXPECT_EQ(recs[4].task, "variable_tracking");
  // Routing is measured where the method selected and the answer is in the context: gsa on passkey (a 160-256
  // token context at budget L / 4 leaves chunks to choose from), never full.
  for (const auto& r : recs) {
    if (r.method == "full") {
      EXPECT_EQ(r.routing_n, 0) << r.task;
    }
    if (r.method == "gsa" && r.task == "passkey") {
      EXPECT_EQ(r.routing_n, 2) << r.length;
      EXPECT_GE(r.routing, 0.0);
      EXPECT_LE(r.routing, 1.0);
      // Per sample "any" is 1 whenever the mean is above 0, so it is at least the mean; per layer, the dense
      // layer 0 never selects, and with every selecting layer's heads selecting the mean is their average.
      EXPECT_GE(r.routing_any, r.routing);
      EXPECT_LE(r.routing_any, 1.0);
      ASSERT_EQ(r.routing_layers.size(), size_t(d.model.config.num_hidden_layers));
      ASSERT_GE(r.routing_layers.size(), 2u);
      EXPECT_LT(r.routing_layers[0], 0);
      double sum = 0;
      for (size_t l = 1; l < r.routing_layers.size(); l++) sum += r.routing_layers[l];
      EXPECT_NEAR(r.routing, sum / double(r.routing_layers.size() - 1), 1e-9);
    }
  }
  // The JSON array has exactly the documented keys (routing and routing_n only where measured; ci95 always).
  auto j = nlohmann::json::parse(eval::results_json(recs));
  ASSERT_EQ(j.size(), 8u);
  for (const auto& o : j) {
    const bool routed = o.contains("routing_n");
    EXPECT_EQ(o.size(), routed ? 12u : 8u);
    EXPECT_EQ(routed, o.contains("routing"));
    EXPECT_EQ(routed, o.contains("routing_any"));
    EXPECT_EQ(routed, o.contains("routing_layers"));
    for (const char* k : {"task", "method", "ratio", "length", "depth", "score", "n", "ci95"})
      EXPECT_TRUE(o.contains(k)) << k;
    EXPECT_LE(o["ci95"][0].get<double>(), o["score"].get<double>());
    EXPECT_GE(o["ci95"][1].get<double>(), o["score"].get<double>());
  }
}

TEST(EvalRunner, NeedleHitCountsTheSelectionsHoldingTheAnswer) {
  // Units of 8 raw tokens; the answer at tokens 41-44 sits in unit 5.
  const std::vector<std::pair<int64_t, int64_t>> spans = {{41, 45}};
  // Four (layer, head) lists, one empty (a dense layer): 2 of the 3 others hold unit 5.
  EXPECT_DOUBLE_EQ(needle_hit({{0, 5}, {2, 3}, {}, {5}}, 8, spans), 2.0 / 3);
  // A span straddling units 5 and 6 is held by either; ends are exclusive.
  EXPECT_DOUBLE_EQ(needle_hit({{6}, {4}, {7}}, 8, {{46, 50}}), 1.0 / 3);
  EXPECT_DOUBLE_EQ(needle_hit({{4}}, 8, {{32, 40}}), 1.0);
  EXPECT_DOUBLE_EQ(needle_hit({{5}}, 8, {{32, 40}}), 0.0);
  EXPECT_DOUBLE_EQ(needle_hit({{1}}, 16, spans), 0.0);
  EXPECT_DOUBLE_EQ(needle_hit({{2}}, 16, spans), 1.0);
  // Nothing selected, or no answer in the context: not measured.
  EXPECT_LT(needle_hit({{}, {}}, 8, spans), 0);
  EXPECT_LT(needle_hit({{5}}, 8, {}), 0);
}

TEST(EvalRunner, NeedleRoutingSplitsTheSelectionsByLayer) {
  const std::vector<std::pair<int64_t, int64_t>> spans = {{41, 45}};  // unit 5 of 8 tokens
  // Three layers of two KV heads: layer 0 holds it in one list of two, layer 1 selected nothing, layer 2 in both.
  const needle_routing r = needle_routing_of({{0, 5}, {2, 3}, {}, {}, {5}, {4, 5}}, 2, 8, spans);
  EXPECT_DOUBLE_EQ(r.mean, 3.0 / 4);
  EXPECT_DOUBLE_EQ(r.any, 1.0);
  ASSERT_EQ(r.per_layer.size(), 3u);
  EXPECT_DOUBLE_EQ(r.per_layer[0], 0.5);
  EXPECT_LT(r.per_layer[1], 0);
  EXPECT_DOUBLE_EQ(r.per_layer[2], 1.0);
  // No list holds it: any is 0; nothing selected or no answer in the context: not measured.
  const needle_routing miss = needle_routing_of({{1}, {2}}, 1, 8, spans);
  EXPECT_DOUBLE_EQ(miss.any, 0.0);
  EXPECT_EQ(miss.per_layer, (std::vector<double>{0.0, 0.0}));
  const needle_routing none = needle_routing_of({{}, {}}, 2, 8, spans);
  EXPECT_LT(none.mean, 0);
  EXPECT_LT(none.any, 0);
  EXPECT_TRUE(none.per_layer.empty());
  EXPECT_LT(needle_routing_of({{5}}, 1, 8, {}).any, 0);
}

TEST(EvalRunner, AnswerSpansCoverTheAnswerTokens) {
  model_dir d(false);
  const std::string prefix = "The grass is green. The pass key is 71432. Remember it. The sky is blue.";
  const auto ids = d.tok.encode(prefix, true);
  auto spans = answer_spans(prefix, {"71432"}, d.tok);
  ASSERT_EQ(spans.size(), 1u);
  auto [b, e] = spans[0];
  ASSERT_TRUE(b >= 0 && b < e && e <= int64_t(ids.size()) + 1);
  std::vector<int32_t> piece(ids.begin() + b, ids.begin() + std::min<int64_t>(e, int64_t(ids.size())));
  EXPECT_NE(d.tok.decode(piece).find("71432"), std::string::npos);
  // Tight: the answer's tokens (at most one per digit) and one token of slack on each side.
  EXPECT_LE(e - b, 5 + 2);
  // Every occurrence of every answer; an answer absent from the text gives no span.
  EXPECT_EQ(answer_spans(prefix + " 71432", {"71432", "blue", "red"}, d.tok).size(), 3u);
  EXPECT_TRUE(answer_spans(prefix, {"red"}, d.tok).empty());
}

TEST(EvalRunner, OracleScoresOneAndWrongScoresZero) {
  model_dir d(true);
  eval_models models{&d.model, nullptr, &d.tok};
  eval_spec spec = small_spec();
  spec.methods = {"full", "gist", "gsa", "streaming"};
  spec.ratios = {4, 8};
  spec.depths = {0.0, 1.0};
  for (const auto& r : run_eval(spec, models, joined_answers)) EXPECT_DOUBLE_EQ(r.score, 1.0) << r.task;
  for (const auto& r : run_eval(spec, models, [](const eval_query&) { return std::string("no idea"); }))
    EXPECT_DOUBLE_EQ(r.score, 0.0) << r.task;
  // full once, gist once at the model's c / g = 8 / 2, gsa and streaming once per ratio.
  auto vars = eval_variants(spec, models);
  ASSERT_EQ(vars.size(), 6u);
  EXPECT_EQ(vars[0].meth, method::full);
  EXPECT_EQ(vars[1].meth, method::gist);
  EXPECT_DOUBLE_EQ(vars[1].ratio, 4.0);
  EXPECT_DOUBLE_EQ(vars[1].budget_ratio, 0.0);
  EXPECT_DOUBLE_EQ(vars[3].ratio, 8.0);
  EXPECT_EQ(vars[5].meth, method::streaming);
  auto recs = run_eval(spec, models, joined_answers);
  EXPECT_EQ(recs.size(), 2u * 6 * 2 * 2);
  // A half-right prediction of a two-answer cell would average; passkey has one answer, so check the mean of
  // a predictor right on one sample of two.
  int call = 0;
  spec.methods = {"full"};
  spec.tasks = {"passkey"};
  spec.lengths = {160};
  spec.depths = {0.5};
  auto half = run_eval(spec, models, [&](const eval_query& q) { return call++ % 2 ? joined_answers(q) : "x"; });
  ASSERT_EQ(half.size(), 1u);
  EXPECT_DOUBLE_EQ(half[0].score, 0.5);
  EXPECT_EQ(half[0].n, 2);
}

TEST(EvalRunner, EveryMethodSeesTheSameSampleAndItsBudget) {
  model_dir d(true);
  eval_models models{&d.model, nullptr, &d.tok};
  eval_spec spec = small_spec();
  spec.tasks = {"passkey"};
  spec.lengths = {200};
  spec.samples = 1;
  spec.methods = {"full", "gsa", "quest"};
  spec.ratios = {4};
  std::vector<eval_query> seen;
  std::vector<eval::sample> samples;  // the query's sample lives only during the run
  run_eval(spec, models, [&](const eval_query& q) {
    seen.push_back(q);
    samples.push_back(*q.sample);
    return std::string();
  });
  ASSERT_EQ(seen.size(), 3u);
  for (size_t i = 0; i < seen.size(); i++) {
    const eval_query& q = seen[i];
    const eval::sample& smp = samples[i];
    EXPECT_EQ(smp.context, samples[0].context);
    EXPECT_EQ(q.context_ids, seen[0].context_ids);
    EXPECT_EQ(q.question_ids, seen[0].question_ids);
    EXPECT_EQ(q.length, 200);
    const std::string ctx = d.tok.decode(q.context_ids), rest = d.tok.decode(q.question_ids);
    EXPECT_NE(ctx.find(smp.context), std::string::npos);
    EXPECT_EQ(rest, "\n\n" + smp.question + "\n");
    // The context alone is measured in the same tokenizer's raw tokens and sits near the requested length.
    EXPECT_LE(std::abs(int64_t(d.tok.encode(smp.context).size()) - 200), 20);
  }
  EXPECT_EQ(seen[0].budget, -1);
  EXPECT_EQ(seen[1].budget, int64_t(seen[1].context_ids.size()) / 4);
  EXPECT_EQ(seen[2].budget, int64_t(seen[2].context_ids.size()) / 4);
  // Another seed gives another sample.
  spec.seed = 5;
  std::string other;
  run_eval(spec, models, [&](const eval_query& q) {
    other = q.sample->context;
    return std::string();
  });
  EXPECT_NE(other, samples[0].context);
}

TEST(EvalRunner, TemplateAndFullModel) {
  eval::sample s;
  s.context = "C {question}";
  s.question = "Q?";
  auto [pre, rest] = split_prompt("Read: {context}\n\n{question} -> ", s);
  EXPECT_EQ(pre, "Read: C {question}");  // a context holding the placeholder is not substituted again
  EXPECT_EQ(rest, "\n\nQ? -> ");
  auto [p2, r2] = split_prompt("{question}\n{context}", s);
  EXPECT_EQ(p2, "Q?\nC {question}");
  EXPECT_EQ(r2, "");
  EXPECT_EQ(unescape_template("{context}\\n{question}\\tA"), "{context}\n{question}\tA");

  llama_model a = tiny(true), b = tiny(false);
  eval_models shared{&a, nullptr, nullptr}, split{&a, &b, nullptr};
  EXPECT_EQ(&shared.for_method(method::quest), &a);
  EXPECT_EQ(&split.for_method(method::quest), &b);
  EXPECT_EQ(&split.for_method(method::full), &b);
  EXPECT_EQ(&split.for_method(method::hgsa), &a);
}

TEST(EvalRunner, UserErrors) {
  llama_model gsa = tiny(true), plain = tiny(false);
  tokenizer tok = tokenizer::load(test::source_dir() / "tests/data/tokenizer/trained");
  eval_models g{&gsa, nullptr, &tok}, p{&plain, nullptr, &tok};
  auto expect_error = [](const eval_spec& s, const eval_models& m, const char* needle) {
    try {
      validate_eval(s, m);
      ADD_FAILURE() << "no error for " << needle;
    } catch (const error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  eval_spec ok = small_spec();
  validate_eval(ok, g);
  eval_spec s = ok;
  s.jsonl = "x.jsonl";
  expect_error(s, g, "not both");
  s = ok;
  s.tasks.clear();
  expect_error(s, g, "none was given");
  s = ok;
  s.tasks = {"passkey", "needle"};
  expect_error(s, g, "unknown task 'needle'");
  s = ok;
  s.methods = {"full", "fast"};
  expect_error(s, g, "unknown method 'fast'");
  s = ok;
  s.lengths = {160, 510};
  expect_error(s, g, "--lengths 510");
  expect_error(ok, p, "needs a GSA model");  // gsa on a plain model
  s = ok;
  s.methods = {"full", "quest"};
  validate_eval(s, p);
  s.ratios = {0.5};
  expect_error(s, p, "--ratios");
  s = ok;
  s.prompt_template = "{question} only";
  expect_error(s, g, "--template");
  s = ok;
  s.samples = 0;
  expect_error(s, g, "--samples 0");
  s = ok;
  s.depths = {1.5};
  expect_error(s, g, "--depths");
  eval_models mismatch{&gsa, &plain, &tok};
  plain.config.vocab_size = 512;
  expect_error(ok, mismatch, "vocabulary");

  EXPECT_EQ(parse_name_list(" full , gsa,,hgsa", "--methods"), (std::vector<std::string>{"full", "gsa", "hgsa"}));
  EXPECT_THROW(parse_name_list(" , ", "--methods"), error);
  EXPECT_EQ(parse_depths("0,0.25,50%,100%,1"), (std::vector<double>{0, 0.25, 0.5, 1, 1}));
  EXPECT_THROW(parse_depths("2"), error) << "a bare 2 is not 2%";
  EXPECT_THROW(parse_ratios("inf"), error);
  EXPECT_THROW(parse_ratios("nan"), error);
  EXPECT_THROW(parse_depths("0,abc"), error);
  EXPECT_THROW(parse_depths("150"), error);
  EXPECT_THROW(parse_depths("-0.1"), error);
  EXPECT_EQ(parse_ratios("8,16x,32"), (std::vector<double>{8, 16, 32}));
  EXPECT_THROW(parse_ratios("8,0.5"), error);
  EXPECT_THROW(parse_ratios("8,y"), error);
}

TEST(EvalRunner, TableByDepth) {
  std::vector<eval::result_record> r = {
      {"passkey", "gsa", 8, 1024, 0.0, 1.0, 2},
      {"passkey", "gsa", 8, 1024, 1.0, 0.5, 2},
      {"passkey", "full", 0, 1024, 1.0, 0.25, 4},
  };
  EXPECT_EQ(results_markdown_by_depth(r),
            "| task | method | length | 0% | 100% |\n"
            "|---|---|---:|---:|---:|\n"
            "| passkey | gsa 8x | 1024 | 100.0 | 50.0 |\n"
            "| passkey | full | 1024 | - | 25.0 |\n");
}

}  // namespace
}  // namespace gsa::infer
