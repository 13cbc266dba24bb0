// Shared by the libFuzzer targets (fuzz/README is docs/testing.md). The contract every parser must keep on any
// input: it returns, or it throws gsa::error whose message names the input (the file, or the source string the
// target passed) and is not an internal assertion. Everything else is a defect and ends the run: a raw library
// exception (nlohmann's "[json.exception...]", std::stoll's "stoll"), bad_alloc, a sanitizer report, a signal,
// a hang (-timeout) or runaway memory (-rss_limit_mb).
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "core/error.h"

namespace gsa::fuzz {

// A folder of this process under $TMPDIR (removed at exit) for parsers that read files (mmap, directories).
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("gsa-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(std::filesystem::temp_directory_path() / ("gsa-fuzz-" + std::to_string(::getpid())),
                                  ec);
    });
    return d;
  }();
  return dir;
}

inline std::string write_input(const std::string& name, std::string_view bytes) {
  std::string path = (scratch_dir() / name).string();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  out.close();
  if (!out) {
    std::fprintf(stderr, "fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
  return path;
}

[[noreturn]] inline void defect(const char* what, const std::string& msg) {
  std::fprintf(stderr, "\n==fuzz== DEFECT: %s\n%s\n", what, msg.c_str());
  std::fflush(stderr);
  std::abort();
}

// Runs f. A gsa::error that names `must_name` is a clean refusal; any other outcome but returning aborts.
template <typename F>
void expect_clean(const std::string& must_name, F&& f) {
  try {
    f();
  } catch (const gsa::error& e) {
    std::string_view msg = e.what();
    if (msg.starts_with("internal error")) defect("an internal assertion failed on this input", e.what());
    if (msg.find(must_name) == std::string_view::npos)
      defect(("the error does not name the input '" + must_name + "'").c_str(), e.what());
  } catch (const std::exception& e) {
    defect("an exception other than gsa::error escaped (raw library message, no file or field)", e.what());
  }
}

}  // namespace gsa::fuzz
