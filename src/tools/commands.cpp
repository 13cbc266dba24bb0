#include "tools/commands.h"

#include <CLI/CLI.hpp>

#include "core/error.h"

namespace gsa::tools {

static command_list g_commands;

void register_commands(CLI::App& app) {
  register_demo(app, g_commands);
  register_perplexity(app, g_commands);
  register_info(app, g_commands);
  register_forward(app, g_commands);
  register_convert(app, g_commands);
  register_bench_attention(app, g_commands);
  register_bench_train(app, g_commands);
  register_tokenize(app, g_commands);
  register_generate(app, g_commands);
  register_bench_decode(app, g_commands);
  register_train(app, g_commands);
  register_data(app, g_commands);
  register_eval(app, g_commands);
  register_score(app, g_commands);
  register_serve(app, g_commands);
  register_bench_serve(app, g_commands);
}

CLI::App* bench_command(CLI::App& app) {
  for (auto* b : app.get_subcommands({}))
    if (b->get_name() == "bench") return b;
  auto* b = app.add_subcommand("bench", "Benchmarks: print figures and ratios (never pass/fail)");
  b->require_subcommand(1);
  return b;
}

std::vector<int64_t> parse_lengths(const std::string& list, const char* option) {
  std::vector<int64_t> out;
  size_t start = 0;
  while (start <= list.size()) {
    size_t end = list.find(',', start);
    if (end == std::string::npos) end = list.size();
    std::string item = list.substr(start, end - start);
    start = end + 1;
    if (item.empty()) continue;
    int64_t mult = 1;
    char last = item.back();
    if (last == 'k' || last == 'K') mult = 1024, item.pop_back();
    if (last == 'm' || last == 'M') mult = 1024 * 1024, item.pop_back();
    try {
      size_t used = 0;
      long long v = std::stoll(item, &used);
      if (used != item.size() || v <= 0) throw std::invalid_argument(item);
      // Lengths index int32 streams: anything past 2^31 tokens is refused here, not wrapped to a negative number.
      if (v > (int64_t(1) << 31) / mult) fail("{}: '{}' is more than 2^31 tokens", option, list.substr(0, end));
      out.push_back(v * mult);
    } catch (const std::invalid_argument&) {
      fail("{}: '{}' is not a length; use a comma-separated list such as 1k,4k,16k", option, item);
    } catch (const std::out_of_range&) {
      fail("{}: '{}' is more than 2^31 tokens", option, item);
    }
  }
  if (out.empty()) fail("{} is empty; use a comma-separated list such as 1k,4k,16k", option);
  return out;
}

int run_selected(CLI::App& app) {
  for (auto& c : g_commands)
    if (c.sub->parsed()) return c.run();
  return 1;
}

}  // namespace gsa::tools
