// host_region: contract in host-region.h.
#include "kv/host-region.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "backend/backend.h"
#include "core/error.h"

namespace gsa::kv {

namespace {
size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }
}  // namespace

host_region::host_region(backend& be, size_t reserve) : be_(&be) {
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  reserved_ = round_up(std::max<size_t>(reserve, 1), page);
  void* p = mmap(nullptr, reserved_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED)
    fail("cannot reserve {} bytes of address space for the KV pages off the GPU: {}", reserved_,
         std::strerror(errno));
  base_ = static_cast<char*>(p);
}

host_region::~host_region() {
  for (auto it = pinned_.rbegin(); it != pinned_.rend(); ++it) be_->unpin_host(it->first);
  if (base_) munmap(base_, reserved_);
}

void host_region::ensure(size_t bytes) {
  if (bytes <= committed_) return;
  if (bytes > reserved_)
    fail("the KV pages off the GPU need {} bytes of host memory, beyond the {} reserved for this cache (the "
         "model's positions); shorten the context",
         bytes, reserved_);
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  size_t want = std::max({bytes, committed_ * 2, size_t(64) << 20});
  want = std::min(round_up(want, page), reserved_);
  char* from = base_ + committed_;
  const size_t n = want - committed_;
  if (mprotect(from, n, PROT_READ | PROT_WRITE) != 0)
    fail("cannot commit {} bytes of host memory for the KV pages off the GPU: {}; shorten the context or free "
         "host memory",
         n, std::strerror(errno));
  be_->pin_host(from, n);  // throws with its own message (e.g. the pinned-memory limit)
  pinned_.push_back({from, n});
  committed_ = want;
}

}  // namespace gsa::kv
