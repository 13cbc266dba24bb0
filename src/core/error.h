// Errors. Anything a user can cause (a bad file, a bad shape, a bad request) throws gsa::error with a
// message that says what went wrong and what to do; the CLI and the server catch it at their boundary.
// Internal invariants use GSA_ASSERT, which also throws (never aborts) so a long-running server survives
// a bug in one request, but its message names file:line so it is recognisably a bug.
#pragma once
#include <fmt/format.h>
#include <stdexcept>
#include <string>

namespace gsa {

class error : public std::runtime_error {
 public:
  explicit error(const std::string& what) : std::runtime_error(what) {}
};

// Memory ran out (host or device allocation): callers that know what the memory was for (a session's KV cache,
// a training batch) catch it and say what to change.
class out_of_memory : public error {
 public:
  explicit out_of_memory(const std::string& what) : error(what) {}
};

// Throw gsa::error with a fmt-formatted message.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw error(fmt::format(f, std::forward<Args>(args)...));
}

// Throw gsa::out_of_memory with a fmt-formatted message.
template <typename... Args>
[[noreturn]] void fail_oom(fmt::format_string<Args...> f, Args&&... args) {
  throw out_of_memory(fmt::format(f, std::forward<Args>(args)...));
}

[[noreturn]] void assert_failed(const char* expr, const char* file, int line, const std::string& msg);

}  // namespace gsa

#define GSA_ASSERT(cond, ...)                                                          \
  do {                                                                                 \
    if (!(cond)) ::gsa::assert_failed(#cond, __FILE__, __LINE__, ::fmt::format("" __VA_ARGS__)); \
  } while (0)
