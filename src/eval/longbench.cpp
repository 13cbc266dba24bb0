// LongBench jsonl loader and per-dataset scoring (see longbench.h).
#include "eval/longbench.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json-util.h"
#include "eval/metrics.h"
#include "eval/text-util.h"

namespace gsa::eval {

namespace {

using json = nlohmann::json;

struct dataset_metric {
  const char* dataset;
  const char* metric;
};

// LongBench's dataset2metric, English entries (the Chinese ones need a Chinese tokenizer for their metric).
constexpr dataset_metric k_metrics[] = {
    {"narrativeqa", "qa_f1"},   {"qasper", "qa_f1"},       {"multifieldqa_en", "qa_f1"},
    {"hotpotqa", "qa_f1"},      {"2wikimqa", "qa_f1"},     {"musique", "qa_f1"},
    {"gov_report", "rouge"},    {"qmsum", "rouge"},        {"multi_news", "rouge"},
    {"trec", "classification"}, {"triviaqa", "qa_f1"},     {"samsum", "rouge"},
    {"passage_retrieval_en", "retrieval"}, {"passage_count", "count"}, {"lcc", "code_sim"},
    {"repobench-p", "code_sim"},
};

std::string str_field(const json& j, const char* name, const std::string& where, bool required) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) {
    if (required) fail("{}: missing field '{}' (LongBench records have input, context, answers, all_classes, length)",
                       where, name);
    return {};
  }
  if (!it->is_string()) fail("{}: field '{}' must be a string, got {}", where, name, it->type_name());
  return it->get<std::string>();
}

std::vector<std::string> str_array(const json& j, const char* name, const std::string& where, bool required) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) {
    if (required) fail("{}: missing field '{}' (an array of strings)", where, name);
    return {};
  }
  if (!it->is_array()) fail("{}: field '{}' must be an array of strings, got {}", where, name, it->type_name());
  std::vector<std::string> out;
  for (auto& e : *it) {
    if (!e.is_string()) fail("{}: field '{}' must hold strings only, found {}", where, name, e.type_name());
    out.push_back(e.get<std::string>());
  }
  return out;
}

}  // namespace

longbench_record parse_longbench_line(std::string_view line, const std::string& where) {
  const json j = parse_json(line, where);  // where = "file:line"
  if (!j.is_object()) fail("{}: expected a JSON object, got {}", where, j.type_name());
  longbench_record r;
  r.input = str_field(j, "input", where, true);
  r.context = str_field(j, "context", where, true);
  r.answers = str_array(j, "answers", where, true);
  if (r.answers.empty()) fail("{}: field 'answers' is empty; a record needs at least one answer", where);
  if (!j.contains("all_classes"))
    fail("{}: missing field 'all_classes' (null when the dataset has no classes)", where);
  r.all_classes = str_array(j, "all_classes", where, false);
  auto len = j.find("length");
  if (len == j.end()) fail("{}: missing field 'length'", where);
  if (!len->is_number_integer()) fail("{}: field 'length' must be an integer, got {}", where, len->type_name());
  r.length = len->get<int64_t>();
  r.dataset = str_field(j, "dataset", where, false);
  r.language = str_field(j, "language", where, false);
  r.id = str_field(j, "_id", where, false);
  return r;
}

std::vector<longbench_record> load_longbench(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) fail("cannot open LongBench file '{}': check the path (a .jsonl file, one record per line)",
                file.string());
  std::vector<longbench_record> out;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); n++) {
    if (strip_ws(line).empty()) continue;
    out.push_back(parse_longbench_line(line, fmt::format("{}:{}", file.string(), n)));
  }
  if (out.empty()) fail("LongBench file '{}' holds no records", file.string());
  return out;
}

sample longbench_sample(const longbench_record& r) {
  sample s;
  s.task = r.dataset;
  s.context = r.context;
  s.question = r.input;
  s.answers = r.answers;
  s.all_classes = r.all_classes;
  return s;
}

std::string longbench_metric(std::string_view dataset) {
  for (auto& m : k_metrics)
    if (dataset == m.dataset) return m.metric;
  fail("unknown LongBench dataset '{}'; known: {}", dataset, join(longbench_datasets(), ", "));
}

std::vector<std::string> longbench_datasets() {
  std::vector<std::string> out;
  for (auto& m : k_metrics) out.emplace_back(m.dataset);
  return out;
}

double longbench_score(std::string_view dataset, std::string_view prediction,
                       const std::vector<std::string>& answers, const std::vector<std::string>& all_classes) {
  std::string metric = longbench_metric(dataset);
  std::string pred(prediction);
  if (dataset == "trec" || dataset == "triviaqa" || dataset == "samsum" || dataset == "lsht") {
    size_t b = pred.find_first_not_of('\n');
    pred = b == std::string::npos ? std::string() : pred.substr(b);
    pred = pred.substr(0, pred.find('\n'));
  }
  double best = 0.0;
  for (auto& gt : answers) {
    double s = metric == "qa_f1"            ? qa_f1_score(pred, gt)
               : metric == "rouge"          ? rouge_l_score(pred, gt)
               : metric == "classification" ? classification_score(pred, gt, all_classes)
               : metric == "retrieval"      ? retrieval_score(pred, gt)
               : metric == "count"          ? count_score(pred, gt)
                                            : code_sim_score(pred, gt);
    best = std::max(best, s);
  }
  return best;
}

}  // namespace gsa::eval
