// LongBench-format evaluation data: one JSON object per line with `input` (the question), `context`,
// `answers` (array of strings), `all_classes` (array of strings or null), `length` (words or characters,
// as LongBench counts them), `dataset` and optionally `language`, `_id`. The loader checks every record
// before anything runs and names file, line and _id in each error. longbench_score applies LongBench's
// per-dataset metric the way its eval.py does.
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
  std::string dataset, language, id;  // language and id empty when absent
  int64_t line = 0;                    // 1-based line in the file (0 when parsed alone)
  bool dataset_from_file_name = false;  // no "dataset" field: the file's name gave it (callers say so)
};

// Reads and checks every non-blank line before returning, so a bad record stops a run before its first
// sample. Throws gsa::error "FILE:LINE (_id X): ..." for: bytes that are not UTF-8, a line that is not JSON,
// a missing or mistyped field, an empty context or answer list, an unknown dataset, a classification
// dataset (trec, lsht) whose all_classes is null or empty (LongBench's scorer raises on it), a retrieval
// answer without "Paragraph N" or "\u6bb5\u843dN" (likewise), and a record without "dataset" in a file whose
// name (before its first '.', as LongBench's eval.py reads it) is no LongBench dataset; with such a name the
// dataset comes from it and dataset_from_file_name is set. A Chinese dataset scored with jieba loads jieba's
// data here, so a missing jieba install stops the run before any model loads.
std::vector<longbench_record> load_longbench(const std::filesystem::path& file);
// Parses one line (exposed for tests and streaming) with the field checks but none that need the dataset;
// `where` ("FILE:LINE") prefixes error messages, followed by the record's _id when it has one.
longbench_record parse_longbench_line(std::string_view line, const std::string& where);
// The checks that need the dataset: known, non-empty context, classes for classification, the paragraph id in
// every retrieval answer, jieba's data for the datasets that need it. `where` as above.
void check_longbench_record(const longbench_record& r, const std::string& where);

// A record as a sample: task = dataset, question = input; score() then applies the dataset's metric.
sample longbench_sample(const longbench_record& r);

// The metric LongBench's dataset2metric assigns to a dataset ("qa_f1", "qa_f1_zh", "rouge", "rouge_zh",
// "classification", "retrieval", "retrieval_zh", "count", "code_sim"); throws gsa::error listing the known
// datasets for any other name.
std::string longbench_metric(std::string_view dataset);
std::vector<std::string> longbench_datasets();

// The retrieval metrics read the paragraph id from each answer: "Paragraph " (retrieval) or "\u6bb5\u843d"
// (retrieval_zh) before it, empty for other metrics; the id as text, empty when the answer names none.
std::string longbench_paragraph_key(std::string_view metric);
std::string longbench_paragraph_id(std::string_view metric, std::string_view answer);
// Whether the metric segments with jieba (qa_f1_zh, rouge_zh), whose data must then be installed (eval/jieba.h).
bool longbench_needs_jieba(std::string_view metric);

// LongBench scorer for one prediction: for trec/triviaqa/samsum/lsht only the first line of the prediction
// (after leading newlines) counts; the score is the max over the answers. In [0, 1].
double longbench_score(std::string_view dataset, std::string_view prediction,
                       const std::vector<std::string>& answers, const std::vector<std::string>& all_classes);

}  // namespace gsa::eval
