// LongBench-format evaluation data: one JSON object per line with `input` (the question), `context`,
// `answers` (array of strings), `all_classes` (array of strings or null), `length` (words or characters,
// as LongBench counts them) and optionally `dataset`, `language`, `_id`. The loader reports the file and
// line of any bad record. longbench_score applies LongBench's per-dataset metric the way its eval.py does.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "eval/tasks.h"

namespace gsa::eval {

struct longbench_record {
  std::string input, context;
  std::vector<std::string> answers;
  std::vector<std::string> all_classes;  // empty when null or absent
  int64_t length = 0;
  std::string dataset, language, id;  // empty when absent
};

// Reads every non-blank line; throws gsa::error "FILE:LINE: ..." naming the missing or mistyped field.
std::vector<longbench_record> load_longbench(const std::filesystem::path& file);
// Parses one line (exposed for tests and streaming); `where` prefixes error messages.
longbench_record parse_longbench_line(std::string_view line, const std::string& where);

// A record as a sample: task = dataset, question = input; score() then applies the dataset's metric.
sample longbench_sample(const longbench_record& r);

// The metric LongBench's dataset2metric assigns to an English dataset ("qa_f1", "rouge", "classification",
// "retrieval", "count", "code_sim"); throws gsa::error listing the known datasets for any other name.
std::string longbench_metric(std::string_view dataset);
std::vector<std::string> longbench_datasets();

// LongBench scorer for one prediction: for trec/triviaqa/samsum/lsht only the first line of the prediction
// (after leading newlines) counts; the score is the max over the answers. In [0, 1].
double longbench_score(std::string_view dataset, std::string_view prediction,
                       const std::vector<std::string>& answers, const std::vector<std::string>& all_classes);

}  // namespace gsa::eval
