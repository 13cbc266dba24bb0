// Checkpoints for bit-exact resume. Layout under the run folder OUT:
//   OUT/checkpoint-<step>/   config.json + model.safetensors (an HF model dir, save_model),
//                            optimizer.safetensors (AdamW m and v, metadata step_count),
//                            trainer.json {step, tokens, mixer (rng + loader state), options}
//   OUT/latest               one line: "checkpoint-<step>"
// A checkpoint is written into OUT/.checkpoint-<step>.tmp and renamed into place, then `latest` is replaced
// atomically, so a kill at any moment leaves the previous checkpoint and `latest` intact. Only the newest `keep`
// checkpoints are kept.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "model/llama.h"
#include "train/optimizer.h"

namespace gsa {

// Returns the checkpoint folder written.
std::string save_checkpoint(const std::string& out, int64_t step, const llama_model& m, const adamw_optimizer& opt,
                            const nlohmann::json& trainer, int keep);
// The folder OUT/latest names, or "" when there is none. Throws when `latest` names a missing folder.
std::string latest_checkpoint(const std::string& out);
// Loads the model; `opt` (constructed for that model) gets its state; returns trainer.json.
nlohmann::json load_checkpoint(const std::string& dir, llama_model& m, std::unique_ptr<adamw_optimizer>& opt);

}  // namespace gsa
