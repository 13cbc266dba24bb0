#include "train/model-init.h"

#include <algorithm>
#include <string>

#include "core/error.h"
#include "model/presets.h"

namespace gsa {

model_config run_model_config(const std::string& preset, int64_t vocab_size, const nlohmann::json& overrides) {
  model_config c = model_preset(preset, vocab_size);
  if (overrides.is_null()) return c;
  if (!overrides.is_object()) fail("model_config: expected an object of config.json fields");
  nlohmann::json j = model_config_to_json(c);
  for (const auto& [k, v] : overrides.items()) j[k] = v;
  return model_config_from_json(j, "model_config (preset " + preset + " with overrides)");
}

std::vector<int32_t> add_gist_rows(llama_model& m, int n) {
  GSA_ASSERT(n >= 0);
  const int64_t V = m.config.vocab_size, C = m.config.hidden_size;
  auto grow = [&](Tensor& t) {
    Tensor g({V + n, C});
    std::copy(t.f32(), t.f32() + V * C, g.f32());
    std::vector<double> mean(size_t(C), 0.0);  // double: the mean of 150k rows stays exact enough
    for (int64_t r = 0; r < V; r++)
      for (int64_t c = 0; c < C; c++) mean[c] += t.f32()[r * C + c];
    for (int i = 0; i < n; i++)
      for (int64_t c = 0; c < C; c++) g.f32()[(V + i) * C + c] = float(mean[c] / double(V));
    t = g;
  };
  grow(m.w.embed);
  if (!m.config.tie_word_embeddings) grow(m.w.lm_head);
  m.config.vocab_size = V + n;
  std::vector<int32_t> ids;
  for (int i = 0; i < n; i++) ids.push_back(int32_t(V + i));
  return ids;
}

std::string gist_token_name(int level) {
  GSA_ASSERT(level >= 0);
  return level == 0 ? std::string("<|gist|>") : "<|gist_" + std::to_string(level) + "|>";
}

std::vector<int32_t> tokenizer_gist_ids(const nlohmann::json& tok, int levels) {
  std::vector<int32_t> ids;
  if (!tok.is_object() || !tok.contains("added_tokens") || !tok["added_tokens"].is_array()) return ids;
  for (int l = 0; l < levels; l++) {
    const std::string name = gist_token_name(l);
    bool found = false;
    for (const auto& t : tok["added_tokens"])
      if (t.is_object() && t.value("content", "") == name && t.contains("id") && t["id"].is_number_integer()) {
        ids.push_back(t["id"].get<int32_t>());
        found = true;
        break;
      }
    if (!found) return {};
  }
  return ids;
}

void add_gist_tokens(nlohmann::json& tok, const std::vector<int32_t>& ids) {
  if (!tok.is_object()) fail("tokenizer.json: expected an object");
  if (!tok.contains("added_tokens") || tok["added_tokens"].is_null()) tok["added_tokens"] = nlohmann::json::array();
  auto& added = tok["added_tokens"];
  if (!added.is_array()) fail("tokenizer.json: added_tokens is not an array");
  for (size_t l = 0; l < ids.size(); l++) {
    bool named = false;
    for (const auto& t : added) named |= t.is_object() && t.value("id", int64_t(-1)) == ids[l];
    if (named) continue;
    added.push_back({{"id", ids[l]},
                     {"content", gist_token_name(int(l))},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
}

namespace {

// Rows `ids` of t (V, C) set to the mean of its other rows.
void mean_rows(Tensor& t, const std::vector<int32_t>& ids) {
  const int64_t V = t.dim(0), C = t.dim(1);
  std::vector<bool> skip(size_t(V), false);
  for (int32_t id : ids) skip[size_t(id)] = true;
  std::vector<double> mean(size_t(C), 0.0);
  int64_t n = 0;
  for (int64_t r = 0; r < V; r++) {
    if (skip[size_t(r)]) continue;
    n++;
    for (int64_t c = 0; c < C; c++) mean[size_t(c)] += t.f32()[r * C + c];
  }
  const double count = double(std::max<int64_t>(n, 1));
  for (int32_t id : ids)
    for (int64_t c = 0; c < C; c++) t.f32()[int64_t(id) * C + c] = float(mean[size_t(c)] / count);
}

}  // namespace

bool setup_gsa(llama_model& m, const nlohmann::json& gsa_json, const std::string& mode, gist::gsa_config& out,
               const nlohmann::json& tokenizer_json, bool* added, bool mean_init) {
  if (added) *added = false;
  if (gsa_json.is_null()) {
    m.config.gsa = nullptr;
    return false;
  }
  nlohmann::json j = gsa_json;
  if (!j.contains("gist_token_ids")) {
    // The model may already be a GSA model (a checkpoint used as a start): reuse its ids.
    if (m.config.gsa.is_object() && m.config.gsa.contains("gist_token_ids")) {
      j["gist_token_ids"] = m.config.gsa["gist_token_ids"];
    } else {
      int levels = 1;
      if (j.contains("chunk") && j["chunk"].is_array()) levels = int(j["chunk"].size());
      const std::vector<int32_t> tokenizer_ids = tokenizer_gist_ids(tokenizer_json, levels);
      bool usable = int(tokenizer_ids.size()) == levels;
      for (int32_t id : tokenizer_ids) usable &= id >= 0 && id < m.config.vocab_size;
      if (usable) {
        j["gist_token_ids"] = tokenizer_ids;
        if (mean_init) {
          mean_rows(m.w.embed, tokenizer_ids);
          if (!m.config.tie_word_embeddings) mean_rows(m.w.lm_head, tokenizer_ids);
        }
      } else {
        j["gist_token_ids"] = add_gist_rows(m, levels);
        if (added) *added = true;
      }
    }
  }
  if (!mode.empty()) j["train_mode"] = mode;
  out = gist::gsa_config_from_json(j);
  for (int32_t id : out.gist_token_ids)
    if (id >= m.config.vocab_size)
      fail("gsa.gist_token_ids: id {} is outside the model's vocabulary of {}; omit gist_token_ids to add new rows",
           id, m.config.vocab_size);
  m.config.gsa = gist::gsa_config_to_json(out);
  return true;
}

}  // namespace gsa
