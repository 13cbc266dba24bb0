// Chinese word segmentation as jieba 0.42.1 does it in `jieba.cut(text, cut_all=False)` (accurate mode with the
// HMM), the segmentation LongBench's metrics.py applies before scoring its Chinese datasets (qa_f1_zh on
// multifieldqa_zh, ROUGE-L on dureader and vcsum). The algorithm is re-expressed here; its data is jieba's own,
// read at run time from an installed jieba package (Debian's python3-jieba, or a pip install):
//   * dict.txt ("word frequency tag" per line): the prefix dictionary (every word, and each of its prefixes with
//     frequency 0 unless it is a word itself) and the total frequency;
//   * finalseg/prob_start.py, prob_trans.py, prob_emit.py (Python dict literals): the B/M/E/S hidden Markov model
//     that segments runs of characters the dictionary does not join.
// What cut() does, step for step as jieba does it:
//   1. The text splits into blocks of [\u4E00-\u9FD5a-zA-Z0-9+#&._%-] and the rest. The rest splits on "\r\n" and
//      single whitespace characters (Python's \s, str.isspace()); each of those is one token and every other
//      character is a token of its own.
//   2. A block's DAG: from each position, the ends of the dictionary words starting there (frequency > 0), or the
//      position itself. The route maximises sum(log(freq or 1) - log(total)) from the end backwards; on equal
//      scores the longer word wins (Python's max over (score, end) tuples).
//   3. Words of two or more characters are tokens. Consecutive single characters gather in a buffer: one
//      character is a token; a buffer that is a dictionary word splits into characters; any other buffer goes to
//      the HMM: runs of [\u4E00-\u9FD5] are Viterbi-decoded into words (ties broken by the larger state letter,
//      as Python's max over (probability, state) does), the rest splits into [a-zA-Z0-9]+(\.\d+)?%? runs and what
//      lies between them.
// The log and the sums use the same IEEE operations in the same order as Python, so routes and paths are the
// same even where scores are close.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace gsa::eval {

class jieba_segmenter {
 public:
  // Loads jieba's data from a jieba package folder (the one holding dict.txt and finalseg/). Throws gsa::error
  // naming the file and line of anything it cannot read.
  explicit jieba_segmenter(const std::filesystem::path& dir);

  // The segmenter of the jieba package find_jieba_dir() finds, loaded on first use (about a second) and kept.
  // Throws gsa::error saying how to install jieba when there is none.
  static const jieba_segmenter& installed();

  // The tokens of jieba.cut(text, cut_all=False), UTF-8; they concatenate to the text. Invalid UTF-8 bytes
  // count as U+FFFD.
  std::vector<std::string> cut(std::string_view text) const;

 private:
  void cut_block(const std::u32string& block, std::vector<std::u32string>& out) const;  // __cut_DAG
  void cut_hmm(const std::u32string& buf, std::vector<std::u32string>& out) const;      // finalseg.cut
  void viterbi(const std::u32string& han, std::vector<std::u32string>& out) const;      // finalseg.__cut
  int64_t freq_of(const std::u32string& word) const;  // -1 when absent; prefixes hold 0

  std::unordered_map<std::u32string, int64_t> freq_;  // words and their prefixes
  int64_t total_ = 0;
  // States in the order of their letters, so a larger index is Python's larger state: B, E, M, S.
  double start_[4];
  double trans_[4][4];
  std::unordered_map<char32_t, double> emit_[4];
};

// Where jieba's data is: $GSA_JIEBA_DIR when set (a folder holding dict.txt), else the first jieba package of a
// Python install: /usr/lib/python3/dist-packages/jieba (Debian's python3-jieba), then
// /usr/local/lib/python3*/{dist,site}-packages/jieba and ~/.local/lib/python3*/site-packages/jieba (pip). Empty
// when there is none.
std::filesystem::path find_jieba_dir();

}  // namespace gsa::eval
