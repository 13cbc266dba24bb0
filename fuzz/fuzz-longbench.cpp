// Task / LongBench JSON lines (src/eval/longbench, tasks): the input is a whole LongBench-format file, read by
// the loader `gsa eval --jsonl` uses. Its records are then turned into samples and scored with their dataset's
// metric against predictions made from their own fields; every score must lie in [0, 1].
//
// Loading is strict: a refusal must name the file (and the loader adds the line). A record the loader accepts must
// then score: this target found a passage_retrieval_en answer without "Paragraph N" that passed the loader and
// stopped a run at scoring time (issue 12); the loader now checks every record up front, so any exception while
// scoring is a defect.
#include "eval/longbench.h"
#include "eval/tasks.h"
#include "fuzz-util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gsa;
  const std::string path = fuzz::write_input("hotpotqa.jsonl", {reinterpret_cast<const char*>(data), size});
  std::vector<eval::longbench_record> records;
  fuzz::expect_clean(path, [&] { records = eval::load_longbench(path); });
  for (const eval::longbench_record& r : records) {
    std::vector<std::string> predictions = {r.input, r.context.substr(0, 256), ""};
    for (auto& a : r.answers) predictions.push_back(a);
    for (auto& c : r.all_classes) predictions.push_back("\n" + c + "\nmore");
    for (const std::string& p : predictions) {
      double s = 0;
      try {
        s = eval::score(eval::longbench_sample(r), p);
      } catch (const std::exception& e) {
        fuzz::defect("scoring refused a record the loader accepted", e.what());
      }
      if (!(s >= 0.0 && s <= 1.0)) fuzz::defect("a LongBench score outside [0, 1]", p);
    }
  }
  return 0;
}
