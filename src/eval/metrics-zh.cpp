// LongBench's Chinese metrics (see metrics.h): qa_f1_zh_score and rouge_zh_score on jieba's tokens.
#include <algorithm>

#include "eval/jieba.h"
#include "eval/metrics.h"
#include "eval/text-util.h"

namespace gsa::eval {

namespace {

// metrics.py's normalize_zh_answer drops set(string.punctuation + cn_punctuation); cn_punctuation is these 75
// characters (its "." is ASCII and in string.punctuation too).
constexpr std::u32string_view k_cn_punctuation =
    U"\uFF01\uFF1F\uFF61\u3002\uFF02\uFF03\uFF04\uFF05\uFF06\uFF07\uFF08\uFF09\uFF0A\uFF0B\uFF0C\uFF0D\uFF0F\uFF1A"
    U"\uFF1B\uFF1C\uFF1D\uFF1E\uFF20\uFF3B\uFF3C\uFF3D\uFF3E\uFF3F\uFF40\uFF5B\uFF5C\uFF5D\uFF5E\uFF5F\uFF60\uFF62"
    U"\uFF63\uFF64\u3001\u3003\u300B\u300C\u300D\u300E\u300F\u3010\u3011\u3014\u3015\u3016\u3017\u3018\u3019\u301A"
    U"\u301B\u301C\u301D\u301E\u301F\u3030\u303E\u303F\u2013\u2014\u2018\u2019\u201B\u201C\u201D\u201E\u201F\u2026"
    U"\u2027\uFE4F.";

bool is_zh_punctuation(char32_t c) {
  const bool ascii_punct = c < 0x80 && ((c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') ||
                                        (c >= '{' && c <= '~'));
  return ascii_punct || k_cn_punctuation.find(c) != std::u32string_view::npos;
}

}  // namespace

std::string normalize_zh_answer(std::string_view s) {
  std::string out;
  for (char32_t c : utf8_decode(py_lower(s)))
    if (!is_zh_punctuation(c) && !py_isspace(c)) utf8_append(out, c);
  return out;
}

double qa_f1_zh_score(std::string_view prediction, std::string_view ground_truth, const jieba_segmenter& jieba) {
  auto tokens = [&](std::string_view s) {
    std::vector<std::string> out;
    for (const auto& t : jieba.cut(s))
      if (std::string n = normalize_zh_answer(t); !n.empty()) out.push_back(std::move(n));
    return out;
  };
  return token_f1(tokens(prediction), tokens(ground_truth));
}

double rouge_zh_score(std::string_view prediction, std::string_view ground_truth, const jieba_segmenter& jieba) {
  return rouge_l_score(join(jieba.cut(prediction), " "), join(jieba.cut(ground_truth), " "));
}

}  // namespace gsa::eval
