// The jieba port (eval/jieba.h) on a toy model written here, so these run without jieba installed: the route
// through the dictionary, its tie rule, the buffer of single characters and the HMM, the splitting outside the
// blocks, and the errors for a broken install. Expected tokens are derived by hand beside each case.
// test-longbench-goldens compares the port with jieba itself on real text.
#include <unistd.h>

#include <fstream>
#include <functional>

#include "core/error.h"
#include "eval/jieba.h"
#include "eval/metrics.h"
#include "test-util.h"

using namespace gsa::eval;
namespace fs = std::filesystem;

namespace {

using tokens = std::vector<std::string>;

// dict.txt: total frequency 354. The model: B emits 中, E emits 文, S emits 的 (log probabilities -1, -1, -0.5);
// every other emission is impossible (MIN_FLOAT).
fs::path toy_jieba(const std::string& dict = "北京 100 ns\n大学 80 n\n北京大学 50 nt\n学生 60 n\n大学生 40 n\n"
                                             "甲 5 n\n甲乙 7 n\n丙 5 n\n乙丙 7 n\n") {
  fs::path dir = fs::temp_directory_path() / ("gsa-test-jieba-" + std::to_string(::getpid()));
  fs::create_directories(dir / "finalseg");
  std::ofstream(dir / "dict.txt", std::ios::binary) << dict;
  std::ofstream(dir / "finalseg/prob_start.py") << "P={'B': -0.5,\n 'E': -3.14e+100,\n 'M': -3.14e+100,\n 'S': -1.0}\n";
  std::ofstream(dir / "finalseg/prob_trans.py")
      << "P={'B': {'E': -0.5, 'M': -1.0},\n 'E': {'B': -0.6, 'S': -0.8},\n 'M': {'E': -0.3, 'M': -1.2},\n"
         " 'S': {'B': -0.7, 'S': -0.6}}\n";
  std::ofstream(dir / "finalseg/prob_emit.py")
      << "from __future__ import unicode_literals\n\nP={'B': {'\\u4e2d': -1.0},\n 'E': {'\\u6587': -1.0},\n"
         " 'M': {},\n 'S': {'\\u7684': -0.5}}\n";
  return dir;
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

TEST(jieba, route_through_the_dictionary) {
  const fs::path dir = toy_jieba();
  const jieba_segmenter seg(dir);
  // From 北: 北京 (100) or 北京大学 (50). 北京|大学生 scores log(100/354) + log(40/354); 北京大学|生 scores
  // log(50/354) + log(1/354) (生 is no word: frequency "or 1"); 北京|大学|生 has a third factor 1/354.
  EXPECT_EQ(seg.cut("北京大学生"), (tokens{"北京", "大学生"}));
  // But 北京大学 alone (50/354) beats 北京|大学 (100 * 80 / 354^2).
  EXPECT_EQ(seg.cut("北京大学"), (tokens{"北京大学"}));
  // 甲|乙丙 sums (log 5 - log 354) + (log 7 - log 354), 甲乙|丙 the same two terms the other way round: an exact
  // tie, which Python's max over (score, end) gives to the larger end: 甲乙, then 丙.
  EXPECT_EQ(seg.cut("甲乙丙"), (tokens{"甲乙", "丙"}));
  fs::remove_all(dir);
}

TEST(jieba, single_characters_go_to_the_hmm) {
  const fs::path dir = toy_jieba();
  const jieba_segmenter seg(dir);
  // 中文的: no dictionary word, so three single steps gather in the buffer, which is not a word: Viterbi. B on 中
  // (-0.5 - 1), E on 文 from B (-1.5 - 0.5 - 1 = -3), S on 的 from E (-3 - 0.8 - 0.5 = -4.3); the last state is
  // S: 中文 | 的.
  EXPECT_EQ(seg.cut("中文的"), (tokens{"中文", "的"}));
  // Outside [\u4E00-\u9FD5] the buffer splits on [a-zA-Z0-9]+(\.\d+)?%?: "ab", then "12.5%" and 的 (alone: S).
  // The space is no block character: a token of its own, as is the comma; "\r\n" is one token.
  EXPECT_EQ(seg.cut("ab 12.5%的"), (tokens{"ab", " ", "12.5%", "的"}));
  EXPECT_EQ(seg.cut("北京，\r\n大学\u3000x"), (tokens{"北京", "，", "\r\n", "大学", "\u3000", "x"}));
  EXPECT_EQ(seg.cut("v1.2.3"), (tokens{"v1.2", ".", "3"}));
  EXPECT_EQ(seg.cut(""), tokens{});
  fs::remove_all(dir);
}

TEST(jieba, broken_installs_name_the_file) {
  const fs::path dir = toy_jieba("北京 100 ns\n大学 x n\n");
  std::string msg = error_of([&] { jieba_segmenter seg(dir); });
  EXPECT_NE(msg.find("dict.txt:2: invalid dictionary entry '大学 x n'"), std::string::npos) << msg;
  std::ofstream(dir / "dict.txt") << "北京 100 ns\n";
  std::ofstream(dir / "finalseg/prob_trans.py") << "P={'B': {'E': oops}}\n";
  msg = error_of([&] { jieba_segmenter seg(dir); });
  EXPECT_NE(msg.find("prob_trans.py: cannot read jieba's model"), std::string::npos) << msg;
  fs::remove_all(dir / "finalseg");
  msg = error_of([&] { jieba_segmenter seg(dir); });
  EXPECT_NE(msg.find("prob_start.py"), std::string::npos) << msg;
  fs::remove_all(dir);
  msg = error_of([&] { jieba_segmenter seg(dir); });
  EXPECT_NE(msg.find("cannot open jieba's dictionary"), std::string::npos) << msg;
}

TEST(metrics_zh, normalize_and_score_on_jieba_tokens) {
  // str.lower(), then string.punctuation and metrics.py's Chinese punctuation go ("》" is in its list, "《" is not),
  // then every whitespace character.
  EXPECT_EQ(normalize_zh_answer("《北京》\u3000ＡＢ, x"), "《北京ａｂx");
  const fs::path dir = toy_jieba();
  const jieba_segmenter seg(dir);
  // Tokens 北京 大学生 。 -> 北京 大学生 (。 normalises to nothing); 北京 的 大学生: two shared, P = 1, R = 2/3,
  // F1 = 0.8.
  EXPECT_DOUBLE_EQ(qa_f1_zh_score("北京大学生。", "北京的大学生", seg), 0.8);
  EXPECT_DOUBLE_EQ(qa_f1_zh_score("，", "北京", seg), 0.0);
  // ROUGE-L on the tokens joined by spaces: "北京 大学生" against itself.
  EXPECT_NEAR(rouge_zh_score("北京大学生", "北京大学生", seg), 1.0, 1e-7);
  fs::remove_all(dir);
  // retrieval_zh: the id after the first 段落 followed by digits; the prediction's digit runs that equal it.
  EXPECT_EQ(paragraph_id_zh("答案是段落 3，不对，段落12"), "12");
  EXPECT_DOUBLE_EQ(retrieval_zh_score("段落12和段落3", "段落12"), 0.5);
  EXPECT_THROW(retrieval_zh_score("12", "Paragraph 12"), gsa::error);
}
