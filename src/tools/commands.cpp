#include "tools/commands.h"

#include <CLI/CLI.hpp>

namespace gsa::tools {

static command_list g_commands;

void register_commands(CLI::App& app) {
  register_info(app, g_commands);
  register_forward(app, g_commands);
  register_tokenize(app, g_commands);
}

int run_selected(CLI::App& app) {
  for (auto& c : g_commands)
    if (c.sub->parsed()) return c.run();
  return 1;
}

}  // namespace gsa::tools
