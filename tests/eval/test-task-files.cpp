// The files the generated tasks read, hardened by fuzz/fuzz-qa-tasks.cpp: a QA jsonl (`--qa-jsonl`) and
// haystack text. Each test is an input that target's contract caught: a raw library exception, or a hang.
#include <gtest/gtest.h>

#include <unistd.h>

#include <fstream>

#include "core/error.h"
#include "eval/context-builder.h"
#include "eval/haystack.h"
#include "eval/task-parts.h"
#include "eval/tasks.h"
#include "io/io-test-util.h"

using namespace gsa::eval;
using gsa::test::error_of;

namespace {

task_params qa_params(int64_t length, uint64_t seed) {
  task_params p;
  p.task = "qa";
  p.length_tokens = length;
  p.depth = 0.5;
  p.seed = seed;
  return p;
}

}  // namespace

// "is_supporting": 1 reached nlohmann's value<bool>() and escaped as its raw type_error, naming no file or field.
TEST(TaskFiles, IsSupportingMustBeABooleanAndTheErrorNamesTheLine) {
  const std::string text = "{\"question\": \"q\", \"answers\": [\"a\"], \"context\": \"c\"}\n"
                           "{\"question\": \"q\", \"answers\": [\"a\"], \"passages\": [{\"text\": \"x\", "
                           "\"is_supporting\": 1}, \"y\"]}\n";
  const std::string e = error_of([&] { detail::parse_qa_jsonl(text, "qa.jsonl"); });
  EXPECT_NE(e.find("qa.jsonl:2: field 'is_supporting'"), std::string::npos) << e;
  EXPECT_NE(e.find("true or false"), std::string::npos) << e;
  // true, false and null are accepted; only the marked passage is golden then.
  const auto recs = detail::parse_qa_jsonl(
      "{\"question\": \"q\", \"answers\": [\"a\"], \"passages\": [{\"text\": \"x\", \"is_supporting\": true}, "
      "{\"text\": \"y\", \"is_supporting\": null}, \"z\"]}",
      "qa.jsonl");
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].golden, std::vector<std::string>{"x"});
  EXPECT_EQ(recs[0].others, (std::vector<std::string>{"y", "z"}));
}

// A blank context of one record was a distractor of zero tokens for another: filling the budget with it never
// ended (a hang, memory growing). Blank passages, contexts and answers are refused when the file is read.
TEST(TaskFiles, BlankPassagesAndAnswersAreRefusedNamingTheLine) {
  for (const char* bad : {"{\"question\": \"r\", \"answers\": [\"b\"], \"context\": \"\"}",
                          "{\"question\": \"r\", \"answers\": [\"b\"], \"passages\": [\"gold\", \" \\n \"]}",
                          "{\"question\": \"r\", \"answers\": [\" \"], \"context\": \"c\"}"}) {
    const std::string text = std::string("{\"question\": \"q\", \"answers\": [\"a\"], \"context\": \"gold\"}\n\n") + bad;
    const std::string e = error_of([&] { detail::parse_qa_jsonl(text, "qa.jsonl"); });
    EXPECT_NE(e.find("qa.jsonl:3:"), std::string::npos) << bad << ": " << e;
    EXPECT_NE(e.find("blank"), std::string::npos) << e;
  }
  const std::string e = error_of([] { detail::parse_qa_jsonl("{\"question\": \"\xff\"}", "qa.jsonl"); });
  EXPECT_NE(e.find("qa.jsonl:1: invalid UTF-8 at byte 14"), std::string::npos) << e;
  EXPECT_NE(error_of([] { detail::parse_qa_jsonl("\n \n", "qa.jsonl"); }).find("holds no records"),
            std::string::npos);
}

// The same file through gen_qa (the path `gsa eval --tasks qa --qa-jsonl` takes) refuses it too.
TEST(TaskFiles, GenerateReadsTheFileThroughTheSameChecks) {
  const auto f = std::filesystem::temp_directory_path() / ("gsa-test-qa-blank-" + std::to_string(::getpid()) + ".jsonl");
  {
    std::ofstream out(f);
    out << "{\"question\": \"q\", \"answers\": [\"a\"], \"context\": \"gold\"}\n"
        << "{\"question\": \"r\", \"answers\": [\"b\"], \"context\": \"\"}\n";
  }
  task_params p = qa_params(100, 3);
  p.qa_jsonl = f.string();
  const std::string e = error_of([&] { generate(p, whitespace_counter()); });
  EXPECT_NE(e.find(f.string() + ":2:"), std::string::npos) << e;
  std::filesystem::remove(f);
}

// The context builder's own guard: units that measure zero tokens are costed as one, so the fill ends.
TEST(TaskFiles, UnitsOfZeroTokensStillEndTheFill) {
  size_t calls = 0;
  context_plan plan;
  plan.head = "Head words here.\n\n";
  plan.sep = "\n\n";
  plan.unit = [&calls](size_t i) {
    if (++calls > 1'000'000) throw std::runtime_error("the builder asked for a millionth unit: it would never end");
    return i % 3 == 0 ? std::string(" ") : std::string();
  };
  plan.needles = {"The needle."};
  plan.depths = {0.5};
  const built_context c = build_context(plan, 40, whitespace_counter(), "blank");
  EXPECT_NE(c.context.find("The needle."), std::string::npos);
  EXPECT_LE(c.tokens, 40);
}

// The QA sample from records parsed from text equals the one generate() makes from the same file.
TEST(TaskFiles, QaFromTextEqualsQaFromTheFile) {
  std::string text;
  for (int i = 0; i < 5; i++)
    text += "{\"question\": \"Who built tower " + std::to_string(i) + "?\", \"answers\": [\"Builder " +
            std::to_string(i) + "\"], \"context\": \"Tower " + std::to_string(i) + " was built by Builder " +
            std::to_string(i) + " long ago.\"}\n";
  const auto f = std::filesystem::temp_directory_path() / ("gsa-test-qa-text-" + std::to_string(::getpid()) + ".jsonl");
  {
    std::ofstream out(f);
    out << text;
  }
  task_params p = qa_params(200, 5);
  p.qa_jsonl = f.string();
  const sample a = generate(p, whitespace_counter());
  const sample b = detail::gen_qa_from(detail::parse_qa_jsonl(text, "t"), p, whitespace_counter(), "t");
  EXPECT_EQ(a.context, b.context);
  EXPECT_EQ(a.answers, b.answers);
  std::filesystem::remove(f);
}

// niah over haystack text given directly: the needle is placed, with sentences from the text as filler.
TEST(TaskFiles, NiahOverHaystackText) {
  haystack h;
  h.sentences = haystack_sentences("One fine day.  Two\tbirds sang!  Three trees stood?\nFour.");
  ASSERT_EQ(h.sentences.size(), 4u);
  task_params p;
  p.task = "niah_single";
  p.length_tokens = 80;
  p.seed = 2;
  const sample s = detail::gen_niah_from(h, p, whitespace_counter());
  ASSERT_EQ(s.answers.size(), 1u);
  EXPECT_NE(s.context.find(s.answers[0]), std::string::npos);
  EXPECT_NE(s.context.find("Two birds sang!"), std::string::npos);
}
