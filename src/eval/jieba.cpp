// jieba's accurate-mode segmentation (see jieba.h). Each function names the jieba 0.42.1 function it follows.
#include "eval/jieba.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>

#include "core/error.h"
#include "eval/text-util.h"

namespace gsa::eval {

namespace fs = std::filesystem;

namespace {

constexpr double k_min_float = -3.14e100;  // finalseg's MIN_FLOAT: an impossible emission or transition
constexpr char k_states[] = "BEMS";       // index order = Python's order of the state letters
// finalseg's PrevStatus: the states a state can follow (B after E or S, E after B or M, M after B or M, S after
// E or S).
constexpr int k_prev[4][2] = {{1, 3}, {0, 2}, {2, 0}, {3, 1}};

int state_index(char32_t c) {
  for (int i = 0; i < 4; i++)
    if (c == char32_t(k_states[i])) return i;
  return -1;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) fail("cannot read jieba's data file '{}'; is the jieba package complete?", p.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The Python dict literal `P={...}` of finalseg's prob_*.py files: nested dicts with quoted string keys and float
// values. `leaf` receives each float with the keys that lead to it.
class py_dict_reader {
 public:
  py_dict_reader(std::string text, std::string file) : s_(std::move(text)), file_(std::move(file)) {}

  void read(const std::function<void(const std::vector<std::u32string>&, double)>& leaf) {
    size_t p = s_.find("P=");
    if (p == std::string::npos) bad("no 'P=' assignment");
    i_ = p + 2;
    std::vector<std::u32string> keys;
    value(keys, leaf);
  }

 private:
  [[noreturn]] void bad(std::string_view what) const {
    fail("{}: cannot read jieba's model ({} at byte {}); reinstall the jieba package", file_, what, i_);
  }
  void skip() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) i_++;
  }
  uint32_t hex(size_t n) {
    if (i_ + n > s_.size()) bad("a truncated escape");
    const std::string h = s_.substr(i_, n);
    char* end = nullptr;
    const unsigned long v = std::strtoul(h.c_str(), &end, 16);
    if (end != h.c_str() + n) bad("a bad escape");
    i_ += n;
    return uint32_t(v);
  }
  std::u32string key() {
    skip();
    if (i_ >= s_.size() || (s_[i_] != '\'' && s_[i_] != '"')) bad("a key that is not a string");
    const char quote = s_[i_++];
    std::string utf8;
    while (i_ < s_.size() && s_[i_] != quote) {
      if (s_[i_] != '\\') {
        utf8 += s_[i_++];
        continue;
      }
      if (++i_ >= s_.size()) bad("a truncated escape");
      const char e = s_[i_++];
      if (e == 'u') utf8_append(utf8, hex(4));
      else if (e == 'U') utf8_append(utf8, hex(8));
      else if (e == 'x') utf8_append(utf8, hex(2));
      else if (e == 'n') utf8 += '\n';
      else if (e == 't') utf8 += '\t';
      else utf8 += e;  // \\, \', \"
    }
    if (i_ >= s_.size()) bad("an unterminated string");
    i_++;
    return utf8_decode(utf8);
  }
  void value(std::vector<std::u32string>& keys,
             const std::function<void(const std::vector<std::u32string>&, double)>& leaf) {
    skip();
    if (i_ < s_.size() && s_[i_] == '{') {
      i_++;
      for (;;) {
        skip();
        if (i_ < s_.size() && s_[i_] == '}') break;
        keys.push_back(key());
        skip();
        if (i_ >= s_.size() || s_[i_] != ':') bad("a missing ':'");
        i_++;
        value(keys, leaf);
        keys.pop_back();
        skip();
        if (i_ < s_.size() && s_[i_] == ',') i_++;
        else if (i_ >= s_.size() || s_[i_] != '}') bad("a missing ',' or '}'");
      }
      i_++;
      return;
    }
    const char* begin = s_.c_str() + i_;
    char* end = nullptr;
    const double v = std::strtod(begin, &end);
    if (end == begin) bad("a value that is neither a number nor a dict");
    i_ += size_t(end - begin);
    leaf(keys, v);
  }

  std::string s_, file_;
  size_t i_ = 0;
};

// re_han_default of jieba/__init__.py: the characters cut_block handles.
bool is_block_char(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FD5) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '+' || c == '#' || c == '&' || c == '.' || c == '_' || c == '%' || c == '-';
}
bool is_han(char32_t c) { return c >= 0x4E00 && c <= 0x9FD5; }  // finalseg's re_han
bool is_ascii_alnum(char32_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

std::string to_utf8(const std::u32string& s) {
  std::string out;
  for (char32_t c : s) utf8_append(out, c);
  return out;
}

}  // namespace

jieba_segmenter::jieba_segmenter(const fs::path& dir) {
  // Tokenizer.gen_pfdict: every line "word freq [tag]"; the total counts every line, a repeated word keeps its
  // last frequency, and each prefix of a word that is not yet in the dictionary enters with 0.
  const fs::path dict = dir / "dict.txt";
  std::ifstream in(dict, std::ios::binary);
  if (!in) fail("cannot open jieba's dictionary '{}'; point GSA_JIEBA_DIR at the jieba package folder", dict.string());
  freq_.reserve(600000);
  std::string line;
  for (int64_t n = 1; std::getline(in, line); n++) {
    const std::string_view t = strip_ws(line);
    const size_t sp = t.find(' ');
    const std::string_view word = t.substr(0, sp), num = sp == std::string_view::npos ? "" : t.substr(sp + 1);
    const std::string_view f = num.substr(0, num.find(' '));
    char* end = nullptr;
    const std::string fs(f);
    const long long v = std::strtoll(fs.c_str(), &end, 10);
    if (word.empty() || fs.empty() || end != fs.c_str() + fs.size() || v < 0)
      fail("{}:{}: invalid dictionary entry '{}' (expected 'word frequency [tag]')", dict.string(), n, t);
    const std::u32string w = utf8_decode(word);
    freq_[w] = v;
    total_ += v;
    for (size_t k = 1; k < w.size(); k++) freq_.try_emplace(w.substr(0, k), 0);
  }
  if (total_ <= 0) fail("jieba's dictionary '{}' holds no words", dict.string());

  for (auto& row : trans_)
    for (double& x : row) x = k_min_float;
  for (double& x : start_) x = k_min_float;
  const fs::path fin = dir / "finalseg";
  using leaf_fn = std::function<void(const std::vector<std::u32string>&, double)>;
  auto load = [&](const char* name, int depth, const leaf_fn& f) {
    const fs::path p = fin / name;
    py_dict_reader(read_file(p), p.string()).read([&](const std::vector<std::u32string>& keys, double v) {
      if (int(keys.size()) != depth || keys[0].size() != 1 || state_index(keys[0][0]) < 0 ||
          (depth == 2 && keys[1].size() != 1))
        fail("{}: unexpected entry in jieba's model (keys must be a state B/E/M/S{})", p.string(),
             depth == 2 ? " and one character" : "");
      f(keys, v);
    });
  };
  load("prob_start.py", 1, [&](const auto& k, double v) { start_[state_index(k[0][0])] = v; });
  load("prob_trans.py", 2, [&](const auto& k, double v) {
    if (state_index(k[1][0]) < 0) fail("{}: a transition to '{}', not a state", (fin / "prob_trans.py").string(),
                                        to_utf8(k[1]));
    trans_[state_index(k[0][0])][state_index(k[1][0])] = v;
  });
  load("prob_emit.py", 2, [&](const auto& k, double v) { emit_[state_index(k[0][0])][k[1][0]] = v; });
}

const jieba_segmenter& jieba_segmenter::installed() {
  static std::mutex mu;
  static std::unique_ptr<jieba_segmenter> seg;
  std::lock_guard<std::mutex> lock(mu);
  if (!seg) {
    const fs::path dir = find_jieba_dir();
    if (dir.empty())
      fail("LongBench scores its Chinese datasets after jieba's word segmentation, and no jieba package was found: "
           "install it (Debian: apt-get install python3-jieba; or pip install jieba==0.42.1), or set GSA_JIEBA_DIR "
           "to the folder holding jieba's dict.txt");
    seg = std::make_unique<jieba_segmenter>(dir);
  }
  return *seg;
}

fs::path find_jieba_dir() {
  if (const char* env = std::getenv("GSA_JIEBA_DIR"); env && *env) return env;
  std::vector<fs::path> roots = {"/usr/lib/python3/dist-packages"};
  std::vector<fs::path> libs = {"/usr/local/lib"};
  if (const char* home = std::getenv("HOME")) libs.push_back(fs::path(home) / ".local/lib");
  for (const auto& lib : libs) {
    std::error_code ec;
    std::vector<fs::path> found;
    for (const auto& e : fs::directory_iterator(lib, ec))
      if (e.path().filename().string().rfind("python3", 0) == 0) found.push_back(e.path());
    std::sort(found.begin(), found.end());
    for (const auto& p : found) {
      roots.push_back(p / "dist-packages");
      roots.push_back(p / "site-packages");
    }
  }
  for (const auto& r : roots)
    if (std::error_code ec; fs::exists(r / "jieba" / "dict.txt", ec)) return r / "jieba";
  return {};
}

int64_t jieba_segmenter::freq_of(const std::u32string& word) const {
  auto it = freq_.find(word);
  return it == freq_.end() ? -1 : it->second;
}

std::vector<std::string> jieba_segmenter::cut(std::string_view text) const {
  // Tokenizer.cut: blocks of re_han_default go to cut_block; elsewhere "\r\n" and each whitespace character are
  // tokens, and so is every other character on its own.
  const std::u32string s = utf8_decode(text);
  std::vector<std::u32string> toks;
  for (size_t i = 0; i < s.size();) {
    size_t j = i;
    if (is_block_char(s[i])) {
      while (j < s.size() && is_block_char(s[j])) j++;
      cut_block(s.substr(i, j - i), toks);
    } else {
      j = i + (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n' ? 2 : 1);
      toks.push_back(s.substr(i, j - i));
    }
    i = j;
  }
  std::vector<std::string> out;
  out.reserve(toks.size());
  for (const auto& t : toks) out.push_back(to_utf8(t));
  return out;
}

void jieba_segmenter::cut_block(const std::u32string& s, std::vector<std::u32string>& out) const {
  const size_t n = s.size();
  // get_DAG: the ends of the words that start at each position.
  std::vector<std::vector<size_t>> dag(n);
  for (size_t k = 0; k < n; k++) {
    std::u32string frag(1, s[k]);
    for (size_t i = k; i < n;) {
      const int64_t f = freq_of(frag);
      if (f < 0) break;
      if (f > 0) dag[k].push_back(i);
      if (++i < n) frag += s[i];
    }
    if (dag[k].empty()) dag[k].push_back(k);
  }
  // calc: route[idx] = max over ends x of (log(freq or 1) - log(total) + route[x + 1].score, x).
  const double logtotal = std::log(double(total_));
  std::vector<double> score(n + 1, 0.0);
  std::vector<size_t> end(n + 1, 0);
  for (size_t idx = n; idx-- > 0;) {
    bool first = true;
    for (size_t x : dag[idx]) {
      const int64_t f = freq_of(s.substr(idx, x + 1 - idx));
      const double v = std::log(double(f > 0 ? f : 1)) - logtotal + score[x + 1];
      if (first || v >= score[idx]) {  // ends ascend: on a tie the later (larger) end wins
        score[idx] = v;
        end[idx] = x;
        first = false;
      }
    }
  }
  // __cut_DAG: multi-character words are tokens; single characters gather in buf.
  std::u32string buf;
  auto flush = [&] {
    if (buf.size() == 1) {
      out.push_back(buf);
    } else if (!buf.empty()) {
      if (freq_of(buf) > 0) {
        for (char32_t c : buf) out.emplace_back(1, c);
      } else {
        cut_hmm(buf, out);
      }
    }
    buf.clear();
  };
  for (size_t x = 0; x < n;) {
    const size_t y = end[x] + 1;
    if (y - x == 1) {
      buf += s[x];
    } else {
      flush();
      out.push_back(s.substr(x, y - x));
    }
    x = y;
  }
  flush();
}

void jieba_segmenter::cut_hmm(const std::u32string& s, std::vector<std::u32string>& out) const {
  // finalseg.cut: runs of [\u4E00-\u9FD5] go to the Viterbi decoder; the rest splits on re_skip
  // ([a-zA-Z0-9]+(?:\.\d+)?%?), keeping the matches and the non-empty text between them.
  for (size_t i = 0; i < s.size();) {
    size_t j = i;
    if (is_han(s[i])) {
      while (j < s.size() && is_han(s[j])) j++;
      viterbi(s.substr(i, j - i), out);
      i = j;
      continue;
    }
    while (j < s.size() && !is_han(s[j])) j++;
    const std::u32string blk = s.substr(i, j - i);
    std::u32string text;
    for (size_t a = 0; a < blk.size();) {
      if (!is_ascii_alnum(blk[a])) {
        text += blk[a++];
        continue;
      }
      size_t b = a;
      while (b < blk.size() && is_ascii_alnum(blk[b])) b++;
      if (b + 1 < blk.size() && blk[b] == '.' && py_isdecimal(blk[b + 1])) {
        b++;
        while (b < blk.size() && py_isdecimal(blk[b])) b++;
      }
      if (b < blk.size() && blk[b] == '%') b++;
      if (!text.empty()) out.push_back(std::move(text));
      text.clear();
      out.push_back(blk.substr(a, b - a));
      a = b;
    }
    if (!text.empty()) out.push_back(std::move(text));
    i = j;
  }
}

void jieba_segmenter::viterbi(const std::u32string& obs, std::vector<std::u32string>& out) const {
  // finalseg.viterbi, with back pointers in place of the path lists.
  const size_t n = obs.size();
  auto emit = [&](int y, char32_t c) {
    auto it = emit_[y].find(c);
    return it == emit_[y].end() ? k_min_float : it->second;
  };
  std::vector<std::array<double, 4>> v(n);
  std::vector<std::array<int, 4>> back(n);
  for (int y = 0; y < 4; y++) v[0][size_t(y)] = start_[y] + emit(y, obs[0]);
  for (size_t t = 1; t < n; t++) {
    for (int y = 0; y < 4; y++) {
      const double em = emit(y, obs[t]);
      // max over (probability, state): on equal probabilities the larger state letter wins.
      double best = 0;
      int arg = -1;
      for (int y0 : k_prev[y]) {
        const double p = v[t - 1][size_t(y0)] + trans_[y0][y] + em;
        if (arg < 0 || p > best || (p == best && y0 > arg)) {
          best = p;
          arg = y0;
        }
      }
      v[t][size_t(y)] = best;
      back[t][size_t(y)] = arg;
    }
  }
  // The last state is E or S, whichever is likelier (S on a tie).
  int state = v[n - 1][3] >= v[n - 1][1] ? 3 : 1;
  std::vector<int> pos(n);
  for (size_t t = n; t-- > 0;) {
    pos[t] = state;
    if (t > 0) state = back[t][size_t(state)];
  }
  // finalseg.__cut: B opens a word, E closes it, S is a word alone, M continues; a word left open at the end
  // is emitted as it stands.
  size_t begin = 0, next = 0;
  for (size_t i = 0; i < n; i++) {
    const char st = k_states[pos[i]];
    if (st == 'B') {
      begin = i;
    } else if (st == 'E') {
      out.push_back(obs.substr(begin, i + 1 - begin));
      next = i + 1;
    } else if (st == 'S') {
      out.emplace_back(1, obs[i]);
      next = i + 1;
    }
  }
  if (next < n) out.push_back(obs.substr(next));
}

}  // namespace gsa::eval
