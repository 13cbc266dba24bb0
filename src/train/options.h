// Training options: ONE declarative table (name, type, default, help) read by both the JSON config parser and
// the CLI (options-cli.h makes one flag per row: name "grad_accum" -> --grad-accum), so keys and flags cannot
// drift. A config file is a JSON object of table keys; an unknown key is an error naming the key and the file.
// Defaults live in the table only: default_train_options() applies them.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <variant>

#include <nlohmann/json.hpp>

namespace gsa {

struct train_options {
  // Model: an HF directory (continued pretraining, gist rows added) or a preset with random init.
  std::string model, preset;
  nlohmann::json model_config;  // object of HF config.json fields overriding the preset's (or null)
  nlohmann::json gsa;           // the "gsa" object (gist_token_ids may be omitted: assigned), null = full attention
  std::string mode;             // compress | unfold | suffix-unfold; "" = the gsa object's train_mode
  std::string gist_init;        // keep | mean: a plain model's rows of the tokenizer's gist tokens (setup_gsa)
  // Data.
  std::string data, mix, tokenizer, haystack_dir;
  std::string task_loss;        // generated tasks: "answer" (loss on the answer only) or "all" tokens
  int64_t seq_len, suffix_tokens;
  // Optimisation.
  int64_t steps, warmup, grad_accum, seed;
  double lr, min_lr_ratio, weight_decay, beta1, beta2, adam_eps, grad_clip, init_std;
  // Evaluation, checkpoints, logs.
  int64_t eval_every, val_windows, eval_samples, save_every, keep_checkpoints, log_every;
  std::string out;
  bool resume, progress;
  std::string qa_jsonl;         // the QA file the mix's qa samples are cut from
  // Where it runs.
  std::string device;           // cpu | cuda
  std::string precision;        // bf16 | f32 (activations and compute weights; master weights are f32)
  std::string on_nan;           // stop | skip: a step whose loss or gradient norm is not finite
  bool deterministic;           // cuda: the same bits on every run (fixed-point attention backward; slower)
  // Several GPUs (data parallel, dist/): processes started on this host (1: this one), optimizer sharding
  // (0: every rank holds the whole AdamW state; 1: ZeRO-1), whether checkpoints and final/ are written.
  int64_t gpus, zero;
  bool save;
};

enum class option_type { integer, number, string, boolean, json };

using option_field = std::variant<int64_t train_options::*, double train_options::*, std::string train_options::*,
                                  bool train_options::*, nlohmann::json train_options::*>;

struct option_spec {
  const char* name;          // config key; the CLI flag is "--" + name with '_' -> '-'
  option_type type;
  const char* default_json;  // the default, as JSON text
  const char* help;
  option_field field;
};

std::span<const option_spec> train_option_table();
const option_spec* find_train_option(const std::string& name);  // nullptr when unknown
const char* option_type_name(option_type t);

train_options default_train_options();
// Applies every key of a JSON object; `source` names it in errors ("configs/tiny.json: unknown key 'lr_max'").
void apply_train_json(train_options& o, const nlohmann::json& j, const std::string& source);
// Defaults, then the file.
train_options load_train_config(const std::string& path);
// One value given as text (a CLI flag): strings taken as is, JSON values parsed ("null", "{...}", "3e-4").
void set_train_option(train_options& o, const std::string& name, const std::string& text, const std::string& source);
nlohmann::json train_options_to_json(const train_options& o);
// Range checks; throws gsa::error naming the option.
void validate_train_options(const train_options& o);

}  // namespace gsa
