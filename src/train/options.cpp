#include "train/options.h"

#include <cmath>
#include <fstream>

#include "core/error.h"
#include "core/json-util.h"

namespace gsa {

using json = nlohmann::json;
using T = train_options;

static const option_spec k_table[] = {
    // Model.
    {"model", option_type::string, "\"\"", "HF model directory to continue pretraining (gist rows are added)", &T::model},
    {"preset", option_type::string, "\"\"", "random-init model preset (model/presets.h: tiny, mini, demo, small)", &T::preset},
    {"model_config", option_type::json, "null", "JSON object of config.json fields overriding the preset", &T::model_config},
    {"gsa", option_type::json, "{\"chunk\": [8]}", "the gsa object (DESIGN 1.1-1.5); null trains the full-attention baseline", &T::gsa},
    {"mode", option_type::string, "\"\"", "training mode: compress, unfold, suffix-unfold (default: gsa.train_mode)", &T::mode},
    // Data.
    {"data", option_type::string, "\"\"", "token dataset folder written by `gsa data prepare`", &T::data},
    {"mix", option_type::string, "\"text=1\"", "sequence mix, e.g. text=0.8,passkey=0.1,kv_retrieval=0.1", &T::mix},
    {"tokenizer", option_type::string, "\"\"", "tokenizer for generated tasks (default: the model or data folder's)", &T::tokenizer},
    {"qa_jsonl", option_type::string, "\"\"", "QA file the mix's qa samples are cut from (jsonl of question, answers, context or passages)", &T::qa_jsonl},
    {"haystack_dir", option_type::string, "\"../shared/data/text/haystack\"", "filler text for niah_* tasks", &T::haystack_dir},
    {"task_loss", option_type::string, "\"answer\"", "generated tasks: loss on the answer only (answer) or on every token (all)", &T::task_loss},
    {"seq_len", option_type::integer, "512", "raw tokens per training sequence (gists come on top)", &T::seq_len},
    {"suffix_tokens", option_type::integer, "64", "suffix-unfold on text: the last N tokens unfold", &T::suffix_tokens},
    // Optimisation.
    {"steps", option_type::integer, "1000", "optimizer steps", &T::steps},
    {"warmup", option_type::integer, "100", "linear warmup steps", &T::warmup},
    {"grad_accum", option_type::integer, "1", "sequences per optimizer step", &T::grad_accum},
    {"seed", option_type::integer, "1234", "seed for init and data order", &T::seed},
    {"lr", option_type::number, "3e-4", "peak learning rate", &T::lr},
    {"min_lr_ratio", option_type::number, "0.1", "final learning rate as a fraction of lr (cosine)", &T::min_lr_ratio},
    {"weight_decay", option_type::number, "0.1", "AdamW weight decay (matrices only)", &T::weight_decay},
    {"beta1", option_type::number, "0.9", "AdamW beta1", &T::beta1},
    {"beta2", option_type::number, "0.95", "AdamW beta2", &T::beta2},
    {"adam_eps", option_type::number, "1e-8", "AdamW epsilon", &T::adam_eps},
    {"grad_clip", option_type::number, "1.0", "global gradient-norm clip (<= 0: off)", &T::grad_clip},
    {"init_std", option_type::number, "0.02", "std of the random init", &T::init_std},
    // Evaluation, checkpoints, logs.
    {"eval_every", option_type::integer, "100", "validation loss (and task eval) every N steps (0: only at the end)", &T::eval_every},
    {"val_windows", option_type::integer, "8", "validation windows of seq_len", &T::val_windows},
    {"eval_samples", option_type::integer, "4", "generated samples per task in the retrieval eval", &T::eval_samples},
    {"save_every", option_type::integer, "500", "checkpoint every N steps (0: only at the end)", &T::save_every},
    {"keep_checkpoints", option_type::integer, "2", "checkpoints kept (older ones are deleted)", &T::keep_checkpoints},
    {"log_every", option_type::integer, "1", "JSONL log line every N steps", &T::log_every},
    {"out", option_type::string, "\"runs/train\"", "output folder: checkpoints, log.jsonl, loss.svg, final/", &T::out},
    {"resume", option_type::boolean, "true", "continue from OUT/latest when it exists", &T::resume},
    {"progress", option_type::boolean, "false", "progress bar on stderr even when it is not a terminal", &T::progress},
    // Device.
    {"device", option_type::string, "\"cpu\"", "cpu or cuda (the whole model on the GPU)", &T::device},
    {"gist_init", option_type::string, "\"keep\"", "continuing a model without gists whose tokenizer names the gist tokens: keep their rows as trained (never as inputs) or set them to the mean row, as new gist rows are (mean)", &T::gist_init},
    {"on_nan", option_type::string, "\"stop\"", "a step whose loss or gradient norm is NaN or Inf: stop (error, the last checkpoint stays) or skip (no update; stops after 10 in a row)", &T::on_nan},
    {"deterministic", option_type::boolean, "false", "cuda: every run of the same recipe gives the same bits (the attention backward sums dK / dV in fixed point: 1.3-2.2x slower steps; docs/cuda.md). The CPU always is", &T::deterministic},
    {"precision", option_type::string, "\"bf16\"", "cuda: bf16 or f32 activations and compute weights (f32 master weights either way); cpu: always f32", &T::precision},
    {"gpus", option_type::integer, "1", "data-parallel training on N GPUs of this host: starts N processes (one per GPU, NCCL); the global batch is grad_accum sequences per step, split over them. Under torchrun (WORLD_SIZE set) leave it at 1", &T::gpus},
    {"zero", option_type::integer, "0", "several GPUs: 0 keeps the whole AdamW state on every GPU (gradients all-reduced during the backward pass); 1 shards it (ZeRO-1: m, v and master weights split over the GPUs)", &T::zero},
    {"save", option_type::boolean, "true", "write checkpoints and final/ (--no-save: benchmark runs)", &T::save},
};

std::span<const option_spec> train_option_table() { return k_table; }

const option_spec* find_train_option(const std::string& name) {
  for (const auto& s : k_table)
    if (name == s.name) return &s;
  return nullptr;
}

const char* option_type_name(option_type t) {
  switch (t) {
    case option_type::integer: return "an integer";
    case option_type::number: return "a number";
    case option_type::string: return "a string";
    case option_type::boolean: return "true or false";
    case option_type::json: return "JSON";
  }
  return "?";
}

static void set_value(train_options& o, const option_spec& s, const json& v, const std::string& source) {
  auto bad = [&] { fail("{}: option '{}' must be {}, got {}", source, s.name, option_type_name(s.type), v.dump()); };
  switch (s.type) {
    case option_type::integer:
      if (!v.is_number_integer()) bad();
      o.*std::get<int64_t T::*>(s.field) = v.get<int64_t>();
      break;
    case option_type::number:
      if (!v.is_number()) bad();
      o.*std::get<double T::*>(s.field) = v.get<double>();
      break;
    case option_type::string:
      if (!v.is_string()) bad();
      o.*std::get<std::string T::*>(s.field) = v.get<std::string>();
      break;
    case option_type::boolean:
      if (!v.is_boolean()) bad();
      o.*std::get<bool T::*>(s.field) = v.get<bool>();
      break;
    case option_type::json:
      o.*std::get<json T::*>(s.field) = v;
      break;
  }
}

static json get_value(const train_options& o, const option_spec& s) {
  return std::visit([&](auto f) { return json(o.*f); }, s.field);
}

train_options default_train_options() {
  train_options o;
  for (const auto& s : k_table) set_value(o, s, json::parse(s.default_json), "option table");
  return o;
}

static std::string known_keys() {
  std::string k;
  for (const auto& s : k_table) k += (k.empty() ? "" : ", ") + std::string(s.name);
  return k;
}

void apply_train_json(train_options& o, const json& j, const std::string& source) {
  if (!j.is_object()) fail("{}: a training config must be a JSON object of options", source);
  for (const auto& [key, v] : j.items()) {
    const option_spec* s = find_train_option(key);
    if (!s) fail("{}: unknown key '{}' (known keys: {})", source, key, known_keys());
    set_value(o, *s, v, source);
  }
}

train_options load_train_config(const std::string& path) {
  const json j = read_json_file_bounded(path, "training config", /*comments=*/true);
  train_options o = default_train_options();
  apply_train_json(o, j, path);
  return o;
}

void set_train_option(train_options& o, const std::string& name, const std::string& text, const std::string& source) {
  const option_spec* s = find_train_option(name);
  if (!s) fail("{}: unknown option '{}'", source, name);
  if (s->type == option_type::string) return set_value(o, *s, json(text), source);
  json v;
  try {
    v = json::parse(text);
  } catch (const json::exception&) {
    fail("{}: option '{}' must be {}, got '{}'", source, name, option_type_name(s->type), text);
  }
  set_value(o, *s, v, source);
}

json train_options_to_json(const train_options& o) {
  json j = json::object();
  for (const auto& s : k_table) j[s.name] = get_value(o, s);
  return j;
}

void validate_train_options(const train_options& o) {
  auto positive = [](int64_t v, const char* n) {
    if (v <= 0) fail("training option '{}' must be positive (got {})", n, v);
  };
  auto non_negative = [](int64_t v, const char* n) {
    if (v < 0) fail("training option '{}' must be >= 0 (got {})", n, v);
  };
  positive(o.seq_len, "seq_len");
  positive(o.steps, "steps");
  if (o.task_loss != "answer" && o.task_loss != "all")
    fail("training option 'task_loss' must be \"answer\" or \"all\" (got \"{}\")", o.task_loss);
  positive(o.grad_accum, "grad_accum");
  positive(o.keep_checkpoints, "keep_checkpoints");
  positive(o.log_every, "log_every");
  non_negative(o.warmup, "warmup");
  non_negative(o.eval_every, "eval_every");
  non_negative(o.save_every, "save_every");
  non_negative(o.val_windows, "val_windows");
  non_negative(o.eval_samples, "eval_samples");
  // Every real-valued hyper-parameter in a range that keeps the arithmetic finite (an lr of 1e39 passed "> 0" and
  // turned every weight into Inf at the first step).
  auto in_range = [](double v, double lo, double hi, bool lo_open, const char* n, const char* why) {
    if (!(std::isfinite(v) && (lo_open ? v > lo : v >= lo) && v <= hi))
      fail("training option '{}' must be in {}{}, {}] (got {}){}", n, lo_open ? "(" : "[", lo, hi, v, why);
  };
  in_range(o.lr, 0, 10, true, "lr", "");
  in_range(o.min_lr_ratio, 0, 1, false, "min_lr_ratio", "");
  in_range(o.weight_decay, 0, 10, false, "weight_decay", "");
  in_range(o.beta1, 0, 1, false, "beta1", "");
  in_range(o.beta2, 0, 1, false, "beta2", "");
  in_range(o.adam_eps, 0, 1, true, "adam_eps", "");
  in_range(o.grad_clip, -1, 1e6, false, "grad_clip", " (<= 0: no clipping)");
  in_range(o.init_std, 0, 10, true, "init_std", "");
  if (o.device != "cpu" && o.device != "cuda") fail("training option 'device' must be cpu or cuda (got '{}')", o.device);
  if (o.gpus < 1 || o.gpus > 1024) fail("training option 'gpus' must be 1 .. 1024 (got {})", o.gpus);
  if (o.zero != 0 && o.zero != 1)
    fail("training option 'zero' must be 0 (replicated optimizer state) or 1 (ZeRO-1, sharded) (got {})", o.zero);
  if (o.gpus > 1 && o.device != "cuda")
    fail("--gpus {} trains on {} GPUs and needs --device cuda (one process per GPU over NCCL)", o.gpus, o.gpus);
  if (o.gist_init != "keep" && o.gist_init != "mean")
    fail("training option 'gist_init' must be keep or mean (got '{}')", o.gist_init);
  if (o.on_nan != "stop" && o.on_nan != "skip")
    fail("training option 'on_nan' must be stop or skip (got '{}')", o.on_nan);
  if (o.precision != "bf16" && o.precision != "f32")
    fail("training option 'precision' must be bf16 or f32 (got '{}')", o.precision);
  if (o.model.empty() == o.preset.empty())
    fail("give exactly one of 'model' (an HF directory to continue from) and 'preset' (random init){}",
         o.model.empty() ? "" : fmt::format("; got model '{}' and preset '{}'", o.model, o.preset));
  if (o.data.empty()) fail("training option 'data' is empty: give a folder written by `gsa data prepare`");
  if (o.out.empty()) fail("training option 'out' is empty");
  if (!o.gsa.is_null() && !o.gsa.is_object()) fail("training option 'gsa' must be an object or null");
  if (!o.model_config.is_null() && !o.model_config.is_object())
    fail("training option 'model_config' must be an object of config.json fields or null");
}

}  // namespace gsa
