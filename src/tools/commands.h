// Subcommand registry. Each cmd-*.cpp defines a `void register_<name>(CLI::App&, command_list&)` that adds its
// subcommand, options and the function to run; register_commands() calls them all.
#pragma once
#include <cstdint>
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
// The `gsa bench` parent command (created on first use), under which every benchmark registers its subcommand.
CLI::App* bench_command(CLI::App& app);
// Parses "1k,4k,16k,65536" into token counts (k = 1024). Throws gsa::error naming `option` on bad input.
std::vector<int64_t> parse_lengths(const std::string& list, const char* option);
int run_selected(CLI::App& app);

// One function per subcommand file.
void register_info(CLI::App& app, command_list& cmds);
void register_forward(CLI::App& app, command_list& cmds);
void register_convert(CLI::App& app, command_list& cmds);
void register_tokenize(CLI::App& app, command_list& cmds);
void register_generate(CLI::App& app, command_list& cmds);
void register_bench_decode(CLI::App& app, command_list& cmds);
void register_train(CLI::App& app, command_list& cmds);
void register_data(CLI::App& app, command_list& cmds);
void register_bench_attention(CLI::App& app, command_list& cmds);
void register_demo(CLI::App& app, command_list& cmds);
void register_perplexity(CLI::App& app, command_list& cmds);
void register_bench_train(CLI::App& app, command_list& cmds);
void register_eval(CLI::App& app, command_list& cmds);
void register_score(CLI::App& app, command_list& cmds);
void register_serve(CLI::App& app, command_list& cmds);
void register_bench_serve(CLI::App& app, command_list& cmds);

}  // namespace gsa::tools
