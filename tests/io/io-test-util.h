// Helpers for the io tests: a scratch directory removed at the end of each test, raw file writing, and error
// capture (each bad input must throw gsa::error, and its message is checked for the file and the tensor/field).
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.h"

namespace gsa::test {

class scratch_dir {
 public:
  scratch_dir() {
    auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string("gsa-test-io-") + std::to_string(::getpid()) + "-" +
                       (info ? std::string(info->test_suite_name()) + "-" + info->name() : std::string("x"));
    path_ = std::filesystem::temp_directory_path() / name;
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~scratch_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string operator/(const std::string& f) const { return (path_ / f).string(); }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// 8-byte little-endian length, built byte by byte (independent of the writer and of the host's endianness).
inline std::string le_u64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; i++) s[i] = char((n >> (8 * i)) & 0xff);
  return s;
}

// A safetensors file from a header text and a data section, optionally padding the header with spaces.
inline std::string st_bytes(std::string header, const std::string& data, bool pad8 = true) {
  if (pad8) header.append((8 - header.size() % 8) % 8, ' ');
  return le_u64(header.size()) + header + data;
}

// The message of the gsa::error f throws; a test failure (and "") when it throws nothing.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const gsa::error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a gsa::error";
  return "";
}

}  // namespace gsa::test

#define EXPECT_CONTAINS(msg, sub) EXPECT_NE(std::string(msg).find(sub), std::string::npos) << "message: " << (msg)
