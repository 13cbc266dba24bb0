// Shared by the trainer tests: a temporary folder and a tiny learnable token dataset.
#pragma once
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "data/dataset.h"
#include "train/options.h"

namespace gsa::test {

inline std::filesystem::path train_temp_dir(const std::string& name) {
  auto p = std::filesystem::temp_directory_path() / fmt::format("gsa-test-train-{}-{}", name, ::getpid());
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

// Documents that follow one fixed permutation from a random start (token -> perm[token]): a bigram rule a tiny
// model learns in a few dozen steps.
inline std::string make_tiny_dataset(const std::filesystem::path& dir, int64_t vocab = 40) {
  data::prepare_options po;
  po.vocab_size = vocab;
  po.separator = vocab - 1;
  po.val_fraction = 0.1;
  po.block_tokens = 64;
  data::dataset_writer w(dir.string(), po);
  rng r(99);
  std::vector<int32_t> perm(size_t(vocab - 1));
  for (size_t i = 0; i < perm.size(); i++) perm[i] = int32_t(i);
  for (size_t i = perm.size() - 1; i > 0; i--) std::swap(perm[i], perm[r.below(i + 1)]);
  for (int d = 0; d < 40; d++) {
    std::vector<int32_t> doc{int32_t(r.below(uint64_t(vocab - 1)))};
    for (int i = 1; i < 60; i++) doc.push_back(perm[size_t(doc.back())]);
    w.add_document(doc);
  }
  w.finish();
  return dir.string();
}

inline train_options tiny_run(const std::string& data, const std::string& out) {
  train_options o = default_train_options();
  o.preset = "tiny";
  o.data = data;
  o.out = out;
  o.seq_len = 32;
  o.gsa = {{"chunk", {4}}, {"sink", 2}, {"select", "fixed"}, {"topk", 2}};
  o.steps = 6;
  o.warmup = 2;
  o.lr = 1e-2;
  o.eval_every = 3;
  o.val_windows = 2;
  o.save_every = 2;
  o.keep_checkpoints = 2;
  return o;
}

// The values of `key` in a run's log.jsonl, in order (records without it, or with null, skipped).
inline std::vector<double> logged(const std::filesystem::path& log, const char* key) {
  std::vector<double> v;
  std::ifstream f(log);
  std::string line;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains(key) && !j[key].is_null()) v.push_back(j[key]);
  }
  return v;
}

}  // namespace gsa::test
