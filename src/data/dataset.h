// A prepared token dataset: a folder of shards plus meta.json, written by `gsa data prepare`.
//   DIR/train-00000.bin, train-00001.bin, ...   token shards (shard.h) of the training split
//   DIR/val-00000.bin, ...                        the validation split
//   DIR/meta.json   {"format": "gsa-tokens", "version": 1, "vocab_size", "separator", "block_tokens",
//                    "val_fraction", "train": {"shards": [...], "tokens"}, "val": {...}, "source": {...}}
// Documents are concatenated with the separator id after each one. The concatenation is cut into blocks of
// block_tokens; block k goes to validation when floor((k+1) f) > floor(k f) (f = val_fraction), an even,
// streaming, deterministic split of exactly ~f of the tokens. If no block went to validation (a small corpus),
// the final block does. The data library takes ids only; tokenizing is the CLI's job.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/shard.h"

namespace gsa::data {

struct prepare_options {
  int64_t vocab_size = 0;            // every id must be below it
  int64_t separator = -1;            // written after every document (-1: nothing between documents)
  double val_fraction = 0.01;        // in [0, 1)
  int64_t block_tokens = 4096;       // granularity of the train/validation split
  int64_t shard_tokens = 100000000;  // tokens per shard file at most
  nlohmann::json source;             // recorded in meta.json (tokenizer, inputs)
};

struct split_stats {
  std::vector<std::string> shards;  // file names relative to the folder
  int64_t tokens = 0;
};

// Streams documents into shards; finish() writes the last shards and meta.json (atomically, last, so a folder
// without meta.json is an unfinished one).
class dataset_writer {
 public:
  dataset_writer(std::string dir, prepare_options opt);
  void add_document(std::span<const int32_t> ids);
  void finish();
  const split_stats& train() const { return train_; }
  const split_stats& val() const { return val_; }
  int64_t documents() const { return documents_; }

 private:
  void push(int32_t id);
  void end_block(bool final);
  void flush(bool is_val, bool force);
  std::string dir_;
  prepare_options opt_;
  std::vector<int32_t> block_, train_buf_, val_buf_;
  int64_t block_index_ = 0, documents_ = 0;
  split_stats train_, val_;
  bool finished_ = false;
};

// The shards of one split, addressed as one concatenated token space.
class token_corpus {
 public:
  token_corpus() = default;
  explicit token_corpus(std::vector<token_shard> shards);
  int64_t size() const { return total_; }
  int64_t vocab_size() const { return vocab_; }
  const std::vector<token_shard>& shards() const { return shards_; }
  // Tokens [begin, begin + out.size()) of the concatenation, across shard boundaries.
  void read(int64_t begin, std::span<int32_t> out) const;

 private:
  std::vector<token_shard> shards_;
  std::vector<int64_t> starts_;  // (shards + 1) prefix sums
  int64_t total_ = 0, vocab_ = 0;
};

struct dataset {
  std::string dir;
  nlohmann::json meta;
  int64_t vocab_size = 0, separator = -1;
  token_corpus train, val;
};

// Opens DIR (meta.json and every shard, checksums verified). Throws gsa::error naming the file at fault.
dataset open_dataset(const std::string& dir, bool verify_checksums = true);

}  // namespace gsa::data
