// Answer metrics with LongBench's definitions (THUDM/LongBench metrics.py), plus
// exact / contains match and the perplexity helpers. All scores are in [0, 1]; callers that report
// LongBench numbers multiply the mean by 100 as its eval.py does. Strings are UTF-8; where LongBench's
// Python counts characters (code similarity) these count code points.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace gsa::eval {

class jieba_segmenter;

// SQuAD/LongBench normalize_answer: lowercase as Python's str.lower() does (every script, full mappings,
// final sigma), drop string.punctuation (ASCII), drop the words a/an/the where Python's Unicode \b bounds
// them (re.sub(r"\b(a|an|the)\b", " ", ...) with \w = str.isalnum() or '_'), collapse whitespace.
// "\u0141azienki" -> "\u0142azienki"; "the\u20ac cat" -> "\u20ac cat"; "the\u2460 cat" keeps "the\u2460".
std::string normalize_answer(std::string_view s);

// Token F1 of two token lists with multiset overlap (LongBench f1_score); 0 when nothing overlaps.
double token_f1(const std::vector<std::string>& prediction, const std::vector<std::string>& ground_truth);
// qa_f1_score: token_f1 of the whitespace tokens of the normalised strings.
double qa_f1_score(std::string_view prediction, std::string_view ground_truth);

// rouge_score: ROUGE-L F (summary level) as the `rouge` package (pltrdy, 1.0.x, exclusive=True) computes it
// from Rouge().get_scores(prediction, ground_truth): sentences split on '.', words split on ' ', the union
// LCS counted over distinct words. 0 where the package raises ValueError (an empty prediction or reference).
// One deliberate difference: the package walks the LCS table back recursively, one Python frame per step, so
// a reference sentence and a prediction sentence of together more than about 1000 words exceed Python's
// default recursion limit; LongBench's rouge_score catches that RecursionError and returns 0.0. Here such
// inputs keep their true ROUGE-L (docs/longbench.md).
double rouge_l_score(std::string_view prediction, std::string_view ground_truth);

// classification_score: the classes that occur in the prediction, minus those that are a substring of a
// different ground truth (with Python's skip-after-remove iteration); 1/len(matches) if the ground truth
// is among them, else 0.
double classification_score(std::string_view prediction, std::string_view ground_truth,
                            const std::vector<std::string>& all_classes);

// retrieval_score: the id N of the first "Paragraph N" in the ground truth; the fraction of digit runs in
// the prediction equal to it. Throws gsa::error if the ground truth names no paragraph (LongBench raises).
// Digit runs are Python's \d+ over str: decimal digits of every script ("\uff13 29" holds two runs), compared
// as text, so a fullwidth "\uff13" is a wrong "3".
double retrieval_score(std::string_view prediction, std::string_view ground_truth);
// The N of retrieval_score's first "Paragraph N" in a ground truth, as text; empty when there is none.
std::string paragraph_id(std::string_view ground_truth);
// count_score: the fraction of digit runs (as above) in the prediction equal to the ground truth.
double count_score(std::string_view prediction, std::string_view ground_truth);

// The Chinese variants (metrics-zh.cpp). They segment with jieba as metrics.py does (eval/jieba.h); the
// segmenter is a parameter so that callers load jieba's data once (jieba_segmenter::installed()).
// normalize_zh_answer: str.lower(), then drop string.punctuation and metrics.py's Chinese punctuation (75
// characters, "\u300b" but not "\u300a" among them), then every whitespace character ("".join(s.split())).
std::string normalize_zh_answer(std::string_view s);
// qa_f1_zh_score: token F1 over the jieba tokens of each string, each normalised, the empty ones dropped.
double qa_f1_zh_score(std::string_view prediction, std::string_view ground_truth, const jieba_segmenter& jieba);
// rouge_zh_score: rouge_l_score of the jieba tokens joined with spaces.
double rouge_zh_score(std::string_view prediction, std::string_view ground_truth, const jieba_segmenter& jieba);
// retrieval_zh_score: as retrieval_score with the ground truth's first "\u6bb5\u843dN" ("paragraph N").
double retrieval_zh_score(std::string_view prediction, std::string_view ground_truth);
// The N of the first "\u6bb5\u843dN" in a ground truth, as text; empty when there is none.
std::string paragraph_id_zh(std::string_view ground_truth);

// Indel-normalised similarity 1 - indel(a, b) / (|a| + |b|) over code points (1 for two empty strings);
// indel distance = |a| + |b| - 2 LCS(a, b). This is python-Levenshtein's Levenshtein.ratio (>= 0.20, through
// rapidfuzz) and rapidfuzz's fuzz.ratio / 100. python-Levenshtein 0.12 divided (|a| + |b| - indel) by |a| + |b|
// instead, a double that can lie on the other side of an exact half (lengths 80 and distance 46: 42.5 there,
// 42.50000000000001 here), so its fuzz.ratio rounds to a different integer on such pairs (docs/longbench.md).
double indel_similarity(std::string_view a, std::string_view b);
// fuzz.ratio as LongBench's `fuzzywuzzy` computes it when python-Levenshtein is installed (the
// fuzzywuzzy[speedup] install; thefuzz, its successor, always does): 100 for equal strings, 0 when either is
// empty, else round(100 * indel_similarity) with Python's round-half-to-even. A bare `pip install fuzzywuzzy`
// falls back to difflib.SequenceMatcher (Ratcliff/Obershelp matching blocks), which can score differently.
int fuzz_ratio(std::string_view a, std::string_view b);
// code_sim_score: the first line of the prediction (after leading newlines) that contains none of
// '`', '#', "//" (LongBench tests containment, not the line start), compared by fuzz_ratio / 100.
double code_sim_score(std::string_view prediction, std::string_view ground_truth);

// Exact match after normalize_answer (SQuAD EM).
double exact_match_score(std::string_view prediction, std::string_view ground_truth);
// 1 if the ground truth occurs in the prediction after both are lowercased as str.lower() does (RULER's
// string match).
double contains_score(std::string_view prediction, std::string_view ground_truth);

// Held-out text: exp(nats / tokens), nats / tokens / ln 2, and nats / bytes / ln 2. The sum of nats is the
// summed negative log-likelihood of the predicted tokens; bytes are the UTF-8 bytes of the text they cover.
// Throw gsa::error on a count <= 0.
double perplexity(double sum_nats, int64_t n_tokens);
double bits_per_token(double sum_nats, int64_t n_tokens);
double bits_per_byte(double sum_nats, int64_t n_bytes);

// The Wilson score interval of a proportion p (successes / n) at the normal quantile z (1.96: 95%): the interval
// for a cell's accuracy that stays inside [0, 1] and is not empty at p = 0 or 1 (where p +- z sqrt(p (1 - p) / n)
// collapses to a point). For a mean of scores in [0, 1] that are not all 0 or 1 it is an approximation. n <= 0:
// [0, 1]. Throws gsa::error for p outside [0, 1] or z < 0.
struct interval {
  double low = 0, high = 1;
};
interval wilson_interval(double p, int64_t n, double z = 1.959963984540054);

}  // namespace gsa::eval
