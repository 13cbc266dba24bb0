// The gsa command line: one binary, one subcommand per job. Each subcommand lives in its own cmd-*.cpp and
// registers itself here; errors a user can cause arrive as gsa::error and are printed without a stack.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "core/error.h"
#include "tools/commands.h"

int main(int argc, char** argv) {
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
