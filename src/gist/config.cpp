// The "gsa" object of config.json <-> gsa_config, and its range checks. Errors name the key ("gsa.<key>") so a
// user can fix the file; unknown keys are errors rather than silently ignored typos.
#include "gist/config.h"

#include <nlohmann/json.hpp>

#include <set>

#include "core/error.h"

namespace gsa::gist {

namespace {

constexpr int max_levels = 16;

int get_int(const nlohmann::json& v, const char* key) {
  if (!v.is_number_integer()) fail("config.json gsa.{}: expected an integer, got {}", key, v.dump());
  int64_t x = v.get<int64_t>();
  if (x < INT32_MIN || x > INT32_MAX) fail("config.json gsa.{}: {} is out of range", key, x);
  return int(x);
}

std::vector<int> get_int_list(const nlohmann::json& v, const char* key, bool allow_scalar) {
  if (allow_scalar && v.is_number_integer()) return {get_int(v, key)};
  if (!v.is_array()) fail("config.json gsa.{}: expected a list of integers, got {}", key, v.dump());
  std::vector<int> out;
  for (const auto& e : v) out.push_back(get_int(e, key));
  return out;
}

std::string get_string(const nlohmann::json& v, const char* key) {
  if (!v.is_string()) fail("config.json gsa.{}: expected a string, got {}", key, v.dump());
  return v.get<std::string>();
}

select_rule select_rule_from_name(const std::string& s) {
  if (s == "fixed") return select_rule::fixed;
  if (s == "adaptive") return select_rule::adaptive;
  if (s == "top_p" || s == "top-p") return select_rule::top_p;
  fail("config.json gsa.select: unknown rule '{}' (use \"fixed\", \"adaptive\" or \"top_p\")", s);
}

}  // namespace

int64_t gsa_config::span() const {
  int64_t s = 1;
  for (int c : chunk) s *= c;
  return s;
}

// g top-level gists summarise a top-level unit's span of raw tokens.
float gsa_config::ratio() const { return chunk.empty() ? 0.0f : float(double(span()) / gists_per_chunk); }

void gsa_config::validate() const {
  if (chunk.empty()) fail("gsa.chunk: needs at least one level (e.g. 16, or [4, 4] for two levels)");
  if (int(chunk.size()) > max_levels) fail("gsa.chunk: {} levels, at most {} are supported", chunk.size(), max_levels);
  int64_t span = 1;  // level-0 chunks per top-level unit, kept within int32 so stream indices never overflow
  for (size_t l = 0; l < chunk.size(); l++) {
    if (chunk[l] < 1) fail("gsa.chunk[{}] = {}: every stride must be >= 1", l, chunk[l]);
    if (l >= 1) span *= chunk[l];
    if (span * chunk[0] > INT32_MAX) fail("gsa.chunk: the strides' product is too large");
  }
  if (gists_per_chunk < 1) fail("gsa.gists_per_chunk = {}: must be >= 1", gists_per_chunk);
  if (int64_t(gists_per_chunk) > 1024) fail("gsa.gists_per_chunk = {}: at most 1024", gists_per_chunk);
  if (gist_token_ids.size() != chunk.size())
    fail("gsa.gist_token_ids: {} ids for {} levels; give one token id per level (<|gist|>, <|gist_1|>, ...)",
         gist_token_ids.size(), chunk.size());
  std::set<int32_t> seen;
  for (int32_t id : gist_token_ids) {
    if (id < 0) fail("gsa.gist_token_ids: id {} is negative", id);
    if (!seen.insert(id).second) fail("gsa.gist_token_ids: id {} is used for two levels", id);
  }
  if (local_chunks < 0) fail("gsa.local_chunks = {}: must be >= 0", local_chunks);
  if (sink < 0) fail("gsa.sink = {}: must be >= 0", sink);
  for (int l : dense_layers)
    if (l < 0) fail("gsa.dense_layers: layer {} is negative", l);
  if (topk < 0) fail("gsa.topk = {}: must be >= 0", topk);
  if (!(top_p > 0.0f && top_p <= 1.0f)) fail("gsa.top_p = {}: must be in (0, 1]", top_p);
  if (!(route_loss >= 0.0f && route_loss < 1e6f)) fail("gsa.route_loss = {}: must be >= 0 (0: off)", route_loss);
  if (route_rows < 1) fail("gsa.route_rows = {}: must be >= 1", route_rows);
}

gsa_config gsa_config_from_json(const nlohmann::json& j) {
  if (!j.is_object()) fail("config.json gsa: expected an object, got {}", j.dump());
  gsa_config c;
  for (const auto& [key, v] : j.items()) {
    if (key == "chunk") {
      c.chunk = get_int_list(v, "chunk", true);
    } else if (key == "gists_per_chunk") {
      c.gists_per_chunk = get_int(v, "gists_per_chunk");
    } else if (key == "gist_token_ids") {
      auto ids = get_int_list(v, "gist_token_ids", true);
      c.gist_token_ids.assign(ids.begin(), ids.end());
    } else if (key == "local_chunks") {
      c.local_chunks = get_int(v, "local_chunks");
    } else if (key == "sink") {
      c.sink = get_int(v, "sink");
    } else if (key == "dense_layers") {
      c.dense_layers = get_int_list(v, "dense_layers", false);
    } else if (key == "select") {
      c.select = select_rule_from_name(get_string(v, "select"));
    } else if (key == "topk") {
      c.topk = get_int(v, "topk");
    } else if (key == "top_p") {
      if (!v.is_number()) fail("config.json gsa.top_p: expected a number, got {}", v.dump());
      c.top_p = v.get<float>();
    } else if (key == "group_scoring") {
      if (!v.is_boolean()) fail("config.json gsa.group_scoring: expected true or false, got {}", v.dump());
      c.group_scoring = v.get<bool>();
    } else if (key == "gists") {
      std::string s = get_string(v, "gists");
      if (s == "selected") c.gists_all = false;
      else if (s == "all") c.gists_all = true;
      else fail("config.json gsa.gists: unknown value '{}' (use \"selected\" or \"all\")", s);
    } else if (key == "train_select") {
      std::string s = get_string(v, "train_select");
      if (s == "chunk") c.select_per_token = false;
      else if (s == "token") c.select_per_token = true;
      else fail("config.json gsa.train_select: unknown value '{}' (use \"chunk\" or \"token\")", s);
    } else if (key == "unfold_select") {
      std::string s = get_string(v, "unfold_select");
      if (s == "walk") c.unfold_walk = true;
      else if (s == "flat") c.unfold_walk = false;
      else fail("config.json gsa.unfold_select: unknown value '{}' (use \"walk\" or \"flat\")", s);
    } else if (key == "route_loss") {
      if (!v.is_number()) fail("config.json gsa.route_loss: expected a number, got {}", v.dump());
      c.route_loss = v.get<float>();
    } else if (key == "route_rows") {
      c.route_rows = get_int(v, "route_rows");
    } else if (key == "train_mode") {
      const std::string m = get_string(v, "train_mode");
      if (m != "compress" && m != "unfold" && m != "suffix_unfold" && m != "suffix-unfold")
        fail("config.json gsa.train_mode: unknown mode '{}' (use \"compress\", \"unfold\" or \"suffix_unfold\")", m);
      c.mode = train_mode_from_name(m);
    } else {
      fail("config.json gsa: unknown key '{}' (known: chunk, gists_per_chunk, gist_token_ids, local_chunks, sink, "
           "dense_layers, select, topk, top_p, group_scoring, gists, train_mode, train_select, unfold_select, "
           "route_loss, route_rows)",
           key);
    }
  }
  c.validate();
  return c;
}

nlohmann::json gsa_config_to_json(const gsa_config& c) {
  nlohmann::json j;
  // One level is written as a plain int: the common case reads like the paper ("chunk": 16).
  if (c.chunk.size() == 1) j["chunk"] = c.chunk[0];
  else j["chunk"] = c.chunk;
  j["gists_per_chunk"] = c.gists_per_chunk;
  j["gist_token_ids"] = c.gist_token_ids;
  j["local_chunks"] = c.local_chunks;
  j["sink"] = c.sink;
  j["dense_layers"] = c.dense_layers;
  j["select"] = select_rule_name(c.select);
  j["topk"] = c.topk;
  j["top_p"] = c.top_p;
  j["group_scoring"] = c.group_scoring;
  j["gists"] = c.gists_all ? "all" : "selected";
  j["train_mode"] = train_mode_name(c.mode);
  j["train_select"] = c.select_per_token ? "token" : "chunk";
  j["unfold_select"] = c.unfold_walk ? "walk" : "flat";
  if (c.route_loss > 0) {
    j["route_loss"] = c.route_loss;
    j["route_rows"] = c.route_rows;
  }
  return j;
}

const char* select_rule_name(select_rule r) {
  switch (r) {
    case select_rule::fixed: return "fixed";
    case select_rule::adaptive: return "adaptive";
    case select_rule::top_p: return "top_p";
  }
  return "?";
}

const char* train_mode_name(train_mode m) {
  switch (m) {
    case train_mode::compress: return "compress";
    case train_mode::unfold: return "unfold";
    case train_mode::suffix_unfold: return "suffix_unfold";
  }
  return "?";
}

train_mode train_mode_from_name(const std::string& s) {
  if (s == "compress") return train_mode::compress;
  if (s == "unfold") return train_mode::unfold;
  if (s == "suffix_unfold" || s == "suffix-unfold") return train_mode::suffix_unfold;
  fail("train mode '{}' is unknown (use \"compress\", \"unfold\" or \"suffix_unfold\")", s);
}

}  // namespace gsa::gist
