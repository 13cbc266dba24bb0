// Token shards, prepared datasets and the window loader: exact round trips at both token widths, every kind of
// damaged shard rejected at open with a message naming the problem, the train/validation split adding up, and
// windows that are a pure function of the seed (and of the saved loader state).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/shard.h"

namespace gsa::data {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / fmt::format("gsa-test-datapipe-{}-{}", name, ::getpid());
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

std::vector<int32_t> random_ids(size_t n, int64_t vocab, uint64_t seed) {
  rng r(seed);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = int32_t(r.below(uint64_t(vocab)));
  return v;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const gsa::error& e) {
    return e.what();
  }
  return "";
}

TEST(Shard, RoundTripU16AndU32) {
  auto dir = temp_dir("rt");
  for (int64_t vocab : {int64_t(65536), int64_t(151936)}) {
    auto ids = random_ids(1000, vocab, 5);
    ids[0] = int32_t(vocab - 1);  // the largest id survives the narrow type
    auto path = (dir / fmt::format("s{}.bin", vocab)).string();
    write_shard(path, ids, vocab, 7);
    token_shard s = token_shard::open(path);
    EXPECT_EQ(s.token_bytes(), vocab <= 65536 ? 2 : 4);
    EXPECT_EQ(fs::file_size(path), shard_header_bytes + ids.size() * s.token_bytes());
    ASSERT_EQ(s.size(), 1000);
    EXPECT_EQ(s.vocab_size(), vocab);
    EXPECT_EQ(s.separator(), 7);
    std::vector<int32_t> back(1000);
    s.read(0, back);
    EXPECT_EQ(back, ids);
    EXPECT_EQ(s.at(999), ids[999]);
  }
  EXPECT_NE(error_of([&] { write_shard((dir / "bad.bin").string(), std::vector<int32_t>{3, 70000}, 65536); }), "");
  fs::remove_all(dir);
}

TEST(Shard, DamagedShardsAreRejected) {
  auto dir = temp_dir("bad");
  auto path = (dir / "s.bin").string();
  write_shard(path, random_ids(500, 1000, 1), 1000);
  auto bytes = [&] {
    std::ifstream f(path, std::ios::binary);
    return std::vector<char>((std::istreambuf_iterator<char>(f)), {});
  }();
  auto write_bytes = [&](const std::vector<char>& b) {
    auto p = (dir / "damaged.bin").string();
    std::ofstream(p, std::ios::binary).write(b.data(), std::streamsize(b.size()));
    return p;
  };
  auto truncated = bytes;
  truncated.resize(bytes.size() - 3);
  EXPECT_NE(error_of([&] { token_shard::open(write_bytes(truncated)); }).find("truncated"), std::string::npos);
  truncated.resize(20);
  EXPECT_NE(error_of([&] { token_shard::open(write_bytes(truncated)); }).find("truncated"), std::string::npos);
  auto flipped = bytes;
  flipped[shard_header_bytes + 101] ^= 0x10;
  EXPECT_NE(error_of([&] { token_shard::open(write_bytes(flipped)); }).find("checksum"), std::string::npos);
  EXPECT_NO_THROW(token_shard::open(write_bytes(flipped), /*verify_checksum=*/false));
  auto magic = bytes;
  magic[0] = 'X';
  EXPECT_NE(error_of([&] { token_shard::open(write_bytes(magic)); }).find("magic"), std::string::npos);
  auto version = bytes;
  version[8] = 9;
  EXPECT_NE(error_of([&] { token_shard::open(write_bytes(version)); }).find("version"), std::string::npos);
  EXPECT_NE(error_of([&] { token_shard::open((dir / "missing.bin").string()); }).find("missing.bin"), std::string::npos);
  fs::remove_all(dir);
}

// Documents of known content: the concatenation of both splits (in block order) is the documents joined with
// separators, and the validation share is the even 1-in-4 of blocks.
TEST(Dataset, PrepareSplitsAndReopens) {
  auto dir = temp_dir("prep");
  prepare_options o;
  o.vocab_size = 300;
  o.separator = 299;
  o.val_fraction = 0.25;
  o.block_tokens = 10;
  o.shard_tokens = 25;
  std::vector<int32_t> all;
  {
    dataset_writer w(dir.string(), o);
    for (int d = 0; d < 20; d++) {
      auto doc = random_ids(size_t(3 + d % 7), 299, uint64_t(d));
      w.add_document(doc);
      all.insert(all.end(), doc.begin(), doc.end());
      all.push_back(299);
    }
    w.finish();
  }
  dataset ds = open_dataset(dir.string());
  EXPECT_EQ(ds.vocab_size, 300);
  EXPECT_EQ(ds.separator, 299);
  EXPECT_EQ(ds.train.size() + ds.val.size(), int64_t(all.size()));
  const int64_t blocks = (int64_t(all.size()) + 9) / 10;
  int64_t val_blocks = 0;
  std::vector<int32_t> tr, va;
  for (int64_t k = 0; k < blocks; k++) {
    bool v = (k + 1) / 4 > k / 4;
    val_blocks += v;
    auto& dst = v ? va : tr;
    dst.insert(dst.end(), all.begin() + k * 10, all.begin() + std::min<int64_t>((k + 1) * 10, all.size()));
  }
  EXPECT_GT(val_blocks, 0);
  std::vector<int32_t> got_tr(size_t(ds.train.size())), got_va(size_t(ds.val.size()));
  ds.train.read(0, got_tr);  // crosses the 25-token shard boundaries
  ds.val.read(0, got_va);
  EXPECT_EQ(got_tr, tr);
  EXPECT_EQ(got_va, va);
  EXPECT_GT(ds.train.shards().size(), 2u);
  // An existing dataset is not overwritten.
  EXPECT_NE(error_of([&] { dataset_writer(dir.string(), o); }).find("already"), std::string::npos);
  fs::remove_all(dir);
}

TEST(Dataset, SmallCorpusStillGetsValidation) {
  auto dir = temp_dir("small");
  prepare_options o;
  o.vocab_size = 50;
  o.val_fraction = 0.01;
  o.block_tokens = 8;
  dataset_writer w(dir.string(), o);
  w.add_document(random_ids(30, 50, 2));
  w.finish();
  EXPECT_EQ(w.val().tokens, 6);  // the final partial block
  EXPECT_EQ(w.train().tokens, 24);
  fs::remove_all(dir);
}

TEST(Loader, WindowsAreDeterministicFromTheSeed) {
  auto dir = temp_dir("load");
  auto ids = random_ids(5000, 1000, 9);
  write_shard((dir / "a.bin").string(), std::span<const int32_t>(ids.data(), 3000), 1000);
  write_shard((dir / "b.bin").string(), std::span<const int32_t>(ids.data() + 3000, 2000), 1000);
  token_corpus c({token_shard::open((dir / "a.bin").string()), token_shard::open((dir / "b.bin").string())});
  ASSERT_EQ(c.size(), 5000);
  window_loader a(c, 64, 42), b(c, 64, 42), other(c, 64, 43);
  std::vector<int32_t> wa, wb, wo;
  bool any_differs = false, crossed = false;
  nlohmann::json mid;
  std::vector<std::vector<int32_t>> after_mid;
  for (int i = 0; i < 200; i++) {
    if (i == 100) mid = a.state();
    int64_t off = a.peek_offset();
    a.next(wa);
    b.next(wb);
    other.next(wo);
    EXPECT_EQ(wa, wb);
    any_differs |= wa != wo;
    ASSERT_TRUE(off >= 0 && off + 64 <= 5000);
    EXPECT_TRUE(std::equal(wa.begin(), wa.end(), ids.begin() + off)) << "window = corpus[offset, +64)";
    crossed |= off < 3000 && off + 64 > 3000;
    if (i >= 100) after_mid.push_back(wa);
  }
  EXPECT_TRUE(any_differs);
  EXPECT_TRUE(crossed) << "some window crosses the shard boundary";
  window_loader resumed(c, 64, 0);
  resumed.set_state(mid);
  EXPECT_EQ(resumed.drawn(), 100);
  for (auto& w : after_mid) {
    resumed.next(wa);
    EXPECT_EQ(wa, w);
  }
  auto fixed = fixed_windows(c, 64, 5);
  ASSERT_EQ(fixed.size(), 5u);
  EXPECT_TRUE(std::equal(fixed[0].begin(), fixed[0].end(), ids.begin()));
  EXPECT_TRUE(std::equal(fixed[4].begin(), fixed[4].end(), ids.end() - 64));
  EXPECT_NE(error_of([&] { window_loader(c, 6000, 1); }).find("fewer than one window"), std::string::npos);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace gsa::data
