// Named model configurations for random-init training and speed measurement (`--preset NAME`).
#pragma once
#include <string>
#include <vector>

#include "io/hf-config.h"

namespace gsa {

// Throws gsa::error listing the known names when `name` is unknown.
model_config model_preset(const std::string& name, int64_t vocab_size = 0);
std::vector<std::string> model_preset_names();

}  // namespace gsa
