// LongBench jsonl loader: good records parse, bad ones name file:line and the field.
#include <unistd.h>

#include <fstream>

#include "core/error.h"
#include "eval/longbench.h"
#include "test-util.h"

using namespace gsa::eval;
namespace fs = std::filesystem;

namespace {

fs::path write_temp(const std::string& name, const std::string& text) {
  fs::path p = fs::temp_directory_path() / ("gsa-test-eval-" + std::to_string(::getpid()) + "-" + name);
  std::ofstream(p) << text;
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
  auto p = write_temp("ok.jsonl",
                      R"({"input": "Q1?", "context": "C1", "answers": ["a", "b"], "all_classes": null, "length": 12, "dataset": "hotpotqa", "language": "en", "_id": "x1"})"
                      "\n\n"
                      R"({"input": "Q2?", "context": "C2", "answers": ["Entity"], "all_classes": ["Entity", "Location"], "length": 3})"
                      "\n");
  auto recs = load_longbench(p);
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[0].input, "Q1?");
  EXPECT_EQ(recs[0].context, "C1");
  EXPECT_EQ(recs[0].answers, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(recs[0].all_classes.empty());
  EXPECT_EQ(recs[0].length, 12);
  EXPECT_EQ(recs[0].dataset, "hotpotqa");
  EXPECT_EQ(recs[0].id, "x1");
  EXPECT_EQ(recs[1].all_classes, (std::vector<std::string>{"Entity", "Location"}));
  EXPECT_EQ(recs[1].length, 3);
  fs::remove(p);
}

TEST(longbench, errors_name_line_and_field) {
  const std::string good = R"({"input": "Q", "context": "C", "answers": ["a"], "all_classes": null, "length": 1})";
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
  };
  for (auto& c : cases) {
    auto p = write_temp("bad.jsonl", good + "\n" + c.line + "\n");
    std::string msg = error_of(p);
    EXPECT_NE(msg.find(p.string() + ":2:"), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << msg;
    fs::remove(p);
  }
  EXPECT_NE(error_of("/nonexistent/lb.jsonl").find("cannot open"), std::string::npos);
}
