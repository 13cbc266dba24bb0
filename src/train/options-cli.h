// CLI flags generated from the training option table (options.h): one flag per row ("--grad-accum 4"; booleans
// are flags with a negation, "--resume" / "--no-resume"), plus --config FILE and --no-gsa. Header-only so that
// gsa_train itself needs no CLI11; the caller links CLI11.
#pragma once
#include <CLI/CLI.hpp>

#include <map>
#include <memory>
#include <string>

#include "train/options.h"

namespace gsa {

struct train_cli {
  std::string config;
  bool no_gsa = false;
  std::vector<std::pair<std::string, std::string>> overrides;  // (option, text) in command-line order
  // Defaults, then the config file, then the flags. Errors name the flag.
  train_options resolve() const {
    train_options o = config.empty() ? default_train_options() : load_train_config(config);
    for (auto& [name, text] : overrides) set_train_option(o, name, text, "--" + flag_name(name));
    if (no_gsa) o.gsa = nullptr;
    return o;
  }
  static std::string flag_name(const std::string& name) {
    std::string f = name;
    for (auto& c : f)
      if (c == '_') c = '-';
    return f;
  }
};

// Adds the flags to `sub`; parsed values land in `cli` (which must outlive parsing).
inline void add_train_flags(CLI::App* sub, train_cli& cli) {
  sub->add_option("--config", cli.config, "training recipe (JSON object of the options below)");
  sub->add_flag("--no-gsa", cli.no_gsa, "full-attention baseline: same recipe with gists off (gsa = null)");
  for (const auto& s : train_option_table()) {
    std::string flag = "--" + train_cli::flag_name(s.name), name = s.name;
    std::string help = std::string(s.help) + " [default " + s.default_json + "]";
    if (s.type == option_type::boolean) {
      sub->add_flag_function(
          flag + ",!--no-" + train_cli::flag_name(s.name),
          [&cli, name](int64_t n) { cli.overrides.emplace_back(name, n > 0 ? "true" : "false"); }, help);
    } else {
      sub->add_option_function<std::string>(
          flag, [&cli, name](const std::string& v) { cli.overrides.emplace_back(name, v); }, help);
    }
  }
}

}  // namespace gsa
