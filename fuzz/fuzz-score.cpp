// Prediction files of `gsa score` (src/eval/longbench-score, src/tools/cmd-score): the input is a whole
// prediction .jsonl (pred, answers, all_classes, length per line), read as one dataset of every metric family
// (qa_f1, rouge, classification, retrieval, count, code_sim); inputs of odd size are read as LongBench-E.
//
// Contract: a bad file is a gsa::error naming it (with the line); a file the loader accepts scores, except a
// classification file whose last all_classes is null (refused, naming the file, as eval.py raises). Scores:
// per sample in [0, 1], the dataset's in [0, 100], a LongBench-E bucket NaN exactly when it is empty; the text
// and JSON reports are written. Anything else is a defect.
#include <cmath>

#include "eval/longbench-score.h"
#include "fuzz-util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gsa;
  const std::string path = fuzz::write_input("pred.jsonl", {reinterpret_cast<const char*>(data), size});
  const bool e = size % 2 == 1;
  for (const char* dataset : {"hotpotqa", "gov_report", "trec", "passage_retrieval_en", "passage_count", "lcc"}) {
    std::vector<eval::prediction_record> preds;
    fuzz::expect_clean(path, [&] { preds = eval::load_predictions(path, dataset, e); });
    if (preds.empty()) continue;
    eval::dataset_score s;
    bool scored = false;
    fuzz::expect_clean(path, [&] {
      s = eval::score_predictions(dataset, preds, e, path);
      scored = true;
    });
    if (!scored) continue;
    if (s.per_sample.size() != preds.size()) fuzz::defect("a score per prediction is missing", dataset);
    for (double x : s.per_sample)
      if (!(x >= 0.0 && x <= 1.0)) fuzz::defect("a sample's score outside [0, 1]", std::to_string(x));
    if (!(s.score >= 0.0 && s.score <= 100.0)) fuzz::defect("a dataset score outside [0, 100]", dataset);
    int64_t in_buckets = 0;
    for (const auto& b : s.buckets) {
      in_buckets += b.n;
      if (b.n == 0 ? !std::isnan(b.score) : !(b.score >= 0.0 && b.score <= 100.0))
        fuzz::defect("a LongBench-E bucket score that is wrong for its size", b.name);
    }
    if (e && in_buckets != s.n) fuzz::defect("LongBench-E buckets do not hold every prediction", dataset);
    try {
      (void)eval::dataset_score_text(s, true, preds);
      (void)eval::dataset_score_json(s, preds);
    } catch (const std::exception& x) {
      fuzz::defect("writing the report threw", x.what());
    }
  }
  return 0;
}
