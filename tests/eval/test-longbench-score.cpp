// gsa score's engine: prediction files scored as LongBench's eval.py scores them. Every expected value is
// derived in the comment beside it from eval.py's rules (longbench-score.h).
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "eval/longbench-score.h"
#include "test-util.h"

using namespace gsa::eval;
namespace fs = std::filesystem;

namespace {

fs::path write_temp(const std::string& name, const std::string& text) {
  fs::path dir = fs::temp_directory_path() / ("gsa-test-score-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  fs::path p = dir / name;
  std::ofstream(p, std::ios::binary) << text;
  return p;
}

std::string line(const std::string& pred, const std::vector<std::string>& answers, const nlohmann::json& classes,
                 int64_t length) {
  return nlohmann::json{{"pred", pred}, {"answers", answers}, {"all_classes", classes}, {"length", length}}.dump() +
         "\n";
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const gsa::error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(longbench_score, rounding_as_python_and_numpy) {
  // Python's round(x, 2) rounds the exact binary value: 0.125 is a tie -> even 0.12; 2.675 is 2.67499... -> 2.67.
  EXPECT_EQ(python_round2(0.125), 0.12);
  EXPECT_EQ(python_round2(0.375), 0.38);
  EXPECT_EQ(python_round2(2.675), 2.67);
  EXPECT_EQ(python_round2(45.675), 45.67);
  // numpy's round is rint(x * 100) / 100: 40.725 * 100 = 4072.5 after the multiplication's rounding, a tie
  // that goes to the even 4072, while Python's exact rounding gives 40.73 (both checked with the interpreters).
  EXPECT_EQ(numpy_round2(40.725), 40.72);
  EXPECT_EQ(python_round2(40.725), 40.73);
  EXPECT_EQ(numpy_round2(98.175), 98.18);
  EXPECT_EQ(python_round2(98.175), 98.17);
}

TEST(longbench_score, numpy_mean_sums_pairwise) {
  // 9 values: numpy adds a[0..7] as ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)), then a8. With
  // a0 = 2^53 and ones: (2^53 + 1 -> 2^53, ties to even) + 2 + 4 = 2^53 + 6, + 1 = 2^53 + 7 -> 2^53 + 8 (even).
  // A left-to-right sum stays at 2^53 (each + 1 rounds away).
  const double big = 9007199254740992.0;
  std::vector<double> a = {big, 1, 1, 1, 1, 1, 1, 1, 1};
  EXPECT_EQ(numpy_mean(a), (big + 8) / 9);
  // Under 8 values the sum is left to right.
  EXPECT_EQ(numpy_mean({big, 1, 1, 1}), big / 4);
  EXPECT_TRUE(std::isnan(numpy_mean({})));
}

TEST(longbench_score, dataset_score_as_eval_py) {
  // hotpotqa (qa_f1). Line 1: exact -> 1. Line 2: best of two answers: "cat sat mat" vs "cat on mat" shares
  // cat, mat: P = R = 2/3, F1 = 2/3. Line 3: nothing shared -> 0. Line 4: no answers -> 0.
  // round(100 * (1 + 2/3) / 4, 2) = round(41.666..., 2) = 41.67.
  auto p = write_temp("hotpotqa.jsonl", line("Paris", {"paris"}, nullptr, 100) +
                                            line("the cat sat mat", {"dog", "cat on mat"}, nullptr, 5000) +
                                            line("London", {"Paris"}, nullptr, 9000) + line("x", {}, nullptr, 10));
  auto preds = load_predictions(p, dataset_from_file_name(p), false);
  ASSERT_EQ(preds.size(), 4u);
  auto s = score_predictions("hotpotqa", preds, false);
  EXPECT_EQ(s.metric, "qa_f1");
  EXPECT_EQ(s.n, 4);
  EXPECT_EQ(s.score, 41.67);
  ASSERT_EQ(s.per_sample.size(), 4u);
  EXPECT_DOUBLE_EQ(s.per_sample[1], 2.0 / 3.0);
  EXPECT_EQ(dataset_score_text(s, false, preds), "hotpotqa (qa_f1): 41.67 over 4 predictions\n");
  const auto j = nlohmann::json::parse(dataset_score_json(s, preds));
  EXPECT_EQ(j["score"].get<double>(), 41.67);
  EXPECT_EQ(j["per_sample"][1]["line"].get<int64_t>(), 2);
  EXPECT_DOUBLE_EQ(j["per_sample"][1]["score"].get<double>(), 2.0 / 3.0);

  // LongBench-E: 0-4k holds lines 1 and 4 (lengths 100, 10): mean (1 + 0) / 2 -> 50.00; 4-8k line 2 -> 66.67;
  // 8k+ line 3 -> 0.00.
  auto e = score_predictions("hotpotqa", load_predictions(p, "hotpotqa", true), true);
  ASSERT_EQ(e.buckets.size(), 3u);
  EXPECT_EQ(e.buckets[0].name, "0-4k");
  EXPECT_EQ(e.buckets[0].n, 2);
  EXPECT_EQ(e.buckets[0].score, 50.0);
  EXPECT_EQ(e.buckets[1].score, 66.67);
  EXPECT_EQ(e.buckets[2].score, 0.0);
  const auto je = nlohmann::json::parse(dataset_score_json(e, preds));
  EXPECT_EQ(je["score"]["4-8k"].get<double>(), 66.67);
  EXPECT_EQ(je["per_sample"][2]["bucket"], "8k+");
  fs::remove(p);
}

TEST(longbench_score, empty_bucket_is_nan_as_numpy) {
  // Every length below 4000: numpy's mean of the empty 4-8k and 8k+ lists is NaN; JSON null, text "nan".
  auto p = write_temp("triviaqa.jsonl", line("\n\nParis\nLondon", {"Paris"}, nullptr, 10));
  auto preds = load_predictions(p, "triviaqa", true);
  auto s = score_predictions("triviaqa", preds, true);
  EXPECT_EQ(s.buckets[0].score, 100.0);  // triviaqa keeps the first line after leading newlines: "Paris"
  EXPECT_TRUE(std::isnan(s.buckets[1].score));
  EXPECT_TRUE(nlohmann::json::parse(dataset_score_json(s, preds))["score"]["8k+"].is_null());
  EXPECT_NE(dataset_score_text(s, false, preds).find("4-8k nan (n 0)"), std::string::npos);
  fs::remove(p);
}

// eval.py buckets any integer length: 2^64 - 1 is 8k+ there. get<int64_t> wrapped it to -1, which put the
// prediction in 0-4k and changed the LongBench-E scores.
TEST(longbench_score, a_length_past_int64_is_in_the_last_bucket) {
  auto p = write_temp("hotpotqa.jsonl", R"({"pred": "Paris", "answers": ["Paris"], "all_classes": null, "length": 18446744073709551615})"
                                        "\n" +
                                            line("Rome", {"Paris"}, nullptr, 10));
  auto preds = load_predictions(p, "hotpotqa", true);
  ASSERT_EQ(preds.size(), 2u);
  EXPECT_EQ(*preds[0].length, std::numeric_limits<int64_t>::max());
  auto s = score_predictions("hotpotqa", preds, true);
  EXPECT_EQ(s.buckets[0].n, 1);  // the line of length 10
  EXPECT_EQ(s.buckets[2].n, 1);
  EXPECT_EQ(s.buckets[2].score, 100.0);
  EXPECT_EQ(s.buckets[0].score, 0.0);
  fs::remove(p);
}

TEST(longbench_score, classification_uses_the_last_lines_classes) {
  // eval.py overwrites all_classes on every line and scores with the last one's: line 1 lists only A and B,
  // but its prediction "C" still counts as the right class C (the last line lists C), score 1; line 2 "A B"
  // names two classes, one right -> 1/2. round(100 * 1.5 / 2, 2) = 75.
  auto p = write_temp("trec.jsonl", line("C", {"C"}, {"A", "B"}, 1) + line("A B", {"B"}, {"A", "B", "C"}, 1));
  auto s = score_predictions("trec", load_predictions(p, "trec", false), false);
  EXPECT_EQ(s.score, 75.0);
  // A null all_classes on the last line: eval.py raises, so do we, naming the line.
  auto q = write_temp("trec.jsonl", line("C", {"C"}, {"A", "C"}, 1) + line("A", {"A"}, nullptr, 1));
  auto preds = load_predictions(q, "trec", false);
  std::string msg = error_of([&] { score_predictions("trec", preds, false, q.string()); });
  EXPECT_NE(msg.find(q.string() + ":2: all_classes is null on the last line"), std::string::npos) << msg;
  fs::remove(q);
}

TEST(longbench_score, bad_files_name_line_and_field) {
  struct bad_case {
    std::string dataset, text, expect;
    bool e = false;
  } cases[] = {
      {"hotpotqa", R"({"answers": ["a"], "all_classes": null})", ":1: missing field 'pred'"},
      {"hotpotqa", R"({"pred": 3, "answers": ["a"], "all_classes": null})", ":1: field 'pred' must be a string"},
      {"hotpotqa", R"({"pred": "a", "answers": "a", "all_classes": null})", "field 'answers' must be an array"},
      {"hotpotqa", R"({"pred": "a", "answers": ["a"]})", ":1: missing field 'all_classes'"},
      {"hotpotqa", R"({"pred": "a", "answers": ["a"], "all_classes": null})", ":1: missing field 'length'", true},
      {"passage_retrieval_en", R"({"pred": "1", "answers": ["first"], "all_classes": null})",
       ":1: answer 'first' names no paragraph"},
      {"hotpotqa", "{\"pred\": \"\xc3\", \"answers\": [], \"all_classes\": null}", ":1: invalid UTF-8 at byte 10"},
      {"hotpotqa", "", "holds no predictions"},
      {"nosuch", R"({"pred": "a", "answers": ["a"], "all_classes": null})", "unknown LongBench dataset 'nosuch'"},
  };
  for (const auto& c : cases) {
    auto p = write_temp("preds.jsonl", c.text + "\n");
    std::string msg = error_of([&] { load_predictions(p, c.dataset, c.e); });
    EXPECT_NE(msg.find(c.expect), std::string::npos) << msg;
    fs::remove(p);
  }
}
