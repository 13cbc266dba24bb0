// Subcommand registry. Each cmd-*.cpp defines a `void register_<name>(CLI::App&, command_list&)` that adds its
// subcommand, options and the function to run; register_commands() calls them all.
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace gsa::tools {

struct command {
  CLI::App* sub;
  std::function<int()> run;
};
using command_list = std::vector<command>;

void register_commands(CLI::App& app);
int run_selected(CLI::App& app);

// One function per subcommand file.
void register_info(CLI::App& app, command_list& cmds);
void register_forward(CLI::App& app, command_list& cmds);
void register_tokenize(CLI::App& app, command_list& cmds);

}  // namespace gsa::tools
