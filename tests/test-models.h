// Tiny random models for tests (the model, infer and train test programs share them).
#pragma once
#include <vector>

#include "core/rng.h"
#include "gist/config.h"
#include "model/llama.h"

namespace gsa::test {

constexpr int tiny_vocab = 64;

// A small Llama configuration: hidden 32, MLP 48, 4 query heads and 2 KV heads of 8 (GQA 2), no gsa object.
inline model_config tiny_config(int64_t vocab = tiny_vocab, int layers = 2, int max_positions = 512) {
  model_config c;
  c.architecture = "llama";
  c.vocab_size = vocab;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = layers;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = max_positions;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000;
  return c;
}

// The tests' GSA settings: the given chunk sizes, gist ids at the top of a vocabulary of V, fixed top-2
// selection, local 1, sink 2, dense layer 0.
inline gist::gsa_config tiny_gsa(int V, std::vector<int> chunk = {4}) {
  gist::gsa_config g;
  g.chunk = chunk;
  for (size_t l = 0; l < chunk.size(); l++) g.gist_token_ids.push_back(V - 1 - int(l));
  g.local_chunks = 1;
  g.sink = 2;
  g.select = gist::select_rule::fixed;
  g.topk = 2;
  g.dense_layers = {0};
  return g;
}

// tiny_config with 3 layers by default; with_gsa adds tiny_gsa(tiny_vocab, chunk) as its "gsa" object.
inline llama_model tiny_model(std::vector<int> chunk, bool with_gsa = true, uint64_t seed = 7, int layers = 3,
                              int max_positions = 512) {
  model_config c = tiny_config(tiny_vocab, layers, max_positions);
  if (with_gsa) c.gsa = gist::gsa_config_to_json(tiny_gsa(tiny_vocab, chunk));
  llama_model m(c);
  m.init_random(seed, 0.3f);
  return m;
}

// A model of config c with gsa config g as its "gsa" object, weights random (seed, std 0.3).
inline llama_model model_with_gsa(model_config c, const gist::gsa_config& g, uint64_t seed) {
  c.gsa = gist::gsa_config_to_json(g);
  llama_model m(c);
  m.init_random(seed, 0.3f);
  return m;
}

// Random raw tokens below the gist ids.
inline std::vector<int32_t> tiny_tokens(int n, uint64_t seed) {
  rng r(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = int32_t(r.below(tiny_vocab - 4));
  return t;
}

}  // namespace gsa::test
