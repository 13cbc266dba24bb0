// Token shards: one binary file of token ids, written once by `gsa data prepare`, read (mmap'ed) by the loader.
// Layout, little-endian, 64-byte header then the payload:
//   0  char[8]  magic "GSATOK01"
//   8  u32      format version (2; version 1 is still read)
//  12  u32      bytes per token: 2 (u16, vocabulary <= 65536) or 4 (u32)
//  16  u64      token count N
//  24  u64      vocabulary size (every id < it)
//  32  u64      checksum: FNV-1a 64 of header bytes 40-63 and then the payload (version 1: of the payload only)
//  40  i64      separator id written between documents (-1: none, else < the vocabulary size)
//  48  u8[16]   zero
//  64  N tokens
// Opening checks every header field (bytes 0-39 by value, 40-63 by value and by the checksum), the exact file
// size (a truncated or extended shard fails) and, when verifying, the checksum and that every id is below the
// vocabulary size, so a bad shard fails at open() with one message naming the file, never later with garbage
// windows or an out-of-range embedding row.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace gsa::data {

constexpr int shard_version = 2;
constexpr size_t shard_header_bytes = 64;

uint64_t fnv1a64(const void* data, size_t n, uint64_t h = 0xcbf29ce484222325ull);
// 2 when every id fits u16 (vocab_size <= 65536), else 4.
int shard_token_bytes(int64_t vocab_size);

// Writes a whole shard atomically (tmp file + rename). Throws gsa::error when an id is outside [0, vocab_size).
void write_shard(const std::string& path, std::span<const int32_t> ids, int64_t vocab_size, int64_t separator = -1);

class token_shard {
 public:
  token_shard() = default;
  // Validates as described above; verify_checksum = false skips the payload pass (the checksum and the ids; the
  // header and the size are still checked).
  static token_shard open(const std::string& path, bool verify_checksum = true);

  const std::string& path() const { return path_; }
  int64_t size() const { return count_; }
  int64_t vocab_size() const { return vocab_; }
  int64_t separator() const { return separator_; }
  int token_bytes() const { return token_bytes_; }
  int32_t at(int64_t i) const;
  // Copies tokens [begin, begin + out.size()) into out (asserts the range is inside the shard).
  void read(int64_t begin, std::span<int32_t> out) const;

 private:
  struct mapping;
  std::string path_;
  std::shared_ptr<const mapping> map_;
  const unsigned char* payload_ = nullptr;
  int64_t count_ = 0, vocab_ = 0, separator_ = -1;
  int token_bytes_ = 2;
};

}  // namespace gsa::data
