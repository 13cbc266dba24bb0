// Long-context retrieval tasks generated at a requested length in tokens and needle depth (RULER /
// passkey style): passkey, niah_single, niah_multikey, niah_multivalue, niah_multiquery,
// variable_tracking, kv_retrieval, qa. Generation is a pure function of the parameters and the seed;
// lengths are measured with the caller's tokenizer callback, so gsa_eval stays independent of any
// tokenizer. A sample holds the context, the question and every answer; score() grades a prediction.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "eval/context-builder.h"

namespace gsa::eval {

struct sample {
  std::string task, context, question;
  std::vector<std::string> answers;      // every expected answer (all must appear for multi-answer tasks)
  std::vector<std::string> all_classes;  // LongBench classification labels; empty for generated tasks
  int depth_percent = 0;                 // where the (first) needle sits, percent of the filler
  int64_t target_tokens = 0;             // requested context length
  int64_t context_tokens = 0;            // measured context length (0 when not generated here)
};

struct task_params {
  std::string task = "passkey";
  int64_t length_tokens = 4096;  // context length to build, in the callback's tokens
  double depth = 0.5;            // fraction of the filler before the asked needle, in [0, 1]
  uint64_t seed = 0;
  std::filesystem::path haystack_dir = "../shared/data/text/haystack";  // niah_* filler
  std::string qa_jsonl;          // qa: {question|input, answers|answer, context|passages} per line
  int n_needles = 4;             // niah_multikey: needles incl. the asked one; multivalue: values; multiquery: keys
  int n_hops = 4;                // variable_tracking: assignments after the first in each chain
  int n_chains = 1;              // variable_tracking: chains, the first asked, the others distractors
};

std::vector<std::string> task_names();

// Throws gsa::error for an unknown task, a bad parameter, a missing haystack folder or QA file, or a
// length too small for the instruction and needles.
sample generate(const task_params& params, const token_counter& count);

// Grade in [0, 1]: the fraction of answers contained in the prediction (case-insensitive, RULER's
// string_match_all) for the retrieval tasks; max QA F1 over answers for qa; LongBench's metric when
// the sample's task is a LongBench dataset name.
double score(const sample& s, std::string_view prediction);

}  // namespace gsa::eval
