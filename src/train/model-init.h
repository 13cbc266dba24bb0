// Building the model a run starts from (DESIGN 1.1): a preset with random init, or a Hugging Face model
// directory for continued pretraining, with gist rows appended to the vocabulary. Each new embedding row is the
// mean input embedding, each new LM-head row (untied models) the mean LM-head row, and config.vocab_size grows by
// the number of new rows.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gist/config.h"
#include "model/llama.h"

namespace gsa {

// The model/presets.h preset `preset` with vocabulary `vocab_size`, and `overrides` (an object of config.json
// fields, or null) applied on top. Throws on an unknown preset.
model_config run_model_config(const std::string& preset, int64_t vocab_size, const nlohmann::json& overrides);

// Appends n rows to the embedding (and untied LM head), initialised to the mean rows; returns their ids
// (old V .. old V + n - 1).
std::vector<int32_t> add_gist_rows(llama_model& m, int n);

// The gsa config of a run from the training option `gsa_json` (null: none) and the mode override. Gist token
// ids missing from the object are assigned as new rows (added to m); ids given must exist in the vocabulary.
// Sets m.config.gsa to the result (so checkpoints load as GSA models). Returns false for a full-attention run.
bool setup_gsa(llama_model& m, const nlohmann::json& gsa_json, const std::string& mode, gist::gsa_config& out);

}  // namespace gsa
