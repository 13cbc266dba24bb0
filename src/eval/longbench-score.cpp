// LongBench prediction-file scoring (see longbench-score.h).
#include "eval/longbench-score.h"

#include <cfenv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json-util.h"
#include "eval/jieba.h"
#include "eval/longbench-protocol.h"
#include "eval/longbench.h"
#include "eval/metrics.h"
#include "eval/text-util.h"

namespace gsa::eval {

namespace {

using json = nlohmann::json;

std::vector<std::string> string_list(const json& v, const char* name, const std::string& where) {
  if (!v.is_array()) fail("{}: field '{}' must be an array of strings, got {}", where, name, v.type_name());
  std::vector<std::string> out;
  for (const auto& e : v) {
    if (!e.is_string()) fail("{}: field '{}' must hold strings only, found {}", where, name, e.type_name());
    out.push_back(e.get<std::string>());
  }
  return out;
}

// numpy's pairwise_sum for float64 (numpy/_core/src/umath/loops_utils.h.src): below 8 values a plain loop,
// up to 128 eight interleaved partial sums combined as a tree, above that the halves (cut at a multiple of 8)
// summed recursively.
double pairwise_sum(const double* a, size_t n) {
  if (n < 8) {
    double res = -0.0;
    for (size_t i = 0; i < n; i++) res += a[i];
    return res;
  }
  if (n <= 128) {
    double r[8];
    for (size_t j = 0; j < 8; j++) r[j] = a[j];
    size_t i = 8;
    for (; i < n - n % 8; i += 8)
      for (size_t j = 0; j < 8; j++) r[j] += a[i + j];
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++) res += a[i];
    return res;
  }
  size_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

std::string percent_text(double x) { return std::isnan(x) ? "nan" : fmt::format("{:.2f}", x); }

json percent_json(double x) { return std::isnan(x) ? json(nullptr) : json(x); }

}  // namespace

std::string dataset_from_file_name(const std::filesystem::path& file) {
  const std::string name = file.filename().string();
  return name.substr(0, name.find('.'));
}

std::vector<prediction_record> load_predictions(const std::filesystem::path& file, const std::string& dataset,
                                                bool longbench_e) {
  const std::string metric = longbench_metric(dataset);
  if (longbench_needs_jieba(metric)) {  // say so before reading the file, naming it
    try {
      jieba_segmenter::installed();
    } catch (const gsa::error& e) {
      fail("{}: dataset {} is scored by {}: {}", file.string(), dataset, metric, e.what());
    }
  }
  const std::string paragraph_key = longbench_paragraph_key(metric);
  std::ifstream in(file, std::ios::binary);
  if (!in) fail("cannot open prediction file '{}': check the path (a .jsonl file, one prediction per line)",
                file.string());
  std::vector<prediction_record> out;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); n++) {
    // eval.py json.loads every line; a blank one is an error there, skipped here.
    if (strip_ws(line).empty()) continue;
    const std::string where = fmt::format("{}:{}", file.string(), n);
    if (size_t bad = find_invalid_utf8(line); bad != std::string::npos)
      fail("{}: invalid UTF-8 at byte {} of the line (0x{:02X}); prediction files are UTF-8 text", where, bad,
           unsigned(uint8_t(line[bad])));
    const json j = parse_json(line, where);
    if (!j.is_object()) fail("{}: expected a JSON object, got {}", where, j.type_name());
    prediction_record p;
    p.line = n;
    auto pred = j.find("pred");
    if (pred == j.end()) fail("{}: missing field 'pred' (the model's answer text)", where);
    if (!pred->is_string()) fail("{}: field 'pred' must be a string, got {}", where, pred->type_name());
    p.pred = pred->get<std::string>();
    auto ans = j.find("answers");
    if (ans == j.end()) fail("{}: missing field 'answers' (an array of strings)", where);
    p.answers = string_list(*ans, "answers", where);
    auto cls = j.find("all_classes");
    if (cls == j.end())
      fail("{}: missing field 'all_classes' (null when the dataset has no classes; eval.py reads it from every "
           "line)",
           where);
    if (!cls->is_null()) p.all_classes = string_list(*cls, "all_classes", where);
    auto len = j.find("length");
    if (len != j.end()) {
      if (!len->is_number_integer())
        fail("{}: field 'length' must be an integer, got {}", where, len->type_name());
      // eval.py buckets any Python int; past 2^63 - 1 is 8k+ as well (get<int64_t> would wrap it negative: 0-4k).
      p.length = len->is_number_unsigned() && len->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())
                     ? std::numeric_limits<int64_t>::max()
                     : len->get<int64_t>();
    } else if (longbench_e) {
      fail("{}: missing field 'length'; LongBench-E groups predictions by it (0-4k, 4-8k, 8k+)", where);
    }
    for (const auto& a : p.answers)
      if (!paragraph_key.empty() && longbench_paragraph_id(metric, a).empty())
        fail("{}: answer '{}' names no paragraph; {} answers look like '{}12' (eval.py raises on it)", where, a,
             dataset, paragraph_key);
    out.push_back(std::move(p));
  }
  if (out.empty()) fail("prediction file '{}' holds no predictions", file.string());
  return out;
}

dataset_score score_predictions(const std::string& dataset, const std::vector<prediction_record>& preds,
                                bool longbench_e, const std::string& where) {
  dataset_score out;
  out.dataset = dataset;
  out.metric = longbench_metric(dataset);
  out.n = int64_t(preds.size());
  if (preds.empty()) fail("{}: no predictions to score", where.empty() ? dataset : where);
  const auto& last_classes = preds.back().all_classes;
  if (out.metric == "classification" && !last_classes)
    fail("{}:{}: all_classes is null on the last line, and eval.py scores every {} prediction with the last "
         "line's classes (it raises on null); give the labels",
         where, preds.back().line, dataset);
  const std::vector<std::string> classes = last_classes ? *last_classes : std::vector<std::string>{};
  double total = 0.0;
  std::vector<std::vector<double>> buckets(3);
  for (const auto& p : preds) {
    const double s = longbench_score(dataset, p.pred, p.answers, classes);
    out.per_sample.push_back(s);
    total += s;
    if (longbench_e) {
      GSA_ASSERT(p.length.has_value(), "line {} has no length", p.line);
      const std::string b = longbench_e_bucket(*p.length);
      for (size_t k = 0; k < 3; k++)
        if (b == longbench_e_buckets[k]) buckets[k].push_back(s);
    }
  }
  out.score = python_round2(100 * total / double(preds.size()));
  if (longbench_e)
    for (size_t k = 0; k < 3; k++)
      out.buckets.push_back({longbench_e_buckets[k], int64_t(buckets[k].size()),
                             numpy_round2(100 * numpy_mean(buckets[k]))});
  return out;
}

double python_round2(double x) {
  if (!std::isfinite(x)) return x;
  // glibc's printf rounds the exact binary value, ties to even, as CPython's dtoa (mode 3) does.
  char buf[400];
  std::snprintf(buf, sizeof buf, "%.2f", x);
  return std::strtod(buf, nullptr);
}

double numpy_round2(double x) {
  const int saved = std::fegetround();
  std::fesetround(FE_TONEAREST);
  const double r = std::nearbyint(x * 100.0) / 100.0;
  std::fesetround(saved);
  return r;
}

double numpy_mean(const std::vector<double>& x) {
  if (x.empty()) return std::numeric_limits<double>::quiet_NaN();
  return (0.0 + pairwise_sum(x.data(), x.size())) / double(x.size());
}

std::string dataset_score_text(const dataset_score& s, bool per_sample, const std::vector<prediction_record>& preds) {
  std::string out;
  if (s.buckets.empty()) {
    out = fmt::format("{} ({}): {} over {} predictions\n", s.dataset, s.metric, percent_text(s.score), s.n);
  } else {
    out = fmt::format("{} ({}), LongBench-E:", s.dataset, s.metric);
    for (const auto& b : s.buckets) out += fmt::format("  {} {} (n {})", b.name, percent_text(b.score), b.n);
    out += "\n";
  }
  if (per_sample)
    for (size_t i = 0; i < s.per_sample.size(); i++)
      out += fmt::format("line {}: {:.4f}{}\n", preds[i].line, s.per_sample[i],
                         s.buckets.empty() || !preds[i].length ? ""
                                                               : fmt::format(" [{}]", longbench_e_bucket(*preds[i].length)));
  return out;
}

std::string dataset_score_json(const dataset_score& s, const std::vector<prediction_record>& preds) {
  json j = {{"dataset", s.dataset}, {"metric", s.metric}, {"n", s.n}};
  if (s.buckets.empty()) {
    j["score"] = percent_json(s.score);
  } else {
    json b = json::object();
    for (const auto& x : s.buckets) b[x.name] = percent_json(x.score);
    j["score"] = b;
  }
  json per = json::array();
  for (size_t i = 0; i < s.per_sample.size(); i++) {
    json e = {{"line", preds[i].line}, {"score", s.per_sample[i]}};
    if (!s.buckets.empty() && preds[i].length) e["bucket"] = longbench_e_bucket(*preds[i].length);
    per.push_back(e);
  }
  j["per_sample"] = per;
  return j.dump(2);
}

}  // namespace gsa::eval
