// The Unicode behaviour LongBench's Python metrics rest on (str.lower, re's \w and \d), checked for every
// code point against what Python itself returned: tests/eval/data/python-unicode.json, written by
// tests/eval/make-python-unicode-goldens.py with only the standard library. Code points that Python's Unicode
// version had not assigned yet are skipped (ICU may know a newer version).
#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "eval/metrics.h"
#include "eval/text-util.h"
#include "test-util.h"

using namespace gsa::eval;

namespace {

const nlohmann::json& goldens() {
  static const nlohmann::json j = [] {
    std::ifstream in(gsa::test::source_dir() / "tests/eval/data/python-unicode.json");
    std::stringstream ss;
    ss << in.rdbuf();
    return nlohmann::json::parse(ss.str());
  }();
  return j;
}

// Whether cp lies in one of the golden's [lo, hi] ranges.
bool in_ranges(const nlohmann::json& ranges, char32_t cp) {
  size_t lo = 0, hi = ranges.size();
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (char32_t(ranges[mid][1].get<uint32_t>()) < cp) lo = mid + 1; else hi = mid;
  }
  return lo < ranges.size() && char32_t(ranges[lo][0].get<uint32_t>()) <= cp;
}

std::string utf8(char32_t cp) {
  std::string s;
  gsa::utf8_append(s, cp);
  return s;
}

// Every assigned code point of the golden's Unicode version, with f(cp) compared by check(cp).
template <class F>
int64_t for_each_assigned(F check) {
  const auto& assigned = goldens()["assigned"];
  int64_t n = 0;
  for (const auto& r : assigned)
    for (uint32_t cp = r[0].get<uint32_t>(); cp <= r[1].get<uint32_t>(); cp++, n++) check(char32_t(cp));
  return n;
}

}  // namespace

TEST(python_unicode, lower_matches_python_for_every_code_point) {
  std::map<char32_t, std::string> lower;
  for (const auto& e : goldens()["lower"]) lower[char32_t(e[0].get<uint32_t>())] = e[1].get<std::string>();
  ASSERT_GT(lower.size(), 1000u);
  int bad = 0;
  const int64_t n = for_each_assigned([&](char32_t cp) {
    auto it = lower.find(cp);
    const std::string want = it == lower.end() ? utf8(cp) : it->second;
    if (py_lower(utf8(cp)) != want && bad++ < 10) ADD_FAILURE() << "U+" << std::hex << uint32_t(cp);
  });
  EXPECT_EQ(bad, 0);
  EXPECT_GT(n, 100000);
  // Multi-character mapping and the final sigma, which only context decides.
  EXPECT_EQ(py_lower("\xc4\xb0"), "i\xcc\x87");                                  // U+0130 -> i U+0307
  EXPECT_EQ(py_lower("\xce\x9f\xce\x94\xce\x9f\xce\xa3"), "\xce\xbf\xce\xb4\xce\xbf\xcf\x82");  // ΟΔΟΣ -> οδος
}

TEST(python_unicode, word_and_decimal_classes_match_python_re) {
  const auto& word = goldens()["word"];
  const auto& decimal = goldens()["decimal"];
  int bad = 0;
  for_each_assigned([&](char32_t cp) {
    if (py_isword(cp) != in_ranges(word, cp) && bad++ < 10) ADD_FAILURE() << "\\w U+" << std::hex << uint32_t(cp);
    if (py_isdecimal(cp) != in_ranges(decimal, cp) && bad++ < 10)
      ADD_FAILURE() << "\\d U+" << std::hex << uint32_t(cp);
  });
  EXPECT_EQ(bad, 0);
}

TEST(python_unicode, normalize_answer_matches_python) {
  // Issue 12's cases among them: "Łazienki" and "Βασκανία" lower in every script; \b around "the€", a
  // combining mark, U+200B; "the①" is one word (① has a numeric value, so it is \w).
  for (const auto& c : goldens()["normalize"])
    EXPECT_EQ(normalize_answer(c[0].get<std::string>()), c[1].get<std::string>()) << c[0].dump();
  // Through the metric: a capitalised Polish or Greek answer now matches its lowercase prediction fully.
  EXPECT_EQ(qa_f1_score("\xc5\x81""azienki", "\xc5\x82""azienki"), 1.0);
  EXPECT_EQ(qa_f1_score("\xce\x92\xce\xb1\xcf\x83\xce\xba\xce\xb1\xce\xbd\xce\xaf\xce\xb1",
                        "\xce\xb2\xce\xb1\xcf\x83\xce\xba\xce\xb1\xce\xbd\xce\xaf\xce\xb1"),
            1.0);
}

TEST(python_unicode, digit_runs_match_python_findall) {
  // count_score = (runs equal to the truth) / (runs): with Python's runs, the truth = the first run scores
  // (how often it occurs) / (how many runs).
  for (const auto& c : goldens()["digit_runs"]) {
    const std::string text = c[0].get<std::string>();
    const auto runs = c[1].get<std::vector<std::string>>();
    ASSERT_FALSE(runs.empty()) << text;
    for (const auto& truth : runs) {
      const double want = double(std::count(runs.begin(), runs.end(), truth)) / double(runs.size());
      EXPECT_DOUBLE_EQ(count_score(text, truth), want) << text << " / " << truth;
      EXPECT_DOUBLE_EQ(retrieval_score(text, "Paragraph " + truth), want) << text << " / " << truth;
    }
  }
  // "\uff13 29" holds two runs; "3" equals neither (Python compares text), "29" one of two.
  EXPECT_EQ(count_score("\xef\xbc\x93 29", "29"), 0.5);
  EXPECT_EQ(count_score("\xef\xbc\x93 29", "3"), 0.0);
}

TEST(python_unicode, invalid_utf8_is_replaced_as_python_decodes) {
  // One U+FFFD per maximal invalid subpart: "e2 80" (a cut euro sign) is one, a surrogate "ed a0 80" three.
  for (const auto& c : goldens()["sanitize"]) {
    const std::string hex = c[0].get<std::string>();
    std::string bytes;
    for (size_t i = 0; i + 1 < hex.size(); i += 2) bytes += char(std::stoi(hex.substr(i, 2), nullptr, 16));
    EXPECT_EQ(utf8_sanitize(bytes), c[1].get<std::string>()) << hex;
    EXPECT_EQ(find_invalid_utf8(utf8_sanitize(bytes)), std::string::npos) << hex;
  }
}
