// LongBench metrics (see metrics.h). Each function mirrors one Python definition; comments note where
// Python semantics (Unicode case and character classes, iteration order, rounding, set counting) decide a
// result.
#include "eval/metrics.h"

#include <algorithm>
#include <cfenv>
#include <cmath>
#include <map>
#include <set>

#include "core/error.h"
#include "eval/text-util.h"

namespace gsa::eval {

namespace {

bool is_ascii_punct(char c) {
  return (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') || (c >= '{' && c <= '~');
}

// Python's re.findall(r"\d+", s): maximal runs of decimal digits of any script ("\uff13" is one), kept as
// text; LongBench compares them as strings, so "\uff13" never equals "3".
std::vector<std::string> digit_runs(std::string_view s) {
  std::vector<std::string> out;
  std::string run;
  for (char32_t c : utf8_decode(s)) {
    if (py_isdecimal(c)) {
      utf8_append(run, c);
    } else if (!run.empty()) {
      out.push_back(std::move(run));
      run.clear();
    }
  }
  if (!run.empty()) out.push_back(std::move(run));
  return out;
}

double fraction_equal(const std::vector<std::string>& numbers, std::string_view target) {
  if (numbers.empty()) return 0.0;
  size_t right = 0;
  for (auto& n : numbers) right += n == target;
  return double(right) / double(numbers.size());
}

// Words of the reference sentence that the `rouge` package's _recon_lcs yields for (ref, hyp): the DP
// table, then a walk from the corner that prefers the diagonal on a match and moves up only when the cell
// above is strictly larger.
void recon_lcs_words(const std::vector<std::string>& x, const std::vector<std::string>& y,
                     std::set<std::string>& out) {
  size_t n = x.size(), m = y.size();
  std::vector<int> t((n + 1) * (m + 1), 0);
  auto at = [&](size_t i, size_t j) -> int& { return t[i * (m + 1) + j]; };
  for (size_t i = 1; i <= n; i++)
    for (size_t j = 1; j <= m; j++)
      at(i, j) = x[i - 1] == y[j - 1] ? at(i - 1, j - 1) + 1 : std::max(at(i - 1, j), at(i, j - 1));
  size_t i = n, j = m;
  while (i > 0 && j > 0) {
    if (x[i - 1] == y[j - 1]) {
      out.insert(x[i - 1]);
      i--, j--;
    } else if (at(i - 1, j) > at(i, j - 1)) {
      i--;
    } else {
      j--;
    }
  }
}

// The package's preprocessing: split on '.', keep non-empty pieces, collapse their whitespace.
std::vector<std::vector<std::string>> rouge_sentences(std::string_view s) {
  std::vector<std::vector<std::string>> out;
  for (auto& piece : split_on(s, "."))
    if (!piece.empty()) out.push_back(split_on(collapse_ws(piece), " "));  // "".split(" ") == [""]
  return out;
}

}  // namespace

std::string normalize_answer(std::string_view s) {
  std::string no_punct;
  no_punct.reserve(s.size());
  for (char c : py_lower(s))
    if (!is_ascii_punct(c)) no_punct += c;  // string.punctuation is ASCII; UTF-8 bytes >= 0x80 never match
  // re.sub(r"\b(a|an|the)\b", " ", ...) replaces exactly the maximal \w runs spelled a, an or the.
  std::u32string cps = utf8_decode(no_punct);
  std::string out;
  size_t i = 0;
  while (i < cps.size()) {
    if (!py_isword(cps[i])) {
      utf8_append(out, cps[i++]);
      continue;
    }
    size_t j = i;
    while (j < cps.size() && py_isword(cps[j])) j++;
    std::u32string word = cps.substr(i, j - i);
    if (word == U"a" || word == U"an" || word == U"the") {
      out += ' ';
    } else {
      for (char32_t c : word) utf8_append(out, c);
    }
    i = j;
  }
  return collapse_ws(out);
}

double token_f1(const std::vector<std::string>& prediction, const std::vector<std::string>& ground_truth) {
  std::map<std::string, int> pred_counts, gold_counts;
  for (auto& t : prediction) pred_counts[t]++;
  for (auto& t : ground_truth) gold_counts[t]++;
  int same = 0;
  for (auto& [tok, n] : pred_counts) {
    auto it = gold_counts.find(tok);
    if (it != gold_counts.end()) same += std::min(n, it->second);
  }
  if (same == 0) return 0.0;
  double precision = double(same) / double(prediction.size());
  double recall = double(same) / double(ground_truth.size());
  return 2 * precision * recall / (precision + recall);
}

double qa_f1_score(std::string_view prediction, std::string_view ground_truth) {
  return token_f1(split_ws(normalize_answer(prediction)), split_ws(normalize_answer(ground_truth)));
}

double rouge_l_score(std::string_view prediction, std::string_view ground_truth) {
  auto hyp = rouge_sentences(prediction);
  auto ref = rouge_sentences(ground_truth);
  if (hyp.empty() || ref.empty()) return 0.0;  // the package raises ValueError; LongBench scores 0
  std::set<std::string> ref_words, hyp_words, lcs_union;
  for (auto& s : ref) ref_words.insert(s.begin(), s.end());
  for (auto& s : hyp) hyp_words.insert(s.begin(), s.end());
  // The per-reference "new words in the union" counts telescope to the size of the final union.
  for (auto& r : ref)
    for (auto& h : hyp) recon_lcs_words(r, h, lcs_union);
  double llcs = double(lcs_union.size());
  double r_lcs = llcs / double(ref_words.size());
  double p_lcs = llcs / double(hyp_words.size());
  return 2.0 * ((p_lcs * r_lcs) / (p_lcs + r_lcs + 1e-8));
}

double classification_score(std::string_view prediction, std::string_view ground_truth,
                            const std::vector<std::string>& all_classes) {
  std::vector<std::string> matches;
  for (auto& c : all_classes)
    if (prediction.find(c) != std::string_view::npos) matches.push_back(c);
  // Python removes from the list it iterates: the element after a removed one is skipped, and
  // list.remove drops the first equal element.
  for (size_t i = 0; i < matches.size(); i++) {
    const std::string term = matches[i];
    if (ground_truth.find(term) != std::string_view::npos && term != ground_truth) {
      for (size_t k = 0; k < matches.size(); k++)
        if (matches[k] == term) {
          matches.erase(matches.begin() + long(k));
          break;
        }
    }
  }
  for (auto& m : matches)
    if (m == ground_truth) return 1.0 / double(matches.size());
  return 0.0;
}

namespace {

// re.findall(KEY + r'(\d+)', ground_truth)[0]: the first KEY followed by a digit run.
std::string first_id_after(std::string_view ground_truth, std::string_view key) {
  size_t pos = 0;
  while ((pos = ground_truth.find(key, pos)) != std::string_view::npos) {
    pos += key.size();
    auto runs = digit_runs(ground_truth.substr(pos));
    if (!runs.empty() && ground_truth.substr(pos, runs[0].size()) == runs[0]) return runs[0];
  }
  return {};
}

constexpr std::string_view k_paragraph_zh = "\u6bb5\u843d";  // metrics.py's r'段落(\d+)'

}  // namespace

std::string paragraph_id(std::string_view ground_truth) { return first_id_after(ground_truth, "Paragraph "); }

std::string paragraph_id_zh(std::string_view ground_truth) { return first_id_after(ground_truth, k_paragraph_zh); }

double retrieval_score(std::string_view prediction, std::string_view ground_truth) {
  const std::string id = paragraph_id(ground_truth);
  if (id.empty())
    fail("retrieval_score: the ground truth '{}' names no 'Paragraph N'; retrieval answers look like "
         "'Paragraph 12'",
         ground_truth);
  return fraction_equal(digit_runs(prediction), id);
}

double retrieval_zh_score(std::string_view prediction, std::string_view ground_truth) {
  const std::string id = paragraph_id_zh(ground_truth);
  if (id.empty())
    fail("retrieval_zh_score: the ground truth '{}' names no '{}N'; passage_retrieval_zh answers look like "
         "'{}12'",
         ground_truth, k_paragraph_zh, k_paragraph_zh);
  return fraction_equal(digit_runs(prediction), id);
}

double count_score(std::string_view prediction, std::string_view ground_truth) {
  return fraction_equal(digit_runs(prediction), ground_truth);
}

double indel_similarity(std::string_view a, std::string_view b) {
  std::u32string x = utf8_decode(a), y = utf8_decode(b);
  size_t total = x.size() + y.size();
  if (total == 0) return 1.0;
  std::vector<int> prev(y.size() + 1, 0), cur(y.size() + 1, 0);
  for (size_t i = 1; i <= x.size(); i++) {
    for (size_t j = 1; j <= y.size(); j++)
      cur[j] = x[i - 1] == y[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    std::swap(prev, cur);
  }
  double lcs = prev[y.size()];
  double indel = double(total) - 2 * lcs;
  return 1.0 - indel / double(total);
}

int fuzz_ratio(std::string_view a, std::string_view b) {
  // Python's round() on the float: ties go to the even integer, which nearbyint does in the default mode.
  int saved = std::fegetround();
  std::fesetround(FE_TONEAREST);
  int r = int(std::nearbyint(100.0 * indel_similarity(a, b)));
  std::fesetround(saved);
  return r;
}

double code_sim_score(std::string_view prediction, std::string_view ground_truth) {
  size_t first = prediction.find_first_not_of('\n');
  std::string_view rest = first == std::string_view::npos ? std::string_view{} : prediction.substr(first);
  std::string chosen;
  for (auto& line : split_on(rest, "\n")) {
    if (line.find('`') == std::string::npos && line.find('#') == std::string::npos &&
        line.find("//") == std::string::npos) {
      chosen = line;
      break;
    }
  }
  return fuzz_ratio(chosen, ground_truth) / 100.0;
}

double exact_match_score(std::string_view prediction, std::string_view ground_truth) {
  return normalize_answer(prediction) == normalize_answer(ground_truth) ? 1.0 : 0.0;
}

double contains_score(std::string_view prediction, std::string_view ground_truth) {
  return py_lower(prediction).find(py_lower(ground_truth)) != std::string::npos ? 1.0 : 0.0;
}

double perplexity(double sum_nats, int64_t n_tokens) {
  if (n_tokens <= 0) fail("perplexity: {} tokens scored; score at least one token", n_tokens);
  return std::exp(sum_nats / double(n_tokens));
}

double bits_per_token(double sum_nats, int64_t n_tokens) {
  if (n_tokens <= 0) fail("bits_per_token: {} tokens scored; score at least one token", n_tokens);
  return sum_nats / double(n_tokens) / std::log(2.0);
}

double bits_per_byte(double sum_nats, int64_t n_bytes) {
  if (n_bytes <= 0) fail("bits_per_byte: the scored text has {} bytes; it needs at least one", n_bytes);
  return sum_nats / double(n_bytes) / std::log(2.0);
}

interval wilson_interval(double p, int64_t n, double z) {
  if (!(p >= 0 && p <= 1)) fail("wilson_interval: the proportion {} is outside [0, 1]", p);
  if (!(z >= 0)) fail("wilson_interval: the quantile {} must be >= 0", z);
  if (n <= 0) return {};
  const double nn = double(n), z2 = z * z;
  const double centre = (p + z2 / (2 * nn)) / (1 + z2 / nn);
  const double half = z / (1 + z2 / nn) * std::sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn));
  return {std::max(0.0, centre - half), std::min(1.0, centre + half)};
}

}  // namespace gsa::eval
