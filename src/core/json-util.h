// Parsing JSON from files a user (or a corrupted disk, or a hostile file) gives us. Every reader of a JSON file goes
// through parse_json: it bounds the nesting depth BEFORE parsing (nlohmann's DOM recurses per level, so 100k
// nested brackets in an unused field overflow the stack) and turns the library's errors into messages that name
// the file.
#pragma once
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace gsa {

// Deepest nesting any file of ours needs is a handful of levels (tokenizer.json: 5); 256 leaves room.
constexpr int max_json_depth = 256;

// The deepest nesting of [ and { in text (outside strings). Stops counting once past limit. Linear, no recursion.
int json_depth(std::string_view text, int limit = max_json_depth);

// Parses text read from `what` (a path, or "path:line"). Throws gsa::error naming `what` when the nesting is
// deeper than max_depth or the text is not valid JSON. comments: allow // and /* */ (training configs).
nlohmann::json parse_json(std::string_view text, const std::string& what, bool comments = false,
                          int max_depth = max_json_depth);
// Reads the whole file at path and parses it (errors name the path; a missing file says so).
nlohmann::json read_json_file_bounded(const std::string& path, const char* kind, bool comments = false);

}  // namespace gsa
