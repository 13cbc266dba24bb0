// Decode attention over the host cache: the CPU kernel of backend/cpu/decode-attention.h with the cache's page
// table as the row source. Contract in decode-attention.h.
#include "infer/decode-attention.h"

#include "backend/cpu/decode-attention.h"
#include "core/error.h"

namespace gsa::infer {

namespace {

struct cache_rows {
  const kv::kv_cache& cache;
  int layer;
  const std::vector<std::vector<kv::kv_addr>>& lists;
  int count(int h) const { return int(lists[h].size()); }
  const float* key(int h, int j) const { return cache.key(layer, lists[h][j], h); }
  const float* value(int h, int j) const { return cache.value(layer, lists[h][j], h); }
};

}  // namespace

void decode_attention(float* out, const float* q, const kv::kv_cache& cache, int layer,
                      const std::vector<std::vector<kv::kv_addr>>& lists, int Hq,
                      std::vector<std::vector<float>>* weights) {
  const int Hkv = cache.layout().n_kv_heads, D = cache.layout().head_dim;
  GSA_ASSERT(int(lists.size()) == Hkv && Hq % Hkv == 0, "{} lists for {} KV heads, Hq {}", lists.size(), Hkv, Hq);
  cpu::decode_attention_rows(out, q, Hq, Hkv, D, cache_rows{cache, layer, lists}, weights);
}

}  // namespace gsa::infer
