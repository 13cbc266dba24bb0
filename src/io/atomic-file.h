// Crash-safe file replacement: bytes go to "<path>.tmp", which is fsync'ed and renamed over <path> only on
// commit(). A crash or an error before commit() leaves the old <path> (if any) untouched, so nothing already
// saved is ever lost; the destructor removes an uncommitted .tmp file. POSIX only (rename is atomic there).
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace gsa {

class atomic_file_writer {
 public:
  explicit atomic_file_writer(std::string path);  // creates/truncates <path>.tmp; throws gsa::error
  ~atomic_file_writer();
  atomic_file_writer(const atomic_file_writer&) = delete;
  atomic_file_writer& operator=(const atomic_file_writer&) = delete;

  void write(const void* data, size_t n);  // throws gsa::error naming the file (disk full, ...)
  void write(std::string_view s) { write(s.data(), s.size()); }
  void commit();                           // fsync, rename over <path>, fsync the directory

  const std::string& path() const { return path_; }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

// Writes a whole small file (config.json, ...) through atomic_file_writer.
void write_file_atomic(const std::string& path, std::string_view contents);

}  // namespace gsa
