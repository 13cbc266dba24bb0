// The training data mix: each sequence is drawn from one source, chosen with the stated proportions
// ("text=0.8,passkey=0.1,kv_retrieval=0.1"): "text" is a random window of the token dataset, any other name a
// generated retrieval task obtained through a task_source callback (the CLI wires eval/tasks.h and the tokenizer
// to it, so gsa_train depends on neither). Every choice comes from one rng plus the window loader's, so the
// sequence of samples is a pure function of the seed and resumes exactly from state().
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "data/loader.h"

namespace gsa {

// One training sequence of raw tokens (no gists yet).
struct train_sample {
  std::string source;         // "text" or the task name
  std::vector<int32_t> raw;
  int ctx_end = -1;           // raw index where the question starts (suffix-unfold unfolds from here); -1: none
  int loss_begin = 0;         // targets at raw indices < loss_begin are ignored (tasks: loss on the answer)
  int answer_begin = -1;      // tasks: raw index of the answer's first token (the retrieval eval scores from here)
};

// A generated task sample of about `length` raw tokens, a pure function of (task, length, seed).
using task_source = std::function<train_sample(const std::string& task, int64_t length, uint64_t seed)>;

struct mix_entry {
  std::string source;
  double weight = 0;  // normalised to sum 1
};
// Parses "text=0.8,passkey=0.2" (or "text"). Throws gsa::error naming the bad part.
std::vector<mix_entry> parse_mix(const std::string& spec);

class sample_mixer {
 public:
  // `text` may be null when the mix has no text; `tasks` may be empty when it has no tasks (else an error).
  sample_mixer(std::vector<mix_entry> mix, data::window_loader* text, task_source tasks, int64_t seq_len,
               uint64_t seed);
  train_sample next();
  nlohmann::json state() const;
  void set_state(const nlohmann::json& j);

 private:
  std::vector<mix_entry> mix_;
  data::window_loader* text_;
  task_source tasks_;
  int64_t seq_len_;
  rng rng_;
};

}  // namespace gsa
