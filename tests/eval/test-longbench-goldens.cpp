// gsa score against THUDM/LongBench's own eval.py and metrics.py: tests/eval/data/longbench-goldens.json holds
// prediction files (perturbations of real answers, Unicode edge cases, empty predictions, LongBench-E buckets) for
// every LongBench dataset, with the per-sample scores the reference's metric functions returned and the dataset
// score its eval.py wrote, as tests/eval/make-longbench-goldens.py recorded them (docs/longbench.md says how to
// rerun it). Every score must be equal, not close. Where gsa deliberately differs, the golden carries the score gsa
// must give and why: "rouge-recursion" (the rouge package passed Python's recursion limit and LongBench scored
// 0.0; gsa keeps the package's own result) and "levenshtein-tie" (fuzz.ratio on an exact half, where
// python-Levenshtein 0.12 and rapidfuzz round apart; gsa follows rapidfuzz).
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/error.h"
#include "eval/jieba.h"
#include "eval/longbench-score.h"
#include "eval/longbench.h"
#include "test-util.h"

using namespace gsa::eval;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// $GSA_LONGBENCH_GOLDENS names another file the generator wrote (a larger --random comparison).
const json& goldens() {
  static const json j = [] {
    const char* env = std::getenv("GSA_LONGBENCH_GOLDENS");
    std::ifstream in(env ? fs::path(env) : gsa::test::source_dir() / "tests/eval/data/longbench-goldens.json");
    std::stringstream ss;
    ss << in.rdbuf();
    return json::parse(ss.str());
  }();
  return j;
}

// The file as eval.py read it: one JSON object per line, named after its dataset.
fs::path write_file(const json& f, int index) {
  fs::path dir = fs::temp_directory_path() /
                 ("gsa-test-lb-goldens-" + std::to_string(::getpid()) + "-" + std::to_string(index));
  fs::create_directories(dir);
  fs::path p = dir / (f["dataset"].get<std::string>() + ".jsonl");
  std::ofstream out(p, std::ios::binary);
  for (const auto& l : f["lines"]) out << l.dump() << "\n";
  return p;
}

double percent(const json& v) { return v.is_null() ? std::nan("") : v.get<double>(); }

bool same_percent(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

std::string label(const json& f) {
  return f["group"].get<std::string>() + "/" + f["dataset"].get<std::string>() + (f["e"].get<bool>() ? " (e)" : "");
}

}  // namespace

TEST(longbench_goldens, cover_every_dataset_and_the_reference_is_named) {
  const json& g = goldens();
  EXPECT_NE(g["reference"]["longbench"].get<std::string>().find("2e00731"), std::string::npos);
  std::set<std::string> base, e;
  for (const auto& f : g["files"]) {
    if (f["group"] == "base") base.insert(f["dataset"].get<std::string>());
    if (f["e"].get<bool>()) e.insert(f["dataset"].get<std::string>());
  }
  EXPECT_EQ(base.size(), 21u);  // all of LongBench v1's datasets
  EXPECT_EQ(e.size(), 13u);     // all of LongBench-E's
}

// The Chinese datasets need jieba's data at run time (eval/jieba.h); without it they are skipped, saying so.
#define REQUIRE_JIEBA()                                                                                        \
  do {                                                                                                         \
    if (find_jieba_dir().empty())                                                                              \
      GTEST_SKIP() << "needs jieba's data (apt-get install python3-jieba, or GSA_JIEBA_DIR=DIR holding dict.txt)"; \
  } while (0)

TEST(longbench_goldens, jieba_cuts_as_jieba) {
  REQUIRE_JIEBA();
  const auto& seg = jieba_segmenter::installed();
  size_t n = 0;
  for (const auto& c : goldens()["jieba"]) {
    const std::string text = c[0].get<std::string>();
    EXPECT_EQ(seg.cut(text), c[1].get<std::vector<std::string>>()) << json(text).dump();
    n++;
  }
  EXPECT_GT(n, 100u);
}

namespace {

// Scores the golden's files whose metric does (or does not) segment with jieba and compares every score; returns
// the number of samples compared and, in `deliberate`, how many of them gsa deliberately scores differently.
int check_files(bool with_jieba, int& deliberate) {
  int index = 0, samples = 0;
  for (const auto& f : goldens()["files"]) {
    const std::string dataset = f["dataset"].get<std::string>();
    if (longbench_needs_jieba(longbench_metric(dataset)) != with_jieba) continue;
    SCOPED_TRACE(label(f));
    const bool e = f["e"].get<bool>();
    const fs::path p = write_file(f, index++);
    EXPECT_EQ(dataset_from_file_name(p), dataset);
    const auto preds = load_predictions(p, dataset, e);
    EXPECT_EQ(preds.size(), f["lines"].size());
    if (f.contains("error")) {  // eval.py raised on this file; gsa score refuses it too
      EXPECT_THROW(score_predictions(dataset, preds, e, p.string()), gsa::error) << f["error"];
      fs::remove_all(p.parent_path());
      continue;
    }
    const dataset_score s = score_predictions(dataset, preds, e, p.string());
    if (s.per_sample.size() != preds.size()) {
      ADD_FAILURE() << s.per_sample.size() << " scores for " << preds.size() << " predictions";
      continue;
    }
    const json none = json::object();
    const json& gsa_only = f.contains("gsa") ? f["gsa"] : none;
    for (size_t i = 0; i < preds.size(); i++) {
      double want = f["per_sample"][i].get<double>();
      if (auto it = gsa_only.find(std::to_string(i)); it != gsa_only.end()) {
        const std::string why = (*it)["why"].get<std::string>();
        EXPECT_TRUE(why == "rouge-recursion" || why == "levenshtein-tie") << why;
        want = (*it)["score"].get<double>();
        deliberate++;
      }
      EXPECT_EQ(s.per_sample[i], want) << "line " << i + 1 << ": pred " << f["lines"][i]["pred"].dump()
                                       << ", answers " << f["lines"][i]["answers"].dump();
      samples++;
    }
    const json& total = f.contains("gsa_score") ? f["gsa_score"] : f["score"];
    if (e) {
      EXPECT_EQ(s.buckets.size(), 3u);
      for (const auto& b : s.buckets)
        EXPECT_TRUE(same_percent(b.score, percent(total[b.name])))
            << b.name << ": " << b.score << " vs " << total[b.name];
    } else {
      EXPECT_EQ(s.score, total.get<double>());
      // eval.py's result.json holds the rounded float; gsa prints it with two decimals.
      EXPECT_NE(dataset_score_text(s, false, preds).find(fmt::format(": {:.2f} over", total.get<double>())),
                std::string::npos);
    }
    fs::remove_all(p.parent_path());
  }
  return samples;
}

}  // namespace

TEST(longbench_goldens, gsa_score_equals_eval_py) {
  int deliberate = 0;
  const int samples = check_files(false, deliberate);
  EXPECT_GT(samples, 1000);
  EXPECT_LT(deliberate * 50, samples);  // the documented differences stay exceptions
}

// multifieldqa_zh (qa_f1_zh), dureader and vcsum (rouge_zh) segment with jieba.
TEST(longbench_goldens, gsa_score_equals_eval_py_on_jieba_datasets) {
  REQUIRE_JIEBA();
  int deliberate = 0;
  const int samples = check_files(true, deliberate);
  EXPECT_GT(samples, 60);
  EXPECT_LT(deliberate * 20, samples);
}
