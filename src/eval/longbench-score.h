// Scoring LongBench prediction files the way THUDM/LongBench's eval.py does, so any system's output (ours or
// another engine's pred.py run) gets the score LongBench would publish for it. A prediction file has one JSON
// object per line: `pred` (the model's text), `answers` (strings), `all_classes` (strings or null) and, for
// LongBench-E, `length`. eval.py's rules, all kept:
//   * a sample's score is the max of the dataset's metric over its answers (0 when there are none), after
//     cutting the prediction to its first line on trec, triviaqa, samsum and lsht;
//   * every sample is scored with the all_classes of the file's LAST line (eval.py keeps overwriting it);
//   * the dataset score is round(100 * sum / n, 2) on Python floats, summing in file order, with Python's
//     round (correctly rounded to two decimals); LongBench-E scores each length bucket as
//     round(100 * numpy.mean(bucket), 2), where the mean uses numpy's pairwise summation and round() on a
//     numpy float is numpy's (rint(x * 100) / 100, which can differ from Python's in the last digit); an
//     empty bucket is NaN there (numpy's mean of nothing), null in our JSON and "nan" in text.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace gsa::eval {

struct prediction_record {
  std::string pred;
  std::vector<std::string> answers;
  std::optional<std::vector<std::string>> all_classes;  // nullopt for null
  std::optional<int64_t> length;                        // absent field
  int64_t line = 0;
};

// Reads and checks every line first, errors "FILE:LINE: ..." naming the field: bytes that are not UTF-8, a
// line that is not a JSON object, pred not a string, answers not an array of strings, all_classes missing
// (eval.py reads it from every line) or neither null nor strings, length not an integer, a retrieval answer
// without "Paragraph N", and (longbench_e) a line without length. An unknown dataset or an empty file fails.
std::vector<prediction_record> load_predictions(const std::filesystem::path& file, const std::string& dataset,
                                                bool longbench_e);

struct bucket_score {
  std::string name;  // "0-4k", "4-8k", "8k+"
  int64_t n = 0;
  double score = 0;  // percent, rounded; NaN when n == 0
};

struct dataset_score {
  std::string dataset, metric;
  int64_t n = 0;
  double score = 0;                  // percent, rounded (LongBench mode)
  std::vector<bucket_score> buckets;  // LongBench-E mode only
  std::vector<double> per_sample;    // each sample's score in [0, 1], file order
};

// Throws gsa::error (naming the file's last line) when a classification dataset's last all_classes is null,
// where eval.py raises.
dataset_score score_predictions(const std::string& dataset, const std::vector<prediction_record>& preds,
                                bool longbench_e, const std::string& where = "");

// The dataset eval.py reads from a prediction file's name: the name up to its first '.'.
std::string dataset_from_file_name(const std::filesystem::path& file);

// Python's round(x, 2) on a float: the double nearest the correctly rounded two-decimal value.
double python_round2(double x);
// numpy's round(x, 2) on a float64: rint(x * 100) / 100.
double numpy_round2(double x);
// numpy.mean of a float64 array (pairwise summation as numpy's add.reduce does it, then / n); NaN for n = 0.
double numpy_mean(const std::vector<double>& x);

// Text and JSON reports. The JSON: {"dataset", "metric", "n", "score": number or {bucket: number|null},
// "per_sample": [{"line", "score"[, "bucket"]}]}.
std::string dataset_score_text(const dataset_score& s, bool per_sample, const std::vector<prediction_record>& preds);
std::string dataset_score_json(const dataset_score& s, const std::vector<prediction_record>& preds);

}  // namespace gsa::eval
