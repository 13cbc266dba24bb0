// `gsa data prepare --tokenizer DIR --input FILES... --out DIR`: tokenizes text into token shards with a
// validation split (data/dataset.h); `gsa data info DIR`: checks every shard and prints the split sizes.
// Inputs: a .jsonl file gives one document per line (its "text" field); any other file is one document.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "core/error.h"
#include "core/json-util.h"
#include "data/dataset.h"
#include "eval/tasks.h"
#include "tokenizer/tokenizer.h"
#include "tools/commands.h"
#include "tools/task-samples.h"

namespace gsa::tools {
namespace {

namespace fs = std::filesystem;

// The tasks data tasks can write: every generated task but qa, which needs a QA file.
std::vector<std::string> data_task_names() {
  std::vector<std::string> out;
  for (auto& t : eval::task_names())
    if (t != "qa") out.push_back(t);
  return out;
}

struct prepare_args {
  std::string tokenizer, out;
  std::vector<std::string> inputs;
  double val_fraction = 0.01;
  int64_t separator = -2, shard_tokens = 100000000, block_tokens = 4096;
};

// The separator: --separator, else tokenizer_config.json's eos_token, else a well-known end-of-text token.
int64_t find_separator(const tokenizer& tok, const std::string& dir) {
  fs::path cfg = fs::is_directory(dir) ? fs::path(dir) / "tokenizer_config.json" : fs::path(dir).parent_path() / "tokenizer_config.json";
  if (fs::exists(cfg)) {
    try {
      auto j = read_json_file_bounded(cfg.string(), "tokenizer config");
      if (j.contains("eos_token")) {
        auto& e = j["eos_token"];
        std::string s = e.is_string() ? e.get<std::string>() : e.value("content", "");
        if (int32_t id = tok.token_id(s); id >= 0) return id;
      }
    } catch (const nlohmann::json::exception&) {
    }
  }
  for (const char* s : {"<|end_of_text|>", "<|endoftext|>", "</s>", "<|im_end|>"})
    if (int32_t id = tok.token_id(s); id >= 0) return id;
  fail("{}: no end-of-text token found; give --separator ID (or -1 for none)", dir);
}

int run_prepare(const prepare_args& a) {
  tokenizer tok = tokenizer::load(a.tokenizer);
  data::prepare_options po;
  po.vocab_size = int64_t(tok.vocab_size());
  if (a.separator < -2 || a.separator >= int64_t(tok.vocab_size()))
    fail("--separator {} is not a token id of the vocabulary [0, {}) nor -1 (no separator)", a.separator,
         tok.vocab_size());
  po.separator = a.separator == -2 ? find_separator(tok, a.tokenizer) : a.separator;
  po.val_fraction = a.val_fraction;
  po.shard_tokens = a.shard_tokens;
  po.block_tokens = a.block_tokens;
  po.source = {{"tokenizer", fs::absolute(a.tokenizer).string()}, {"inputs", a.inputs}};
  // The writer is made at the first document with text: an input without text is an error that writes nothing,
  // not a 1-token dataset (documents stream through; the corpus is never held in memory).
  std::optional<data::dataset_writer> w;
  auto add = [&](std::vector<int32_t> d) {
    if (d.empty()) return;
    if (!w) w.emplace(a.out, po);
    w->add_document(d);
  };
  for (auto& in : a.inputs) {
    std::ifstream f(in, std::ios::binary);
    if (!f) fail("{}: cannot open the input", in);
    if (fs::path(in).extension() == ".jsonl") {
      std::string line;
      int64_t n = 0;
      while (std::getline(f, line)) {
        n++;
        if (line.empty()) continue;
        const nlohmann::json j = parse_json(line, fmt::format("{}:{}", in, n));
        if (!j.contains("text") || !j["text"].is_string()) fail("{}:{}: no \"text\" string field", in, n);
        add(tok.encode(j["text"].get<std::string>()));
      }
    } else {
      std::stringstream ss;
      ss << f.rdbuf();
      add(tok.encode(ss.str()));
    }
  }
  if (!w) fail("--input: no text in {} (nothing to prepare); give files with text", fmt::join(a.inputs, ", "));
  w->finish();
  fmt::print("{}: {} documents, {} train tokens in {} shard(s), {} validation tokens in {} shard(s), vocab {}, "
             "separator {}\n", a.out, w->documents(), w->train().tokens, w->train().shards.size(), w->val().tokens,
             w->val().shards.size(), po.vocab_size, po.separator);
  return 0;
}

}  // namespace

void register_data(CLI::App& app, command_list& cmds) {
  auto* data = app.add_subcommand("data", "Prepare and inspect token datasets");
  data->require_subcommand(1);
  auto* prep = data->add_subcommand("prepare", "Tokenize text files into token shards with a validation split");
  static prepare_args a;
  prep->add_option("--tokenizer", a.tokenizer, "tokenizer.json or a folder holding one")->required();
  prep->add_option("--input", a.inputs, "text files (one document each) or .jsonl files (\"text\" per line)")
      ->required()->expected(1, -1);
  prep->add_option("--out", a.out, "output folder (must not hold a dataset yet)")->required();
  prep->add_option("--val-fraction", a.val_fraction, "share of tokens for validation")->capture_default_str();
  prep->add_option("--separator", a.separator, "id after each document (default: the tokenizer's eos; -1: none)");
  prep->add_option("--shard-tokens", a.shard_tokens, "tokens per shard file at most")->capture_default_str();
  prep->add_option("--block-tokens", a.block_tokens, "granularity of the validation split")->capture_default_str();
  cmds.push_back({prep, [] { return run_prepare(a); }});

  auto* tasks = data->add_subcommand(
      "tasks", "Write generated task samples as JSON lines {\"ids\", \"answer_begin\"} in the training layout "
               "(for training elsewhere, e.g. a PyTorch cross-check)");
  static std::string t_tok, t_task = "passkey", t_out, t_haystack = "../shared/data/text/haystack";
  static int64_t t_len = 256, t_n = 1000, t_sep = -2;
  static uint64_t t_seed = 0;
  tasks->add_option("--tokenizer", t_tok, "tokenizer.json or a folder holding one")->required();
  tasks->add_option("--task", t_task, fmt::format("generated task: {}", fmt::join(data_task_names(), ", ")))
      ->capture_default_str();
  tasks->add_option("--length", t_len, "raw tokens per sample, about")->capture_default_str();
  tasks->add_option("--n", t_n, "samples")->capture_default_str();
  tasks->add_option("--seed", t_seed, "first seed (sample i uses seed + i)")->capture_default_str();
  tasks->add_option("--separator", t_sep, "id after each sample (default: the tokenizer's <|endoftext|>)");
  tasks->add_option("--haystack", t_haystack, "filler folder for niah_* tasks")->capture_default_str();
  tasks->add_option("--out", t_out, "output .jsonl")->required();
  cmds.push_back({tasks, [] {
                    if (t_task == "qa")
                      fail("data tasks --task qa: qa samples are cut from a QA file, which only `gsa eval --tasks qa "
                           "--qa-jsonl FILE` reads; data tasks writes the generated tasks ({})",
                           fmt::join(data_task_names(), ", "));
                    tokenizer tok = tokenizer::load(t_tok);
                    int64_t sep = t_sep == -2 ? tok.token_id("<|endoftext|>") : t_sep;
                    std::ofstream f(t_out);
                    if (!f) fail("--out: cannot write '{}'", t_out);
                    for (int64_t i = 0; i < t_n; i++) {
                      train_sample x = make_task_sample(tok, sep, t_haystack, t_task, t_len, t_seed + uint64_t(i),
                                                        false);
                      f << nlohmann::json({{"ids", x.raw}, {"answer_begin", x.answer_begin}}).dump() << "\n";
                    }
                    fmt::print("wrote {} {} samples of ~{} tokens to {}\n", t_n, t_task, t_len, t_out);
                    return 0;
                  }});

  auto* info = data->add_subcommand("info", "Verify a token dataset's shards (checksums) and print its sizes");
  static std::string dir;
  info->add_option("dir", dir, "dataset folder")->required();
  cmds.push_back({info, [] {
                    data::dataset d = data::open_dataset(dir);
                    fmt::print("{}: vocab {}, separator {}\n", dir, d.vocab_size, d.separator);
                    fmt::print("train  {} tokens in {} shard(s)\n", d.train.size(), d.train.shards().size());
                    fmt::print("val    {} tokens in {} shard(s)\n", d.val.size(), d.val.shards().size());
                    fmt::print("all checksums ok\n");
                    return 0;
                  }});
}

}  // namespace gsa::tools
