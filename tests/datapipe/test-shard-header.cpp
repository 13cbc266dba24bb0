// Shard header bytes 40-63 and meta.json (issue 12): the separator and the reserved bytes used to be neither
// validated nor checksummed, a separator outside the vocabulary was found only when training reached it, and a
// shard whose checksum matched could hold ids past the vocabulary (an embedding row out of range).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "data/dataset.h"
#include "data/shard.h"
#include "io/io-test-util.h"

namespace gsa::data {
namespace {

namespace fs = std::filesystem;

struct scratch {
  fs::path dir = fs::temp_directory_path() / fmt::format("gsa-test-shard-header-{}", ::getpid());
  scratch() {
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~scratch() { fs::remove_all(dir); }
  std::string operator/(const std::string& f) const { return (dir / f).string(); }
};

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
void spit(const std::string& p, const std::string& b) { std::ofstream(p, std::ios::binary) << b; }
template <typename T>
void put(std::string& b, size_t at, T v) {
  std::memcpy(&b[at], &v, sizeof v);
}
// The checksum gsa writes: FNV-1a 64 over header bytes 40-63, then the payload (version 2).
uint64_t v2_sum(const std::string& b) {
  return fnv1a64(b.data() + shard_header_bytes, b.size() - shard_header_bytes, fnv1a64(b.data() + 40, 24));
}

using test::error_of;  // io/io-test-util.h
#define EXPECT_CONTAINS(msg, sub) EXPECT_NE(std::string(msg).find(sub), std::string::npos) << "message: " << (msg)

TEST(ShardHeader, SeparatorAndReservedBytesAreChecked) {
  scratch d;
  const std::string p = d / "s.bin";
  write_shard(p, std::vector<int32_t>{1, 2, 3, 9, 4}, 10, 9);
  const std::string good = slurp(p);
  ASSERT_EQ(token_shard::open(p).separator(), 9);
  ASSERT_EQ(uint32_t(good[8]), 2u) << "gsa writes version 2";
  ASSERT_EQ(v2_sum(good), [&] { uint64_t s; std::memcpy(&s, good.data() + 32, 8); return s; }());

  // The separator changed to another valid id: only the checksum can tell.
  std::string b = good;
  put<int64_t>(b, 40, 3);
  spit(p, b);
  EXPECT_CONTAINS(error_of([&] { token_shard::open(p); }), "checksum mismatch");
  // Out of range separators fail by value, even without the checksum pass (and with a matching checksum).
  for (int64_t sep : {int64_t(10), int64_t(-7), int64_t(1) << 40}) {
    b = good;
    put<int64_t>(b, 40, sep);
    put<uint64_t>(b, 32, v2_sum(b));
    spit(p, b);
    const std::string m = error_of([&] { token_shard::open(p, /*verify_checksum=*/false); });
    EXPECT_CONTAINS(m, p);
    EXPECT_CONTAINS(m, "separator " + std::to_string(sep));
  }
  b = good;
  b[57] = 1;
  put<uint64_t>(b, 32, v2_sum(b));
  spit(p, b);
  EXPECT_CONTAINS(error_of([&] { token_shard::open(p); }), "header byte 57");
  // Bytes per token must match the vocabulary (a 4-byte shard header over a 2-byte payload reads garbage).
  write_shard(p, std::vector<int32_t>{1, 2, 3, 4}, 10, -1);
  b = slurp(p);
  put<uint32_t>(b, 12, 4);  // with a count of 2 the size matches: 4 two-byte ids read as 2 four-byte ones
  put<uint64_t>(b, 16, 2);
  spit(p, b);
  EXPECT_CONTAINS(error_of([&] { token_shard::open(p); }), "bytes per token");
  EXPECT_NO_THROW(write_shard(p, std::vector<int32_t>{1}, 10, -1));
  EXPECT_CONTAINS(error_of([&] { write_shard(p, std::vector<int32_t>{1}, 10, 10); }), "separator 10");
}

TEST(ShardHeader, IdsPastTheVocabularyWithAMatchingChecksum) {
  scratch d;
  const std::string p = d / "s.bin";
  write_shard(p, std::vector<int32_t>{1, 2, 3}, 10, -1);
  std::string b = slurp(p);
  put<uint16_t>(b, shard_header_bytes + 2, 60000);  // token 1 becomes 60000 in a 10-token vocabulary
  put<uint64_t>(b, 32, v2_sum(b));
  spit(p, b);
  const std::string m = error_of([&] { token_shard::open(p); });
  EXPECT_CONTAINS(m, "token 1 has id 60000");
  EXPECT_CONTAINS(m, p);
}

TEST(ShardHeader, Version1ShardsStillRead) {
  scratch d;
  const std::string p = d / "s.bin";
  write_shard(p, std::vector<int32_t>{5, 6, 7}, 10, 9);
  std::string b = slurp(p);
  put<uint32_t>(b, 8, 1);
  put<uint64_t>(b, 32, fnv1a64(b.data() + shard_header_bytes, b.size() - shard_header_bytes));
  spit(p, b);
  const token_shard s = token_shard::open(p);
  EXPECT_EQ(s.at(2), 7);
  EXPECT_EQ(s.separator(), 9);
}

TEST(DatasetMeta, SeparatorCheckedAgainstTheVocabularyAtOpen) {
  scratch d;
  prepare_options o;
  o.vocab_size = 50;
  o.separator = 49;
  o.val_fraction = 0.5;
  o.block_tokens = 4;
  {
    dataset_writer w(d.dir.string(), o);
    for (int k = 0; k < 6; k++) w.add_document(std::vector<int32_t>{1, 2, 3, int32_t(k)});
    w.finish();
  }
  ASSERT_EQ(open_dataset(d.dir.string()).separator, 49);
  const std::string meta = slurp(d / "meta.json");
  auto with = [&](const std::string& from, const std::string& to) {
    std::string m = meta;
    size_t at = m.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    if (at != std::string::npos) m.replace(at, from.size(), to);
    spit(d / "meta.json", m);
    return error_of([&] { open_dataset(d.dir.string()); });
  };
  std::string m = with("\"separator\": 49", "\"separator\": 50");
  EXPECT_CONTAINS(m, "meta.json");
  EXPECT_CONTAINS(m, "'separator' is 50");
  EXPECT_CONTAINS(with("\"separator\": 49", "\"separator\": -7"), "'separator' is -7");
  EXPECT_CONTAINS(with("\"separator\": 49", "\"separator\": 3"), "separator 49 differs from meta.json's 3");
  EXPECT_CONTAINS(with("\"separator\": 49", "\"separator\": \"49\""), "field 'separator' must be an integer");
  EXPECT_CONTAINS(with("\"train-00000.bin\"", "\"../train-00000.bin\""), "not the name of a file beside meta.json");
}

}  // namespace
}  // namespace gsa::data
