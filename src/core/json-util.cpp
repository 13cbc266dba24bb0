#include "core/json-util.h"

#include <fstream>
#include <sstream>

#include "core/error.h"

namespace gsa {

int json_depth(std::string_view text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char ch : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (ch == '\\') escaped = true;
      else if (ch == '"') in_string = false;
      continue;
    }
    if (ch == '"') {
      in_string = true;
    } else if (ch == '[' || ch == '{') {
      if (++depth > deepest && (deepest = depth) > limit) return deepest;
    } else if (ch == ']' || ch == '}') {
      depth--;
    }
  }
  return deepest;
}

nlohmann::json parse_json(std::string_view text, const std::string& what, bool comments, int max_depth) {
  if (json_depth(text, max_depth) > max_depth)
    fail("{}: JSON nested more than {} levels deep; no file gsa reads needs that: the file is corrupt or hostile",
         what, max_depth);
  try {
    return nlohmann::json::parse(text.begin(), text.end(), nullptr, true, comments);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", what, e.what());
  }
}

nlohmann::json read_json_file_bounded(const std::string& path, const char* kind, bool comments) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open the {}", path, kind);
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_json(ss.str(), path, comments);
}

}  // namespace gsa
