// The files the generated tasks read (src/eval/tasks-qa, haystack): the input is both a QA jsonl
// (`gsa eval --tasks qa --qa-jsonl FILE`) and a haystack text file (`--haystack DIR`, the niah_* filler).
// Parsed records become qa samples at a few lengths and depths and haystack sentences become niah samples,
// with whitespace-separated words as tokens (the context builder's length search runs as with a tokenizer).
//
// Contract: a bad file is a gsa::error naming it ("qa.jsonl:LINE: ..."); a length too small for the needles
// is a gsa::error naming the task. A sample that is made holds its needles, and every score lies in [0, 1].
// Anything else is a defect: another exception, a crash, a leak, a hang.
#include "eval/haystack.h"
#include "eval/task-parts.h"
#include "eval/tasks.h"
#include "fuzz-util.h"

namespace {

using namespace gsa;
using namespace gsa::eval;

void check_scores(const sample& s, const std::vector<std::string>& predictions) {
  for (const std::string& p : predictions) {
    double v = -1;
    try {
      v = score(s, p);
    } catch (const std::exception& e) {
      fuzz::defect("scoring a generated sample threw", e.what());
    }
    if (!(v >= 0.0 && v <= 1.0)) fuzz::defect("a task score outside [0, 1]", p);
  }
}

task_params params(const std::string& task, int64_t length, double depth, uint64_t seed) {
  task_params p;
  p.task = task;
  p.length_tokens = length;
  p.depth = depth;
  p.seed = seed;
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const token_counter count = whitespace_counter();
  const int64_t lengths[] = {40, 64 + int64_t(size % 256)};  // small: many inputs per second

  const std::string source = "qa.jsonl";
  std::vector<detail::qa_record> recs;
  fuzz::expect_clean(source, [&] { recs = detail::parse_qa_jsonl(text, source); });
  if (!recs.empty())
    for (int64_t length : lengths)
      for (double depth : {0.0, 0.5, 1.0}) {
        sample s;
        bool made = false;
        fuzz::expect_clean("qa", [&] {
          s = detail::gen_qa_from(recs, params("qa", length, depth, size), count, source);
          made = true;
        });
        if (!made) continue;
        if (s.answers.empty()) fuzz::defect("a qa sample without answers", s.question);
        check_scores(s, {s.answers[0], s.context.substr(0, 200), "", s.question});
      }

  haystack hay;
  hay.dir = "haystack";
  hay.sentences = haystack_sentences(text);
  if (hay.sentences.empty()) return 0;  // load_haystack refuses a folder without text
  for (const char* task : {"niah_single", "niah_multivalue"})
    for (int64_t length : lengths) {
      sample s;
      bool made = false;
      fuzz::expect_clean(task, [&] {
        s = detail::gen_niah_from(hay, params(task, length, 0.5, size), count);
        made = true;
      });
      if (!made) continue;
      std::string all;
      for (const auto& a : s.answers) {
        if (s.context.find(a) == std::string::npos) fuzz::defect("a niah needle is missing from its context", a);
        all += a + " ";
      }
      check_scores(s, {all, "", s.context.substr(0, 100)});
    }
  return 0;
}
