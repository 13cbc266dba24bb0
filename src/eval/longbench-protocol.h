// LongBench's prediction protocol (THUDM/LongBench, LongBench/pred.py) as data and pure functions, so that
// `gsa eval --jsonl` builds the same prompts and generates the same number of tokens as the published runs:
//   * the per-dataset prompt template (config/dataset2prompt.json), filled with the record's context and
//     input as Python's str.format does (one pass: text inside the values is never substituted again);
//   * the per-dataset maximum answer length in tokens (config/dataset2maxlen.json);
//   * a prompt longer than the length budget loses its middle: the first and last budget/2 tokens of the
//     tokenized prompt (BOS included) are decoded, special tokens skipped, and joined as text;
//   * only samsum stops generating at a newline token (and may not stop on the first one); every dataset
//     stops at the model's end-of-sequence ids;
//   * the scorer reads only the first line (after leading newlines) for trec, triviaqa, samsum, lsht;
//   * LongBench-E groups records by their `length` field: 0-4k (< 4000), 4-8k (< 8000), 8k+.
// pred.py also wraps the prompt in a chat template for chat models except on trec, triviaqa, samsum, lsht,
// lcc and repobench-p; gsa evaluates base models, so no template is applied (docs/longbench.md).
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "eval/longbench.h"

namespace gsa::eval {

struct longbench_dataset_info {
  const char* dataset;
  const char* metric;  // qa_f1, qa_f1_zh, rouge, rouge_zh, classification, retrieval, retrieval_zh, count, code_sim
  int max_new_tokens;  // dataset2maxlen
  const char* prompt;  // dataset2prompt, with {context} and {input}
};

// The 21 datasets of LongBench v1, in LongBench's order.
std::span<const longbench_dataset_info> longbench_table();
// Throws gsa::error listing the known datasets for any other name.
const longbench_dataset_info& longbench_info(std::string_view dataset);

// The filled template and the part of it after the context (the question and the answer cue), which a
// truncated prompt still ends with unless the budget is smaller than that part.
struct longbench_prompt_text {
  std::string prompt, after_context;
};
longbench_prompt_text longbench_prompt(const longbench_record& r);

// Tokenizer callbacks: encode as `tokenizer(prompt)` does (with BOS), decode skipping special tokens.
using token_encoder = std::function<std::vector<int32_t>(std::string_view)>;
using token_decoder = std::function<std::string(std::span<const int32_t>)>;

// pred.py's truncation: the prompt itself when it encodes to at most max_length tokens, else
// decode(ids[:h]) + decode(ids[-h:]) with h = max_length / 2 (rounded down).
std::string truncate_prompt_middle(const std::string& prompt, int64_t max_length, const token_encoder& encode,
                                   const token_decoder& decode);

// Generation stops at a newline token (after the first answer token) only on samsum.
bool longbench_stops_at_newline(std::string_view dataset);
// eval.py scores only the first line of the prediction (prediction.lstrip('\n').split('\n')[0]) on these.
bool longbench_first_line_only(std::string_view dataset);
// "0-4k", "4-8k" or "8k+" for a record's length field.
const char* longbench_e_bucket(int64_t length);
inline constexpr const char* longbench_e_buckets[] = {"0-4k", "4-8k", "8k+"};

}  // namespace gsa::eval
