// A growable region of host memory that a backend's kernels read and write in place (kv/kv-cache.h, tier host:
// the raw KV pages that live off the GPU). The whole address range is reserved up front (PROT_NONE, no memory
// behind it), so the region never moves: growing commits the next part of the range and registers it with the
// backend (backend::pin_host: page-locked and mapped into the device's address space on CUDA, nothing on the
// CPU). Pointers into the committed part stay valid for the region's life, on the host and on the device.
#pragma once
#include <cstddef>
#include <utility>
#include <vector>

namespace gsa {
class backend;
}

namespace gsa::kv {

class host_region {
 public:
  // Reserves `reserve` bytes of address space (rounded up to pages); `be` pins what is committed.
  host_region(backend& be, size_t reserve);
  ~host_region();
  host_region(const host_region&) = delete;
  host_region& operator=(const host_region&) = delete;

  // Commits (and pins) at least [0, bytes): grows by doubling, in steps of at least 64 MiB. Throws gsa::error
  // beyond the reservation or when the memory cannot be committed or pinned (the message says what to change).
  void ensure(size_t bytes);
  char* data() const { return base_; }
  size_t committed() const { return committed_; }
  size_t reserved() const { return reserved_; }

 private:
  backend* be_;
  char* base_ = nullptr;
  size_t reserved_ = 0, committed_ = 0;
  std::vector<std::pair<char*, size_t>> pinned_;  // the parts registered with the backend, in order
};

}  // namespace gsa::kv
