#include "io/atomic-file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace gsa {

atomic_file_writer::atomic_file_writer(std::string path) : path_(std::move(path)), tmp_(path_ + ".tmp") {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("{}: cannot create the file: {}", tmp_, std::strerror(errno));
}

atomic_file_writer::~atomic_file_writer() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

void atomic_file_writer::write(const void* data, size_t n) {
  GSA_ASSERT(fd_ >= 0, "write after commit");
  auto p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("{}: write failed: {} (is the disk full?)", tmp_, std::strerror(errno));
    }
    p += w;
    n -= size_t(w);
  }
}

void atomic_file_writer::commit() {
  GSA_ASSERT(fd_ >= 0, "commit twice");
  // Data must be on disk before the rename is, or a power loss could leave an empty file under the good name.
  if (::fsync(fd_) != 0) fail("{}: fsync failed: {}", tmp_, std::strerror(errno));
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) fail("{}: close failed: {}", tmp_, std::strerror(errno));
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0)
    fail("{}: cannot rename {} over it: {}", path_, tmp_, std::strerror(errno));
  committed_ = true;
  // Make the rename itself durable; failure here loses nothing already written, so it is not an error.
  std::string dir = std::filesystem::path(path_).parent_path().string();
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

void write_file_atomic(const std::string& path, std::string_view contents) {
  atomic_file_writer w(path);
  w.write(contents);
  w.commit();
}

}  // namespace gsa
