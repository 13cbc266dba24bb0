// The gsa command line: one binary, one subcommand per job. Each subcommand lives in its own cmd-*.cpp and
// registers itself here; errors a user can cause arrive as gsa::error and are printed without a stack.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "core/error.h"
#include "tools/commands.h"

namespace {

// A training or decode step frees and reallocates the same large activation buffers every time. glibc hands
// buffers above its mmap threshold (or freed memory above its trim threshold at the top of the heap) back to the
// kernel, so every step pays fresh page faults and their zeroing: about 15% of a CPU training step of the mini
// preset. Buffers up to 32 MiB stay in the heap and up to 1 GiB of free heap is kept, unless GLIBC_TUNABLES says
// otherwise.
void keep_freed_buffers() {
#if defined(__GLIBC__)
  if (std::getenv("GLIBC_TUNABLES")) return;
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

}  // namespace

int main(int argc, char** argv) {
  keep_freed_buffers();
  CLI::App app{"gsa: train, evaluate and serve Llama-family models with Gist Sparse Attention"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every subcommand");
  gsa::tools::register_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    return gsa::tools::run_selected(app);
  } catch (const gsa::error& e) {
    std::fprintf(stderr, "gsa: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gsa: error: %s\n", e.what());
    return 1;
  }
}
