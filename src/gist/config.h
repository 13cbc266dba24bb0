// GSA configuration: the "gsa" object of a model's config.json (DESIGN 1.1-1.5).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace gsa::gist {

enum class select_rule : uint8_t { fixed, adaptive, top_p };
enum class train_mode : uint8_t { compress, unfold, suffix_unfold };

struct gsa_config {
  // chunk[0] = raw tokens per level-0 chunk (c_0); chunk[l] (l >= 1) = level-(l-1) groups per level-l group.
  std::vector<int> chunk = {16};
  int gists_per_chunk = 1;               // g, at every level
  std::vector<int32_t> gist_token_ids;   // one token id per level (<|gist|>, <|gist_1|>, ...)
  int local_chunks = 1;                  // raw chunks before the query's chunk that stay visible
  int sink = 3;                          // first raw tokens always visible
  std::vector<int> dense_layers = {0};   // layers that never unfold (they see the gist mask only)
  select_rule select = select_rule::adaptive;
  int topk = 4;                          // for select_rule::fixed (and per level in the hierarchy)
  float top_p = 0.9f;                    // for select_rule::top_p
  bool group_scoring = false;            // sum scores over the GQA group, one top-k per KV head (else union)
  bool gists_all = false;                // unfolding queries keep every gist visible (else only selected)
  train_mode mode = train_mode::compress;
  // Training selection granularity (unfold, suffix-unfold): false = each query chunk selects once, by the max
  // over its rows (DESIGN 1.5); true = each row selects for itself from its own query, as decoding does, so no
  // row's selection depends on the rows after it ("train_select": "chunk" | "token").
  bool select_per_token = false;
  // How a hierarchy (levels() > 1) selects in training and in the unfolding prefill: true = the top-down walk of
  // gist::select_hierarchical (score the top-level units, keep k, score only their children, ...), as hgsa
  // decodes, so the higher-level gists learn to route; false = flat top-k over every level-0 chunk's gists (the
  // only rule before; the gsa method decodes that way). "unfold_select": "walk" | "flat". One level: the same.
  bool unfold_walk = true;
  // Routing distillation in training (train/route-spec.h, backend route_loss): the weight of a loss that pulls each
  // selecting layer's gist scores (softmax over a row's candidate chunks) towards the attention mass the chunks'
  // raw keys get from the same query (the teacher, not differentiated), on route_rows sampled rows per sequence.
  // 0 (the default): off, and neither key is written. "route_loss": w, "route_rows": n.
  float route_loss = 0;
  int route_rows = 256;
  // Not part of config.json: a session's --ratio r, which the adaptive rule then uses instead of ratio() (so that
  // gsa / hgsa get the same L / r budget as the baselines); 0: ratio().
  float budget_ratio = 0;

  int levels() const { return int(chunk.size()); }
  // Raw tokens per top-level unit: c_0 c_1 ... c_{L-1}.
  int64_t span() const;
  // The compression ratio: raw tokens per top-level gist, c_0 c_1 ... c_{L-1} / g (one level: c_0 / g; 4 x 4:
  // 16 / g). The default budget of the selecting methods is L / ratio().
  float ratio() const;
  // Throws gsa::error naming the field when a value is out of range.
  void validate() const;
};

// Parse / emit the config.json "gsa" object. Unknown keys are rejected with a clear error.
gsa_config gsa_config_from_json(const nlohmann::json& j);
nlohmann::json gsa_config_to_json(const gsa_config& cfg);
const char* select_rule_name(select_rule r);
const char* train_mode_name(train_mode m);
train_mode train_mode_from_name(const std::string& name);  // throws on unknown

}  // namespace gsa::gist
