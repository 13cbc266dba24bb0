// Haystack loading and sentence splitting (see haystack.h).
#include "eval/haystack.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>

#include "core/error.h"
#include "eval/text-util.h"

namespace gsa::eval {

namespace fs = std::filesystem;

std::vector<std::string> split_sentences(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0, i = 0;
  auto closing = [](char c) { return c == '"' || c == '\'' || c == ')' || c == ']'; };
  while (i < text.size()) {
    char c = text[i];
    if (c == '.' || c == '!' || c == '?') {
      size_t j = i + 1;
      while (j < text.size() && (closing(text[j]) || text[j] == '.' || text[j] == '!' || text[j] == '?')) j++;
      // Curly closing quotes are three bytes: E2 80 9D / E2 80 99.
      while (j + 2 < text.size() && uint8_t(text[j]) == 0xE2 && uint8_t(text[j + 1]) == 0x80 &&
             (uint8_t(text[j + 2]) == 0x9D || uint8_t(text[j + 2]) == 0x99))
        j += 3;
      // The essays lost their paragraph breaks ("that.For me"): a lowercase letter, the stop and an
      // uppercase letter also end a sentence.
      bool glued = j == i + 1 && j < text.size() && i > 0 && text[i - 1] >= 'a' && text[i - 1] <= 'z' &&
                   text[j] >= 'A' && text[j] <= 'Z';
      if (glued) {
        out.push_back(text.substr(start, j - start));
        start = i = j;
        continue;
      }
      if (j == text.size() || text[j] == ' ') {
        out.push_back(text.substr(start, j - start));
        start = j + (j < text.size());
        i = start;
        continue;
      }
      i = j;
      continue;
    }
    i++;
  }
  if (start < text.size()) out.push_back(text.substr(start));
  return out;
}

std::vector<std::string> haystack_sentences(std::string_view file_text) {
  return split_sentences(collapse_ws(file_text));
}

const haystack& load_haystack(const fs::path& dir) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<haystack>> cache;
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    fail("haystack directory '{}' not found: pass --haystack DIR, a folder of .txt files "
         "(the default is ../shared/data/text/haystack, the Paul Graham essays)",
         dir.string());
  std::string key = fs::weakly_canonical(dir, ec).string();
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = cache.find(key); it != cache.end()) return *it->second;
  std::vector<fs::path> files;
  for (auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ".txt") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  auto h = std::make_unique<haystack>();
  h->dir = dir;
  for (auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    if (!in) fail("cannot read haystack file '{}'", f.string());
    std::stringstream ss;
    ss << in.rdbuf();
    for (auto& s : haystack_sentences(ss.str())) h->sentences.push_back(std::move(s));
  }
  if (h->sentences.empty())
    fail("haystack directory '{}' holds no text (.txt files): pass --haystack DIR with a folder of .txt files",
         dir.string());
  return *cache.emplace(key, std::move(h)).first->second;
}

const std::vector<std::string>& noise_sentences() {
  static const std::vector<std::string> s = {"The grass is green.", "The sky is blue.", "The sun is yellow.",
                                             "Here we go.", "There and back again."};
  return s;
}

}  // namespace gsa::eval
