#include "data/dataset.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/json-util.h"
#include "io/atomic-file.h"

namespace gsa::data {

namespace fs = std::filesystem;

dataset_writer::dataset_writer(std::string dir, prepare_options opt) : dir_(std::move(dir)), opt_(std::move(opt)) {
  if (opt_.vocab_size <= 0) fail("data prepare: the vocabulary size must be positive (got {})", opt_.vocab_size);
  if (opt_.separator >= opt_.vocab_size)
    fail("data prepare: separator id {} is outside the vocabulary of {}", opt_.separator, opt_.vocab_size);
  if (!(opt_.val_fraction >= 0 && opt_.val_fraction < 1))
    fail("data prepare: val_fraction must be in [0, 1) (got {})", opt_.val_fraction);
  if (opt_.block_tokens <= 0 || opt_.shard_tokens <= 0)
    fail("data prepare: block_tokens and shard_tokens must be positive");
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) fail("{}: cannot create the output folder: {}", dir_, ec.message());
  if (fs::exists(fs::path(dir_) / "meta.json"))
    fail("{}: already holds a prepared dataset (meta.json); choose another --out or delete it", dir_);
}

void dataset_writer::push(int32_t id) {
  block_.push_back(id);
  if (int64_t(block_.size()) == opt_.block_tokens) end_block(false);
}

void dataset_writer::add_document(std::span<const int32_t> ids) {
  GSA_ASSERT(!finished_, "add_document after finish");
  for (int32_t id : ids) {
    if (id < 0 || id >= opt_.vocab_size)
      fail("data prepare: document {} has token id {} outside the vocabulary of {}", documents_, id, opt_.vocab_size);
    push(id);
  }
  if (opt_.separator >= 0) push(int32_t(opt_.separator));
  documents_++;
}

void dataset_writer::end_block(bool final) {
  if (block_.empty()) return;
  const double f = opt_.val_fraction;
  bool to_val = std::floor(double(block_index_ + 1) * f) > std::floor(double(block_index_) * f);
  if (final && f > 0 && val_.tokens == 0 && val_buf_.empty() && (train_.tokens > 0 || !train_buf_.empty()))
    to_val = true;  // a small corpus still gets a validation split
  auto& buf = to_val ? val_buf_ : train_buf_;
  buf.insert(buf.end(), block_.begin(), block_.end());
  (to_val ? val_ : train_).tokens += int64_t(block_.size());
  block_.clear();
  block_index_++;
  flush(to_val, false);
}

void dataset_writer::flush(bool is_val, bool force) {
  auto& buf = is_val ? val_buf_ : train_buf_;
  auto& st = is_val ? val_ : train_;
  while (int64_t(buf.size()) >= opt_.shard_tokens || (force && !buf.empty())) {
    size_t n = std::min(buf.size(), size_t(opt_.shard_tokens));
    std::string name = fmt::format("{}-{:05d}.bin", is_val ? "val" : "train", st.shards.size());
    write_shard((fs::path(dir_) / name).string(), std::span<const int32_t>(buf.data(), n), opt_.vocab_size,
                opt_.separator);
    st.shards.push_back(name);
    buf.erase(buf.begin(), buf.begin() + n);
  }
}

void dataset_writer::finish() {
  GSA_ASSERT(!finished_, "finish twice");
  end_block(true);
  flush(false, true);
  flush(true, true);
  finished_ = true;
  if (train_.tokens == 0) fail("data prepare: no training tokens (were the inputs empty?)");
  nlohmann::json m;
  m["format"] = "gsa-tokens";
  m["version"] = 1;
  m["vocab_size"] = opt_.vocab_size;
  m["separator"] = opt_.separator;
  m["block_tokens"] = opt_.block_tokens;
  m["val_fraction"] = opt_.val_fraction;
  m["documents"] = documents_;
  m["train"] = {{"shards", train_.shards}, {"tokens", train_.tokens}};
  m["val"] = {{"shards", val_.shards}, {"tokens", val_.tokens}};
  m["source"] = opt_.source.is_null() ? nlohmann::json::object() : opt_.source;
  write_file_atomic((fs::path(dir_) / "meta.json").string(), m.dump(2) + "\n");
}

token_corpus::token_corpus(std::vector<token_shard> shards) : shards_(std::move(shards)) {
  starts_.push_back(0);
  for (auto& s : shards_) {
    total_ += s.size();
    starts_.push_back(total_);
    vocab_ = std::max(vocab_, s.vocab_size());
  }
}

void token_corpus::read(int64_t begin, std::span<int32_t> out) const {
  GSA_ASSERT(begin >= 0 && begin + int64_t(out.size()) <= total_, "range outside the corpus");
  size_t done = 0;
  // First shard holding `begin`: the last start <= begin.
  size_t s = size_t(std::upper_bound(starts_.begin(), starts_.end(), begin) - starts_.begin()) - 1;
  while (done < out.size()) {
    int64_t off = begin + int64_t(done) - starts_[s];
    int64_t n = std::min<int64_t>(int64_t(out.size() - done), shards_[s].size() - off);
    if (n > 0) shards_[s].read(off, out.subspan(done, size_t(n)));
    done += size_t(std::max<int64_t>(n, 0));
    s++;
  }
}

dataset open_dataset(const std::string& dir, bool verify_checksums) {
  fs::path mp = fs::path(dir) / "meta.json";
  std::ifstream f(mp);
  if (!f) fail("{}: no meta.json; is this a folder written by `gsa data prepare` (and did it finish)?", dir);
  dataset d;
  d.dir = dir;
  const std::string src = mp.string();
  std::stringstream text;
  text << f.rdbuf();
  d.meta = parse_json(text.str(), src);
  using json = nlohmann::json;
  const json& m = d.meta;
  if (!m.is_object() || !m.contains("format") || m["format"] != "gsa-tokens")
    fail("{}: not a gsa token dataset (field 'format' is not \"gsa-tokens\"); run `gsa data prepare`", src);
  auto integer = [&](const char* key) {
    auto it = m.find(key);
    if (it == m.end() || !it->is_number_integer() || (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t(INT64_MAX)))
      fail("{}: field '{}' must be an integer", src, key);
    return it->get<int64_t>();
  };
  d.vocab_size = integer("vocab_size");
  d.separator = integer("separator");
  if (d.vocab_size <= 0 || d.vocab_size > int64_t(INT32_MAX) + 1)
    fail("{}: field 'vocab_size' is {}, outside 1 .. 2^31", src, d.vocab_size);
  // Checked here, not when training reaches the first separator.
  if (d.separator < -1 || d.separator >= d.vocab_size)
    fail("{}: field 'separator' is {}, neither -1 (none) nor a token id below 'vocab_size' {}; run `gsa data "
         "prepare` again", src, d.separator, d.vocab_size);
  for (int split = 0; split < 2; split++) {
    const char* name = split ? "val" : "train";
    auto sp = m.find(name);
    if (sp == m.end() || !sp->is_object() || !sp->contains("shards") || !(*sp)["shards"].is_array())
      fail("{}: field '{}.shards' must be a list of shard file names", src, name);
    std::vector<token_shard> shards;
    for (auto& file : (*sp)["shards"]) {
      // Shards live beside meta.json: other paths would let a bad meta.json read any file.
      const std::string fn = file.is_string() ? file.get<std::string>() : std::string();
      if (fn.empty() || fn.find('/') != std::string::npos || fn == "." || fn == "..")
        fail("{}: field '{}.shards' holds {}, which is not the name of a file beside meta.json", src, name,
             file.dump());
      shards.push_back(token_shard::open((fs::path(dir) / fn).string(), verify_checksums));
      const token_shard& s = shards.back();
      if (s.vocab_size() != d.vocab_size)
        fail("{}: vocabulary {} differs from meta.json's {}", s.path(), s.vocab_size(), d.vocab_size);
      if (s.separator() != d.separator)
        fail("{}: separator {} differs from meta.json's {}; run `gsa data prepare` again", s.path(), s.separator(),
             d.separator);
    }
    (split ? d.val : d.train) = token_corpus(std::move(shards));
  }
  return d;
}

}  // namespace gsa::data
