// test_cuda runs on the GPU machine, where there is no debugger: a crash (SIGSEGV, SIGBUS, SIGFPE, SIGABRT) prints
// the frames' addresses and where the executable was loaded, so that `addr2line -f -C -e build-cuda-bundle/test_cuda
// ADDR-BASE ...` here (the bundle's binary is the same build, stripped) names the functions.
#include <execinfo.h>
#include <link.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <initializer_list>

namespace {

uintptr_t load_base() {
  uintptr_t base = 0;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* out) {
        *static_cast<uintptr_t*>(out) = info->dlpi_addr;  // the first object is the executable
        return 1;
      },
      &base);
  return base;
}

void on_crash(int sig) {
  void* frames[64];
  const int n = backtrace(frames, 64);
  std::fprintf(stderr, "\n*** signal %d; executable loaded at 0x%lx; frames (addr - base for addr2line):\n", sig,
               static_cast<unsigned long>(load_base()));
  for (int i = 0; i < n; i++)
    std::fprintf(stderr, "  0x%lx\n", static_cast<unsigned long>(reinterpret_cast<uintptr_t>(frames[i]) - load_base()));
  backtrace_symbols_fd(frames, n, STDERR_FILENO);
  signal(sig, SIG_DFL);
  raise(sig);
}

const bool installed = [] {
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGABRT}) signal(sig, on_crash);
  return true;
}();

}  // namespace
