// `gsa tokenize`: text -> ids (or ids -> text with --decode) with a Hugging Face tokenizer.json, and
// `gsa tokenizer train`: a byte-level BPE with the gist special tokens trained on text files.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/bpe-trainer.h"
#include "tokenizer/tokenizer.h"
#include "tools/commands.h"

namespace gsa::tools {
namespace {

std::string read_input(const std::string& file) {
  std::stringstream ss;
  if (file.empty() || file == "-") {
    ss << std::cin.rdbuf();
  } else {
    std::ifstream f(file, std::ios::binary);
    if (!f) fail("cannot open {}", file);
    ss << f.rdbuf();
  }
  return ss.str();
}

// Ids as written by `gsa tokenize`: a JSON array or integers separated by spaces, commas or newlines.
std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  size_t i = 0;
  while (i < s.size()) {
    char c = s[i];
    if (c == '-' || (c >= '0' && c <= '9')) {
      size_t used = 0;
      long long v = 0;
      try {
        v = std::stoll(s.substr(i, 24), &used);
      } catch (const std::exception&) {  // "-" alone, or more digits than a long long holds
        const size_t end = s.find_first_of(" \t\r\n,[]", i + 1);
        fail("--decode: '{}' at byte {} is not a token id; give integers or a JSON array of them",
             s.substr(i, std::min<size_t>(end == std::string::npos ? s.size() - i : end - i, 24)), i);
      }
      if (v < 0 || v > INT32_MAX) fail("--decode: token id {} is out of range (0 to 2^31 - 1)", v);
      ids.push_back(int32_t(v));
      i += used;
    } else if (c == '[' || c == ']' || c == ',' || std::isspace(static_cast<unsigned char>(c))) {
      i++;
    } else {
      fail("--decode expects token ids (integers or a JSON array), found '{}' at byte {}", c, i);
    }
  }
  return ids;
}

struct tokenize_opts {
  std::string tokenizer, file;
  bool json = false, decode = false, bench = false, add_special = false;
};

int run_tokenize(const tokenize_opts& o) {
  tokenizer t = tokenizer::load(o.tokenizer);
  std::string input = read_input(o.file);
  if (o.decode) {
    std::string text = t.decode(parse_ids(input));
    std::fwrite(text.data(), 1, text.size(), stdout);
    return 0;
  }
  auto t0 = std::chrono::steady_clock::now();
  std::vector<int32_t> ids = t.encode(input, o.add_special);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (o.bench) {
    std::printf("encoded %.3f MB into %zu ids in %.3f s: %.2f MB/s\n", input.size() / 1e6, ids.size(), s,
                input.size() / 1e6 / s);
    return 0;
  }
  std::string out = o.json ? "[" : "";
  for (size_t i = 0; i < ids.size(); i++) {
    if (i) out += o.json ? "," : " ";
    out += std::to_string(ids[i]);
  }
  out += o.json ? "]\n" : "\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

struct train_opts {
  size_t vocab = 32000, min_frequency = 2;
  std::vector<std::string> inputs;
  std::string out;
};

int run_train(const train_opts& o) {
  std::vector<std::string> texts;
  for (const auto& f : o.inputs) texts.push_back(read_input(f));
  tok::bpe_train_options opt;
  opt.vocab_size = o.vocab;
  opt.min_frequency = o.min_frequency;
  auto j = tok::train_bpe(texts, opt);
  tok::write_tokenizer(j, o.out);
  std::printf("wrote %s/tokenizer.json: %zu merges, %zu special tokens\n", o.out.c_str(),
              j["model"]["merges"].size(), j["added_tokens"].size());
  return 0;
}

}  // namespace

void register_tokenize(CLI::App& app, command_list& cmds) {
  auto o = std::make_shared<tokenize_opts>();
  auto* sub = app.add_subcommand("tokenize", "Encode text into token ids (or --decode ids into text)");
  sub->add_option("--tokenizer", o->tokenizer, "tokenizer.json, or a folder holding one")->required();
  sub->add_option("--file", o->file, "input file (default: stdin)");
  sub->add_flag("--json", o->json, "print the ids as one JSON array");
  sub->add_flag("--decode", o->decode, "read ids (JSON array or whitespace-separated) and print the text");
  sub->add_flag("--add-special", o->add_special, "apply the post-processor template (e.g. BOS)");
  sub->add_flag("--bench", o->bench, "print encode throughput instead of the ids");
  cmds.push_back({sub, [o] { return run_tokenize(*o); }});

  auto t = std::make_shared<train_opts>();
  auto* group = app.add_subcommand("tokenizer", "Tokenizer tools");
  group->require_subcommand(1);
  auto* train = group->add_subcommand("train", "Train a byte-level BPE tokenizer.json with the gist tokens");
  train->add_option("--vocab", t->vocab, "vocabulary size, special tokens included")->required();
  train->add_option("--input", t->inputs, "UTF-8 text files")->required();
  train->add_option("--out", t->out, "output folder for tokenizer.json and tokenizer_config.json")->required();
  train->add_option("--min-frequency", t->min_frequency, "never merge a pair seen fewer times")
      ->capture_default_str();
  cmds.push_back({train, [t] { return run_train(*t); }});
}

}  // namespace gsa::tools
