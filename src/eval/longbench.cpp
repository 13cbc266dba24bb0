// LongBench jsonl loader and per-dataset scoring (see longbench.h).
#include "eval/longbench.h"

#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json-util.h"
#include "eval/jieba.h"
#include "eval/longbench-protocol.h"
#include "eval/metrics.h"
#include "eval/text-util.h"

namespace gsa::eval {

namespace {

using json = nlohmann::json;

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

namespace {

// "FILE:LINE" plus " (_id X)" when the record names itself; the id is read best-effort (a mistyped _id is
// reported by the field checks).
std::string record_where(const json& j, const std::string& where) {
  auto it = j.find("_id");
  if (it == j.end() || !it->is_string()) return where;
  return fmt::format("{} (_id {})", where, it->get<std::string>());
}

}  // namespace

longbench_record parse_longbench_line(std::string_view line, const std::string& where0) {
  if (size_t bad = find_invalid_utf8(line); bad != std::string_view::npos)
    fail("{}: invalid UTF-8 at byte {} of the line (0x{:02X}); LongBench files are UTF-8 text: re-encode the file",
         where0, bad, unsigned(uint8_t(line[bad])));
  const json j = parse_json(line, where0);  // where0 = "file:line"
  if (!j.is_object()) fail("{}: expected a JSON object, got {}", where0, j.type_name());
  const std::string where = record_where(j, where0);
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
  if (len->is_number_unsigned() && len->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
    fail("{}: field 'length' is {}, past 2^63 - 1; it counts the record's words or characters", where,
         len->get<uint64_t>());
  r.length = len->get<int64_t>();
  if (r.length < 0) fail("{}: field 'length' is {}; it counts words or characters, so it is >= 0", where, r.length);
  r.dataset = str_field(j, "dataset", where, false);
  r.language = str_field(j, "language", where, false);
  r.id = str_field(j, "_id", where, false);
  return r;
}

void check_longbench_record(const longbench_record& r, const std::string& where0) {
  const std::string where = r.id.empty() ? where0 : fmt::format("{} (_id {})", where0, r.id);
  std::string metric;
  for (auto& d : longbench_table())
    if (r.dataset == d.dataset) metric = d.metric;
  if (metric.empty())
    fail("{}: unknown LongBench dataset '{}'; known: {}", where, r.dataset, join(longbench_datasets(), ", "));
  if (strip_ws(r.context).empty())
    fail("{}: field 'context' is empty; every LongBench record carries the long text its question is about",
         where);
  if (metric == "classification" && r.all_classes.empty())
    fail("{}: dataset {} is scored by classification, which needs the labels in 'all_classes', but it is null or "
         "empty (LongBench's classification_score raises on it)",
         where, r.dataset);
  const std::string key = longbench_paragraph_key(metric);
  for (auto& a : r.answers)
    if (!key.empty() && longbench_paragraph_id(metric, a).empty())
      fail("{}: dataset {} answer '{}' names no paragraph; its answers look like '{}12' (LongBench's {}_score raises "
           "on it)",
           where, r.dataset, a, key, metric);
  // Before any model runs: the Chinese metrics segment with jieba, whose data must be installed.
  if (longbench_needs_jieba(metric)) {
    try {
      jieba_segmenter::installed();
    } catch (const gsa::error& e) {
      fail("{}: dataset {} is scored by {}: {}", where, r.dataset, metric, e.what());
    }
  }
}

std::vector<longbench_record> load_longbench(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) fail("cannot open LongBench file '{}': check the path (a .jsonl file, one record per line)",
                file.string());
  // eval.py names a prediction file's dataset by the file name before its first '.'.
  const std::string name = file.filename().string();
  const std::string from_name = name.substr(0, name.find('.'));
  std::vector<longbench_record> out;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); n++) {
    if (strip_ws(line).empty()) continue;
    const std::string where = fmt::format("{}:{}", file.string(), n);
    longbench_record r = parse_longbench_line(line, where);
    r.line = n;
    if (r.dataset.empty()) {
      bool known = false;
      for (auto& d : longbench_table()) known = known || from_name == d.dataset;
      if (!known)
        fail("{}{}: no 'dataset' field, and the file name '{}' names no LongBench dataset; add \"dataset\": "
             "\"hotpotqa\" (any of {}) to every record, or name the file after its dataset (hotpotqa.jsonl)",
             where, r.id.empty() ? "" : fmt::format(" (_id {})", r.id), name, join(longbench_datasets(), ", "));
      r.dataset = from_name;
      r.dataset_from_file_name = true;
    }
    check_longbench_record(r, where);
    out.push_back(std::move(r));
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

std::string longbench_metric(std::string_view dataset) { return longbench_info(dataset).metric; }

std::vector<std::string> longbench_datasets() {
  std::vector<std::string> out;
  for (auto& d : longbench_table()) out.emplace_back(d.dataset);
  return out;
}

std::string longbench_paragraph_key(std::string_view metric) {
  return metric == "retrieval" ? "Paragraph " : metric == "retrieval_zh" ? "\u6bb5\u843d" : "";
}

std::string longbench_paragraph_id(std::string_view metric, std::string_view answer) {
  return metric == "retrieval" ? paragraph_id(answer) : metric == "retrieval_zh" ? paragraph_id_zh(answer) : "";
}

bool longbench_needs_jieba(std::string_view metric) { return metric == "qa_f1_zh" || metric == "rouge_zh"; }

double longbench_score(std::string_view dataset, std::string_view prediction,
                       const std::vector<std::string>& answers, const std::vector<std::string>& all_classes) {
  std::string metric = longbench_metric(dataset);
  const jieba_segmenter* jieba = longbench_needs_jieba(metric) ? &jieba_segmenter::installed() : nullptr;
  std::string pred(prediction);
  if (longbench_first_line_only(dataset)) {
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
               : metric == "qa_f1_zh"       ? qa_f1_zh_score(pred, gt, *jieba)
               : metric == "rouge_zh"       ? rouge_zh_score(pred, gt, *jieba)
               : metric == "retrieval_zh"   ? retrieval_zh_score(pred, gt)
               : metric == "count"          ? count_score(pred, gt)
                                            : code_sim_score(pred, gt);
    best = std::max(best, s);
  }
  return best;
}

}  // namespace gsa::eval
