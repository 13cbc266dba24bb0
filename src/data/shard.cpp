#include "data/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"
#include "io/atomic-file.h"

namespace gsa::data {

static const char k_magic[8] = {'G', 'S', 'A', 'T', 'O', 'K', '0', '1'};

uint64_t fnv1a64(const void* data, size_t n, uint64_t h) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

int shard_token_bytes(int64_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

template <typename T>
static void put(unsigned char* dst, T v) {
  std::memcpy(dst, &v, sizeof(T));  // the engine targets little-endian hosts (x86-64, aarch64)
}
template <typename T>
static T get(const unsigned char* src) {
  T v;
  std::memcpy(&v, src, sizeof(T));
  return v;
}

void write_shard(const std::string& path, std::span<const int32_t> ids, int64_t vocab_size, int64_t separator) {
  if (vocab_size <= 0 || vocab_size > int64_t(INT32_MAX) + 1)
    fail("{}: vocabulary size {} is out of range", path, vocab_size);
  const int tb = shard_token_bytes(vocab_size);
  std::vector<unsigned char> payload(ids.size() * size_t(tb));
  for (size_t i = 0; i < ids.size(); i++) {
    int32_t id = ids[i];
    if (id < 0 || id >= vocab_size)
      fail("{}: token {} has id {}, outside the vocabulary [0, {}); check --tokenizer and --separator", path, i, id,
           vocab_size);
    if (tb == 2) put(&payload[i * 2], uint16_t(id));
    else put(&payload[i * 4], uint32_t(id));
  }
  if (separator < -1 || separator >= vocab_size)
    fail("{}: separator {} is not a token id of the vocabulary [0, {}) nor -1 (none)", path, separator, vocab_size);
  unsigned char hdr[shard_header_bytes] = {};
  std::memcpy(hdr, k_magic, 8);
  put(hdr + 8, uint32_t(shard_version));
  put(hdr + 12, uint32_t(tb));
  put(hdr + 16, uint64_t(ids.size()));
  put(hdr + 24, uint64_t(vocab_size));
  put(hdr + 40, int64_t(separator));
  put(hdr + 32, fnv1a64(payload.data(), payload.size(), fnv1a64(hdr + 40, shard_header_bytes - 40)));
  atomic_file_writer w(path);
  w.write(hdr, sizeof hdr);
  w.write(payload.data(), payload.size());
  w.commit();
}

struct token_shard::mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~mapping() {
    if (addr) ::munmap(addr, size);
  }
};

token_shard token_shard::open(const std::string& path, bool verify_checksum) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail("{}: cannot open the token shard: {}", path, std::strerror(errno));
  struct stat stt {};
  if (::fstat(fd, &stt) != 0) {
    int e = errno;
    ::close(fd);
    fail("{}: cannot stat the token shard: {}", path, std::strerror(e));
  }
  const size_t size = size_t(stt.st_size);
  if (size < shard_header_bytes) {
    ::close(fd);
    fail("{}: {} bytes, shorter than the {}-byte shard header: the file is truncated or not a token shard; "
         "run `gsa data prepare` again", path, size, shard_header_bytes);
  }
  void* addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  ::close(fd);
  if (addr == MAP_FAILED) fail("{}: cannot mmap the token shard: {}", path, std::strerror(map_errno));
  auto m = std::make_shared<mapping>();
  m->addr = addr;
  m->size = size;
  const unsigned char* p = static_cast<const unsigned char*>(addr);

  if (std::memcmp(p, k_magic, 8) != 0) fail("{}: not a token shard (magic is not GSATOK01)", path);
  uint32_t version = get<uint32_t>(p + 8), tb = get<uint32_t>(p + 12);
  if (version != 1 && version != uint32_t(shard_version))
    fail("{}: shard format version {} is not supported (this build reads versions 1 and {})", path, version,
         shard_version);
  if (tb != 2 && tb != 4) fail("{}: header says {} bytes per token; only 2 (u16) and 4 (u32) exist", path, tb);
  uint64_t count = get<uint64_t>(p + 16), vocab = get<uint64_t>(p + 24), sum = get<uint64_t>(p + 32);
  if (count > (size - shard_header_bytes) / tb || size != shard_header_bytes + count * tb)
    fail("{}: the header promises {} tokens ({} bytes) but the file has {} payload bytes: the shard is truncated "
         "or was cut while being written; run `gsa data prepare` again", path, count, count * tb,
         size - shard_header_bytes);
  if (vocab == 0 || vocab > uint64_t(INT32_MAX) + 1) fail("{}: vocabulary size {} in the header is invalid", path, vocab);
  if (tb != uint32_t(shard_token_bytes(int64_t(vocab))))
    fail("{}: header says {} bytes per token for a vocabulary of {} (gsa writes {}): the header is corrupt", path, tb,
         vocab, shard_token_bytes(int64_t(vocab)));
  const int64_t separator = get<int64_t>(p + 40);
  if (separator < -1 || separator >= int64_t(vocab))
    fail("{}: the header's separator {} is neither -1 (none) nor a token id below the vocabulary size {}: the header "
         "is corrupt; run `gsa data prepare` again", path, separator, vocab);
  for (size_t i = 48; i < shard_header_bytes; i++)
    if (p[i] != 0)
      fail("{}: header byte {} is {} but bytes 48-63 must be zero: the header is corrupt or from a newer gsa", path, i,
           int(p[i]));
  if (verify_checksum) {
    const uint64_t h0 = version == 1 ? fnv1a64(nullptr, 0) : fnv1a64(p + 40, shard_header_bytes - 40);
    const uint64_t got = fnv1a64(p + shard_header_bytes, size - shard_header_bytes, h0);
    if (got != sum)
      fail("{}: checksum mismatch (header {:016x}, computed {:016x} over {}the payload): the shard is corrupt; run "
           "`gsa data prepare` again", path, sum, got, version == 1 ? "" : "header bytes 40-63 and ");
    const unsigned char* q = p + shard_header_bytes;
    for (uint64_t i = 0; i < count; i++) {
      const uint64_t id = tb == 2 ? get<uint16_t>(q + i * 2) : get<uint32_t>(q + i * 4);
      if (id >= vocab)
        fail("{}: token {} has id {}, not below the vocabulary size {} in the header: the shard is corrupt; run "
             "`gsa data prepare` again", path, i, id, vocab);
    }
  }
  token_shard s;
  s.path_ = path;
  s.map_ = m;
  s.payload_ = p + shard_header_bytes;
  s.count_ = int64_t(count);
  s.vocab_ = int64_t(vocab);
  s.separator_ = separator;
  s.token_bytes_ = int(tb);
  return s;
}

int32_t token_shard::at(int64_t i) const {
  GSA_ASSERT(i >= 0 && i < count_, "token {} outside shard of {}", i, count_);
  return token_bytes_ == 2 ? int32_t(get<uint16_t>(payload_ + i * 2)) : int32_t(get<uint32_t>(payload_ + i * 4));
}

void token_shard::read(int64_t begin, std::span<int32_t> out) const {
  GSA_ASSERT(begin >= 0 && begin + int64_t(out.size()) <= count_, "range [{}, +{}) outside shard of {}", begin,
             out.size(), count_);
  if (token_bytes_ == 2) {
    for (size_t i = 0; i < out.size(); i++) out[i] = int32_t(get<uint16_t>(payload_ + (begin + i) * 2));
  } else {
    for (size_t i = 0; i < out.size(); i++) out[i] = int32_t(get<uint32_t>(payload_ + (begin + i) * 4));
  }
}

}  // namespace gsa::data
