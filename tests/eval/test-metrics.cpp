// LongBench metrics on hand-computed cases; each expected value is derived in the comment beside it.
#include <cmath>

#include "core/error.h"
#include "eval/longbench.h"
#include "eval/metrics.h"
#include "test-util.h"

using namespace gsa::eval;

TEST(metrics, normalize_answer) {
  // lower -> "the  quick, brown fox!"; punctuation -> "the  quick brown fox"; "the" -> " "; collapse.
  EXPECT_EQ(normalize_answer("The  Quick, brown fox!"), "quick brown fox");
  // "an" and "a" go; "theater" is not the word "the".
  EXPECT_EQ(normalize_answer("An apple a day; theater"), "apple day theater");
  // Punctuation goes before articles: "a-b" -> "ab" stays a word.
  EXPECT_EQ(normalize_answer("a-b"), "ab");
  EXPECT_EQ(normalize_answer("\tA\n"), "");
  // Latin-1 capitals lower too; "\xc3\x89" is É, "\xc3\xa9" é.
  EXPECT_EQ(normalize_answer("\xc3\x89mile Zola"), "\xc3\xa9mile zola");
}

TEST(metrics, qa_f1) {
  // pred -> [cat sat on mat], gold -> [cat on mat]: 3 shared, P = 3/4, R = 1, F1 = 1.5 / 1.75 = 6/7.
  EXPECT_NEAR(qa_f1_score("the cat sat on the mat", "a cat on a mat"), 6.0 / 7.0, 1e-12);
  // Multiset overlap: min(2, 1) = 1, P = 1/2, R = 1, F1 = 2/3.
  EXPECT_NEAR(qa_f1_score("Paris paris", "Paris."), 2.0 / 3.0, 1e-12);
  EXPECT_EQ(qa_f1_score("London", "Paris"), 0.0);
  EXPECT_EQ(qa_f1_score("", "Paris"), 0.0);
}

TEST(metrics, rouge_l) {
  // One sentence each. LCS of [the cat was on the mat] and [the cat sat on the mat] = "the cat on the mat",
  // distinct words {the, cat, on, mat} = 4; distinct reference words 5, prediction words 5:
  // R = P = 4/5, F = 2 * 0.64 / (1.6 + 1e-8).
  EXPECT_NEAR(rouge_l_score("the cat sat on the mat", "the cat was on the mat"), 2 * 0.64 / (1.6 + 1e-8), 1e-12);
  // Summary level: hyp sentences "a b" | "c d", ref sentences "a c" | "b d". LCS(a c, a b) = {a},
  // LCS(a c, c d) = {c}, LCS(b d, a b) = {b}, LCS(b d, c d) = {d}: union 4 of 4 words, F = 2 / (2 + 1e-8).
  EXPECT_NEAR(rouge_l_score("a b. c d", "a c. b d"), 2.0 / (2.0 + 1e-8), 1e-12);
  // [a b] vs [b a]: LCS length 1, R = P = 1/2, F = 0.5 / (1 + 1e-8).
  EXPECT_NEAR(rouge_l_score("b a", "a b"), 0.5 / (1 + 1e-8), 1e-12);
  // The package raises on an empty hypothesis (LongBench then scores 0); "." splits into empty pieces only.
  EXPECT_EQ(rouge_l_score("", "a b"), 0.0);
  EXPECT_EQ(rouge_l_score(".", "a b"), 0.0);
  EXPECT_EQ(rouge_l_score("x y", "a b"), 0.0);
}

TEST(metrics, classification) {
  std::vector<std::string> trec = {"Abbreviation", "Entity", "Human being", "Location"};
  EXPECT_EQ(classification_score("Entity", "Entity", trec), 1.0);
  // Two classes named, one of them right: 1/2.
  EXPECT_EQ(classification_score("Entity or Location", "Location", trec), 0.5);
  EXPECT_EQ(classification_score("Abbreviation", "Location", trec), 0.0);
  // "cat" is a substring of the ground truth "catalog" and is dropped: [catalog] -> 1.
  EXPECT_EQ(classification_score("catalog", "catalog", {"cat", "catalog"}), 1.0);
  // Python's remove-while-iterating: matches [a1, a12, a123]; "a1" is removed, so the iteration skips
  // "a12" and it stays: [a12, a123] -> 1/2 (a clean filter would give 1).
  EXPECT_EQ(classification_score("a123", "a123", {"a1", "a12", "a123"}), 0.5);
}

TEST(metrics, retrieval_and_count) {
  // Digit runs [12, 3], one equals 12: 1/2.
  EXPECT_EQ(retrieval_score("Paragraph 12 and Paragraph 3", "Paragraph 12"), 0.5);
  EXPECT_EQ(retrieval_score("The answer is paragraph 12", "Paragraph 12"), 1.0);
  EXPECT_EQ(retrieval_score("no idea", "Paragraph 12"), 0.0);
  EXPECT_THROW(retrieval_score("12", "twelve"), gsa::error);
  // [5, 5] -> 1; [3, 5] -> 1/2; "05" is not "5".
  EXPECT_EQ(count_score("There are 5 paragraphs, 5 unique", "5"), 1.0);
  EXPECT_EQ(count_score("3 or 5", "5"), 0.5);
  EXPECT_EQ(count_score("05", "5"), 0.0);
}

TEST(metrics, fuzz_ratio_and_code_sim) {
  // kitten/sitting: LCS "ittn" = 4, indel = 13 - 8 = 5, 100 * 8/13 = 61.5 -> 62 (thefuzz gives 62).
  EXPECT_NEAR(indel_similarity("kitten", "sitting"), 8.0 / 13.0, 1e-12);
  EXPECT_EQ(fuzz_ratio("kitten", "sitting"), 62);
  // thefuzz README: ratio("this is a test", "this is a test!") = 97 (100 * 28/29 = 96.55).
  EXPECT_EQ(fuzz_ratio("this is a test", "this is a test!"), 97);
  // Ties round to even like Python: 1 - 14/16 = 0.125 -> 12.5 -> 12; 1 - 10/16 = 0.375 -> 37.5 -> 38.
  EXPECT_EQ(fuzz_ratio("a", "abbbbbbbbbbbbbb"), 12);
  EXPECT_EQ(fuzz_ratio("aaa", "aaabbbbbbbbbb"), 38);
  EXPECT_EQ(fuzz_ratio("", ""), 100);
  EXPECT_EQ(fuzz_ratio("", "abc"), 0);
  // Code points, not bytes: cafe/café share 3 of 4 + 4, 1 - 2/8 = 0.75.
  EXPECT_EQ(fuzz_ratio("caf\xc3\xa9", "cafe"), 75);
  // Lines with ` or # are skipped; "x = foo(1)" vs "x = foo(2)": LCS 9, 1 - 2/20 = 0.9.
  EXPECT_NEAR(code_sim_score("```python\n# comment\nx = foo(1)\n```", "x = foo(2)"), 0.9, 1e-12);
  // LongBench tests containment: a line with "//" anywhere is skipped too.
  EXPECT_NEAR(code_sim_score("\n\ny = a // b\nx = foo(1)", "x = foo(2)"), 0.9, 1e-12);
  EXPECT_EQ(code_sim_score("# only comments", "abc"), 0.0);
}

TEST(metrics, exact_contains) {
  EXPECT_EQ(exact_match_score("The Answer.", "answer"), 1.0);
  EXPECT_EQ(exact_match_score("an answer here", "answer"), 0.0);
  EXPECT_EQ(contains_score("I think it is 71432.", "71432"), 1.0);
  EXPECT_EQ(contains_score("PARIS", "paris"), 1.0);
  EXPECT_EQ(contains_score("7143", "71432"), 0.0);
}

TEST(metrics, perplexity_bits) {
  // 4 tokens at ln 8 nats each: perplexity 8, 3 bits per token; 12 bits over 6 bytes: 2 bits per byte.
  EXPECT_NEAR(perplexity(4 * std::log(8.0), 4), 8.0, 1e-12);
  EXPECT_NEAR(bits_per_token(4 * std::log(8.0), 4), 3.0, 1e-12);
  EXPECT_NEAR(bits_per_byte(4 * std::log(8.0), 6), 2.0, 1e-12);
  EXPECT_THROW(perplexity(1.0, 0), gsa::error);
  EXPECT_THROW(bits_per_byte(1.0, 0), gsa::error);
}

TEST(metrics, longbench_dataset_scoring) {
  // Max over answers.
  EXPECT_EQ(longbench_score("hotpotqa", "Paris", {"London", "paris"}, {}), 1.0);
  // trec keeps only the first line: "Entity" (the second line names Location too, but is cut).
  std::vector<std::string> trec = {"Entity", "Location"};
  EXPECT_EQ(longbench_score("trec", "\nEntity\nLocation", {"Entity"}, trec), 1.0);
  EXPECT_EQ(longbench_score("passage_retrieval_en", "Paragraph 3", {"Paragraph 3"}, {}), 1.0);
  EXPECT_EQ(longbench_metric("lcc"), "code_sim");
  // Through a sample: score() dispatches a LongBench dataset name to its metric (classification here).
  longbench_record rec;
  rec.dataset = "trec";
  rec.answers = {"Location"};
  rec.all_classes = trec;
  EXPECT_EQ(score(longbench_sample(rec), "Entity or Location"), 0.5);
  EXPECT_EQ(longbench_metric("gov_report"), "rouge");
  try {
    longbench_metric("nosuch");
    FAIL() << "expected an error";
  } catch (const gsa::error& e) {
    EXPECT_NE(std::string(e.what()).find("narrativeqa"), std::string::npos) << e.what();
  }
}
