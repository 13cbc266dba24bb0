// LongBench jsonl loader: good records parse; every bad one is found before anything runs, and its error names
// file, line, _id and the field.
#include <unistd.h>

#include <fstream>

#include "core/error.h"
#include "eval/longbench.h"
#include "test-util.h"

using namespace gsa::eval;
namespace fs = std::filesystem;

namespace {

// A file named `name` in this process's own folder (the name can matter: it may give the dataset).
fs::path write_temp(const std::string& name, const std::string& text) {
  fs::path dir = fs::temp_directory_path() / ("gsa-test-longbench-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  fs::path p = dir / name;
  std::ofstream(p, std::ios::binary) << text;
  return p;
}

std::string error_of(const fs::path& p) {
  try {
    load_longbench(p);
  } catch (const gsa::error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(longbench, loads_records) {
  auto p = write_temp("hotpotqa.jsonl",
                      R"({"input": "Q1?", "context": "C1", "answers": ["a", "b"], "all_classes": null, "length": 12, "dataset": "hotpotqa", "language": "en", "_id": "x1"})"
                      "\n\n"
                      R"({"input": "Q2?", "context": "C2", "answers": ["Entity"], "all_classes": ["Entity", "Location"], "length": 3, "dataset": "trec"})"
                      "\n"
                      R"({"input": "Q3?", "context": "C3", "answers": ["c"], "all_classes": null, "length": 5})"
                      "\n");
  auto recs = load_longbench(p);
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_EQ(recs[0].input, "Q1?");
  EXPECT_EQ(recs[0].context, "C1");
  EXPECT_EQ(recs[0].answers, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(recs[0].all_classes.empty());
  EXPECT_EQ(recs[0].length, 12);
  EXPECT_EQ(recs[0].dataset, "hotpotqa");
  EXPECT_FALSE(recs[0].dataset_from_file_name);
  EXPECT_EQ(recs[0].id, "x1");
  EXPECT_EQ(recs[0].line, 1);
  EXPECT_EQ(recs[1].all_classes, (std::vector<std::string>{"Entity", "Location"}));
  EXPECT_EQ(recs[1].length, 3);
  EXPECT_EQ(recs[1].dataset, "trec");
  EXPECT_EQ(recs[1].line, 3);
  // No "dataset" field: the file's name (before its first '.', as eval.py reads it) gives it, and says so.
  EXPECT_EQ(recs[2].dataset, "hotpotqa");
  EXPECT_TRUE(recs[2].dataset_from_file_name);
  fs::remove(p);
}

TEST(longbench, errors_name_line_and_field) {
  const std::string good =
      R"({"input": "Q", "context": "C", "answers": ["a"], "all_classes": null, "length": 1, "dataset": "hotpotqa"})";
  struct bad_case {
    std::string line, expect;
  } cases[] = {
      {R"({"input": "Q", "context": "C", "all_classes": null, "length": 1})", "missing field 'answers'"},
      {R"({"context": "C", "answers": ["a"], "all_classes": null, "length": 1})", "missing field 'input'"},
      {R"({"input": "Q", "context": "C", "answers": ["a"], "length": 1})", "missing field 'all_classes'"},
      {R"({"input": "Q", "context": "C", "answers": ["a"], "all_classes": null})", "missing field 'length'"},
      {R"({"input": "Q", "context": "C", "answers": "a", "all_classes": null, "length": 1})", "'answers' must be an array"},
      {R"({"input": "Q", "context": "C", "answers": ["a"], "all_classes": null, "length": "1"})", "'length' must be an integer"},
      {R"({"input": "Q", "context": 5, "answers": ["a"], "all_classes": null, "length": 1})", "'context' must be a string"},
      {R"({"input": "Q", "context": "C", "answers": [], "all_classes": null, "length": 1})", "'answers' is empty"},
      {R"({"input": "Q", "context": "C")", "not valid JSON"},
      // get<int64_t> wrapped 2^64 - 1 to -1, so the message named a length the file does not hold.
      {R"({"input": "Q", "context": "C", "answers": ["a"], "all_classes": null, "length": 18446744073709551615})",
       "field 'length' is 18446744073709551615, past 2^63 - 1"},
  };
  for (auto& c : cases) {
    auto p = write_temp("hotpotqa.jsonl", good + "\n" + c.line + "\n");
    std::string msg = error_of(p);
    EXPECT_NE(msg.find(p.string() + ":2"), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << msg;
    fs::remove(p);
  }
  EXPECT_NE(error_of("/nonexistent/lb.jsonl").find("cannot open"), std::string::npos);
}

// Issue 12: each of these used to pass the loader and fail (or silently score 0) in the middle of a run.
TEST(longbench, dataset_checks_run_up_front_with_file_line_and_id) {
  const std::string good =
      R"({"input": "Q", "context": "C", "answers": ["a"], "all_classes": null, "length": 1, "dataset": "hotpotqa", "_id": "ok1"})";
  struct bad_case {
    std::string name, line, expect;
  } cases[] = {
      {"x.jsonl",
       R"({"input": "Q", "context": "", "answers": ["a"], "all_classes": null, "length": 1, "dataset": "hotpotqa", "_id": "e7"})",
       "(_id e7): field 'context' is empty"},
      {"x.jsonl",
       R"({"input": "Q", "context": "C", "answers": ["the third one"], "all_classes": null, "length": 1, "dataset": "passage_retrieval_en", "_id": "r2"})",
       "(_id r2): dataset passage_retrieval_en answer 'the third one' names no paragraph"},
      {"x.jsonl",
       R"({"input": "Q", "context": "C", "answers": ["Entity"], "all_classes": null, "length": 1, "dataset": "trec", "_id": "t9"})",
       "(_id t9): dataset trec is scored by classification, which needs the labels in 'all_classes'"},
      {"x.jsonl",
       R"({"input": "Q", "context": "C", "answers": ["a"], "all_classes": null, "length": 1, "dataset": "dureader_v2", "_id": "z1"})",
       "(_id z1): unknown LongBench dataset 'dureader_v2'"},
      {"x.jsonl",
       R"({"input": "Q", "context": "C", "answers": ["Paragraph 3"], "all_classes": null, "length": 1, "dataset": "passage_retrieval_zh", "_id": "r5"})",
       "(_id r5): dataset passage_retrieval_zh answer 'Paragraph 3' names no paragraph; its answers look like '\u6bb5\u843d12'"},
      {"predictions.jsonl",
       R"({"input": "Q", "context": "C", "answers": ["a"], "all_classes": null, "length": 1, "_id": "m3"})",
       "(_id m3): no 'dataset' field, and the file name 'predictions.jsonl' names no LongBench dataset"},
      {"x.jsonl",
       "{\"input\": \"Q\xff\", \"context\": \"C\", \"answers\": [\"a\"], \"all_classes\": null, \"length\": 1}",
       "invalid UTF-8 at byte 12 of the line (0xFF)"},
      {"x.jsonl",
       R"({"input": "Q", "context": "C", "answers": ["a"], "all_classes": null, "length": -4, "dataset": "hotpotqa"})",
       "field 'length' is -4"},
  };
  for (auto& c : cases) {
    // The bad record is the third of four: the loader still names it before returning anything.
    auto p = write_temp(c.name, good + "\n" + good + "\n" + c.line + "\n" + good + "\n");
    std::string msg = error_of(p);
    EXPECT_NE(msg.find(p.string() + ":3"), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << msg;
    EXPECT_EQ(msg.find("not valid JSON"), std::string::npos) << msg;
    fs::remove(p);
  }
}
