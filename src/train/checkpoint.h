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
// The same with the optimizer's state already taken (adamw_optimizer::state, which is collective under ZeRO-1).
std::string save_checkpoint(const std::string& out, int64_t step, const llama_model& m,
                            const std::vector<std::pair<std::string, Tensor>>& opt_state, int64_t step_count,
                            const nlohmann::json& trainer, int keep);
// The folder OUT/latest names, or "" when there is none. Throws when `latest` names a missing folder.
std::string latest_checkpoint(const std::string& out);
// Loads the model; `opt` (constructed for that model) gets its state; returns trainer.json, already checked by
// check_trainer_state (so the trainer's reads of it cannot fail).
nlohmann::json load_checkpoint(const std::string& dir, llama_model& m, std::unique_ptr<adamw_optimizer>& opt);

// trainer.json as the trainer reads it on resume: {"step": n >= 0, "tokens": n >= 0 (optional),
// "added_gist_ids": [ids] (optional), "mixer": {"s0", "s1" (u64 as decimal strings), "text"?: {"s0", "s1",
// "drawn": n >= 0}}}. Throws gsa::error naming `source` and the field; "options" is informational and not read.
void check_trainer_state(const nlohmann::json& j, const std::string& source);
// A u64 written as a decimal string (rng words in trainer.json, step_count in optimizer.safetensors): digits only,
// at most 2^64 - 1 (std::stoull accepted "-1", " 7" and "12abc"). Throws gsa::error naming `what`.
uint64_t parse_u64_decimal(const std::string& s, const std::string& what);

}  // namespace gsa
