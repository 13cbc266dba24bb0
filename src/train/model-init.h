// Building the model a run starts from (DESIGN 1.1): a preset with random init, or a Hugging Face model
// directory for continued pretraining, with gist rows appended to the vocabulary. Each new embedding row is the
// mean input embedding, each new LM-head row (untied models) the mean LM-head row, and config.vocab_size grows by
// the number of new rows.
#pragma once
#include <cstdint>
#include <string>
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

// The name of the gist token of hierarchy level `level` (DESIGN 1.1): <|gist|>, <|gist_1|>, <|gist_2|>, ...
std::string gist_token_name(int level);

// The ids a tokenizer.json (parsed) gives the gist tokens of levels 0 .. levels-1, or an empty vector when it
// lacks any of them (a tokenizer not made for GSA, e.g. Llama 3's).
std::vector<int32_t> tokenizer_gist_ids(const nlohmann::json& tokenizer_json, int levels);

// Names gist ids (rows added by add_gist_rows) in a tokenizer.json (parsed) as special added tokens, level by
// level, so the saved model directory's tokenizer knows every id the model has. Ids already named are left alone.
void add_gist_tokens(nlohmann::json& tokenizer_json, const std::vector<int32_t>& ids);

// The gsa config of a run from the training option `gsa_json` (null: none) and the mode override. Gist token
// ids missing from the object come from the run's tokenizer.json (parsed; null: none) when it names a gist token per
// level inside the vocabulary (tokenizer_gist_ids), else from new rows (added to m; *added is set). Ids given must
// exist in the vocabulary. Sets m.config.gsa to the result (so checkpoints load as GSA models). Returns false for
// a full-attention run. mean_init: when m had no gsa config and the tokenizer's gist ids are reused, their rows
// (embedding, and the LM head when untied) are set to the mean of the other rows, as added rows are: a model
// trained without gists saw those ids only as outputs to push down (training option gist_init = mean).
bool setup_gsa(llama_model& m, const nlohmann::json& gsa_json, const std::string& mode, gist::gsa_config& out,
               const nlohmann::json& tokenizer_json = nullptr, bool* added = nullptr, bool mean_init = false);

}  // namespace gsa
