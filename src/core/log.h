// Logging to stderr with a level set once (GSA_LOG=debug|info|warn|error or set_log_level).
#pragma once
#include <fmt/format.h>
#include <cstdio>

namespace gsa {

enum class log_level { debug = 0, info = 1, warn = 2, error = 3, quiet = 4 };

log_level get_log_level();
void set_log_level(log_level level);

template <typename... Args>
void log(log_level level, fmt::format_string<Args...> f, Args&&... args) {
  if (level < get_log_level()) return;
  static const char* names[] = {"debug", "info", "warn", "error"};
  fmt::print(stderr, "[gsa {}] {}\n", names[int(level)], fmt::format(f, std::forward<Args>(args)...));
}

#define GSA_LOG_DEBUG(...) ::gsa::log(::gsa::log_level::debug, __VA_ARGS__)
#define GSA_LOG_INFO(...) ::gsa::log(::gsa::log_level::info, __VA_ARGS__)
#define GSA_LOG_WARN(...) ::gsa::log(::gsa::log_level::warn, __VA_ARGS__)

}  // namespace gsa
