// Long-context evaluation through the decoding engine (`gsa eval`): every (task, method, ratio, length, depth)
// cell, `samples` samples each, one result_record per cell holding the mean score.
//
// A sample is generated once (eval::generate with the model's tokenizer as the token counter, so lengths are raw
// tokens) and then run by every method, so methods are compared on the same text. The prompt is the template
// with {context} and {question} substituted; the part up to the end of the context is prefilled (under the gist
// mask for gist methods), the rest is appended and decoded row by row, so the question's queries select chunks
// like any decoded token. Greedy decoding up to max_tokens, stopping at the first newline after the answer
// starts; eval::score grades the first non-empty line.
//
// Methods and ratios: `full` runs once (ratio 0); `gist` runs once at the model's own ratio (gsa_config::ratio():
// c_0 ... c_{L-1} / g; compression only, no budget); every other method runs once per ratio r with the budget
// L / r (L = prompt tokens before the question), the engine's one budget rule, which for gsa / hgsa also fixes k.
// Gist methods run on models.model (which must have a "gsa" config); the baselines and full run on
// models.full_model when given, else on models.model's weights without gists.
//
// A LongBench file (spec.jsonl) is validated here with the rest of the spec, but runs through `gsa eval`'s own
// pred.py protocol (tools/cmd-eval.cpp, eval/longbench-protocol.h), never through run_eval.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "eval/results.h"
#include "eval/tasks.h"
#include "infer/method.h"
#include "model/llama.h"
#include "tokenizer/tokenizer.h"

namespace gsa::infer {

inline constexpr const char* default_eval_template = "{context}\n\n{question}\n";  // the layout gsa train uses for generated tasks

struct eval_spec {
  std::vector<std::string> tasks;       // generated tasks (eval::task_names()), or
  std::filesystem::path jsonl;          // a LongBench-format file (exactly one of the two; see above)
  std::vector<int64_t> lengths = {1024};  // context lengths in raw tokens
  std::vector<double> depths = {0.5};   // needle depth fractions in [0, 1]
  std::vector<std::string> methods = {"full", "gsa"};
  std::vector<double> ratios = {8};     // r >= 1: budget L / r
  int samples = 1;                      // per cell (jsonl: records per dataset, 0 = all)
  uint64_t seed = 0;
  int max_tokens = 16;
  std::string prompt_template = default_eval_template;  // holds {context} once and {question}
  std::filesystem::path haystack_dir = "../shared/data/text/haystack";  // niah_* filler
  std::string qa_jsonl;                 // the qa task's source
};

struct eval_models {
  const llama_model* model = nullptr;       // --model: gist methods, and the rest when full_model is null
  const llama_model* full_model = nullptr;  // --full-model: baselines and full (may be null)
  const tokenizer* tok = nullptr;           // the token counter and the prompt encoder
  const llama_model& for_method(method m) const;
};

// One method at one ratio, as run and recorded.
struct eval_variant {
  method meth = method::full;
  double ratio = 0;         // recorded (0 for full, the model's ratio() for gist)
  double budget_ratio = 0;  // r of the budget L / r; 0 = no budget (full, gist)
};

// What a predictor gets for one run: the sample (valid during the call only), the method, the prompt's tokens.
struct eval_query {
  const eval::sample* sample = nullptr;
  eval_variant variant;
  int64_t length = 0;                  // the cell's requested length
  int64_t budget = -1;                 // attended raw tokens per step and KV head; -1 = the method's own
  std::vector<int32_t> context_ids;    // prefilled: the template up to the end of the context (BOS first)
  std::vector<int32_t> question_ids;   // appended: the rest of the template
  // Raw token ranges [begin, end) of the prompt holding an expected answer (context only; empty when no answer
  // appears verbatim in the context, e.g. qa or variable_tracking).
  std::vector<std::pair<int64_t, int64_t>> needle_spans;
};

// The selections of one row (unfolded[layer * n_kv_heads + h]) three ways: mean = needle_hit's figure; any = 1 when
// at least one non-empty list holds the answer, else 0; per_layer[l] = needle_hit over layer l's lists (-1: layer l
// selected nothing). All -1 (per_layer empty) when needle_hit is.
struct needle_routing {
  double mean = -1, any = -1;
  std::vector<double> per_layer;
};

// What a predictor returns: the answer text (scored with eval::score) and, for methods that select chunks or
// pages, needle_routing_of(...) at the question's last row (routing.mean -1: not measured). Converts from a plain
// string.
struct eval_answer {
  std::string text;
  needle_routing routing;
  eval_answer(std::string t = {}, double hit = -1) : text(std::move(t)) { routing.mean = hit; }  // NOLINT: implicit
  eval_answer(const char* t) : text(t) {}                                                        // NOLINT: implicit
};
// Tests replace the model with an oracle.
using eval_predictor = std::function<eval_answer(const eval_query&)>;
// Called after each run with (runs done, runs in all).
using eval_progress = std::function<void(size_t done, size_t total)>;

// Throws gsa::error for: both or neither of tasks / jsonl, an unknown task or method, an empty list, a depth
// outside [0, 1], a ratio below 1, a gist method with a model lacking "gsa", a length (+ max_tokens) beyond a
// model's max_position_embeddings, a template without {context} or {question}, models with different
// vocabularies, samples < 0 or max_tokens < 1.
void validate_eval(const eval_spec& spec, const eval_models& models);

// The (method, ratio) runs in spec order: full and gist once, the rest once per ratio.
std::vector<eval_variant> eval_variants(const eval_spec& spec, const eval_models& models);

// The template split at the end of the context: {prefix with the context, the rest}, both substituted.
std::pair<std::string, std::string> split_prompt(const std::string& tmpl, const eval::sample& s);

// The fraction of the non-empty selections (one id list per layer and KV head, as step_stats::unfolded) holding
// a unit (unit_tokens raw tokens: a chunk or a page) that overlaps one of the spans; -1 when every list is empty
// (nothing selected: a method without selection, a dense-only model, or a context inside the budget) or there
// are no spans.
double needle_hit(const std::vector<std::vector<int32_t>>& unfolded, int unit_tokens,
                  const std::vector<std::pair<int64_t, int64_t>>& spans);

needle_routing needle_routing_of(const std::vector<std::vector<int32_t>>& unfolded, int n_kv_heads, int unit_tokens,
                                 const std::vector<std::pair<int64_t, int64_t>>& spans);

// The raw token ranges of `prefix` (tokenized with BOS when add_bos, as the prompt's prefill) that hold an
// answer: for each answer, every occurrence in `prefix`, widened by one token each side (a BPE merge may move a
// boundary).
std::vector<std::pair<int64_t, int64_t>> answer_spans(const std::string& prefix,
                                                       const std::vector<std::string>& answers,
                                                       const tokenizer& tok, bool add_bos = true);

// Greedy decoding with the engine (session + generate), stopping at a newline once the answer has started; the
// answer carries needle_routing_of the selection at the question's last row. gpu_kv_budget: each session's, as
// session_options::gpu_kv_budget.
eval_predictor model_predictor(const eval_models& models, int max_tokens,
                               prefill_mode prefill = prefill_mode::automatic, int64_t gpu_kv_budget = 0);

// Runs every cell of the generated tasks; records ordered by task, variant, length, depth. Validates first; a
// spec with jsonl instead of tasks is a caller's error (GSA_ASSERT).
std::vector<eval::result_record> run_eval(const eval_spec& spec, const eval_models& models,
                                          const eval_predictor& predict, const eval_progress& progress = {});

// Markdown table per depth: rows task x method x length, columns the depths, cells in percent.
std::string results_markdown_by_depth(const std::vector<eval::result_record>& records);

// CLI list parsers; each throws gsa::error naming `option` and showing a good value.
std::vector<std::string> parse_name_list(const std::string& list, const char* option);  // "a,b,c"
std::vector<double> parse_depths(const std::string& list);   // fractions "0,0.5,1" or percents "0,50%,100"
std::vector<double> parse_ratios(const std::string& list);   // "8,16,32" (an optional trailing x)
// "\n" and "\t" written as two characters in a command line become the characters.
std::string unescape_template(const std::string& tmpl);

}  // namespace gsa::infer
