// Token shards and their checksums (src/data/shard): the input is a whole shard file. Opened with its checksum
// verified, every token must be readable and below the vocabulary size the header promises, and the separator
// must be -1 or a token id. Random bytes almost never carry a matching FNV-1a checksum, so each input is also
// tried with its checksum field recomputed (for the version its header names): that copy reaches the checks
// behind the checksum (ids against the vocabulary, the reads).
#include <cstring>

#include "data/shard.h"
#include "fuzz-util.h"

namespace {

void check(const std::string& path) {
  using namespace gsa;
  fuzz::expect_clean(path, [&] {
    const data::token_shard s = data::token_shard::open(path);
    if (s.separator() < -1 || s.separator() >= s.vocab_size()) fuzz::defect("the separator is not a token id", path);
    std::vector<int32_t> all(size_t(s.size()));
    s.read(0, all);
    for (int64_t i = 0; i < s.size(); i++)
      if (all[size_t(i)] < 0 || all[size_t(i)] >= s.vocab_size() || s.at(i) != all[size_t(i)])
        fuzz::defect("a token id outside the shard's vocabulary was accepted", path);
  });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gsa;
  std::string bytes(reinterpret_cast<const char*>(data), size);
  check(fuzz::write_input("train-00000.bin", bytes));
  if (size < data::shard_header_bytes) return 0;
  const size_t hb = data::shard_header_bytes;
  const uint64_t h0 = bytes[8] == 1 ? data::fnv1a64(nullptr, 0) : data::fnv1a64(bytes.data() + 40, hb - 40);
  const uint64_t sum = data::fnv1a64(bytes.data() + hb, size - hb, h0);
  std::memcpy(&bytes[32], &sum, 8);
  check(fuzz::write_input("val-00000.bin", bytes));
  return 0;
}
