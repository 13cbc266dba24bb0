// `gsa train` as a library call: builds or loads the model (presets, or an HF folder with gist rows added),
// streams the data mix, runs AdamW with warmup + cosine, gradient accumulation and clipping, evaluates
// validation loss (and the retrieval tasks of the mix, when a task generator is given) every eval_every steps,
// checkpoints every save_every steps, and resumes bit-exactly from OUT/latest. The model's ops use OpenMP inside.
// Data parallel (a communicator, several processes): every rank draws the step's grad_accum samples and computes
// its slice of them (dist/shard.h), gradients are summed over the ranks (train/data-parallel.h, or ZeRO-1 in the
// optimizer), and rank 0 alone evaluates, logs and writes; checkpoints are those of one process, so a run resumes
// on any number of GPUs.
// Files under OUT: checkpoint-<step>/ and latest (checkpoint.h), log.jsonl (one JSON object per logged step
// and per evaluation), loss.svg, final/ (the trained HF model dir, plus tokenizer files when found).
#pragma once
#include <cmath>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "dist/communicator.h"
#include "train/mix.h"
#include "train/options.h"

namespace gsa {

struct train_hooks {
  task_source tasks;               // generated retrieval tasks for the mix and the eval (null: text only)
  int64_t stop_after_steps = -1;   // return right after this many steps, without a final save (simulates a kill)
  std::function<void(const nlohmann::json&)> on_record;  // every log record, as written to log.jsonl
  // Called with the step about to update (1-based) and that step's summed loss, which it may change (tests poison
  // it with NaN to exercise --on-nan).
  std::function<void(int64_t step, double& loss)> before_update;
  // The data-parallel group this process belongs to (tests pass an in-process one). Null: made from the
  // environment when WORLD_SIZE > 1 (`gsa train --gpus N`, torchrun), else a single process.
  dist::communicator* comm = nullptr;
};

struct train_result {
  int64_t step = 0;                // steps done when the run returned
  int64_t resumed_from = -1;       // the checkpoint step resumed from, -1 for a fresh start
  double last_loss = NAN, last_val_loss = NAN;
  int64_t skipped_steps = 0;       // steps dropped by --on-nan skip
  std::string final_dir;           // OUT/final, empty when stopped early
  // The signal (train/stop-signal.h) that stopped the run before its last step, 0 if none: a checkpoint at `step`
  // was written (when the run saves), OUT/final was not.
  int stopped_by = 0;
};

train_result run_training(const train_options& o, const train_hooks& hooks = {});

}  // namespace gsa
