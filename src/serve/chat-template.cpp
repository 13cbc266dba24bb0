#include "serve/chat-template.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/json-util.h"
#include "serve/chat-jinja-eval.h"

namespace gsa::serve {

chat_template chat_template::parse(const std::string& source, std::string bos_token, std::string eos_token) {
  chat_template t;
  t.source_ = source;
  t.bos_ = std::move(bos_token);
  t.eos_ = std::move(eos_token);
  t.program_ = jinja::parse_template(source);
  return t;
}

namespace {

// A special token in tokenizer_config.json: "text", {"content": "text", ...} or null.
std::string special_token(const nlohmann::json& config, const char* key, const std::string& path) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto c = it->find("content");
    if (c != it->end() && c->is_string()) return c->get<std::string>();
  }
  fail("{}: \"{}\" must be a string or an object with a string \"content\"", path, key);
}

}  // namespace

std::optional<chat_template> chat_template::from_model_dir(const std::string& dir) {
  std::string path = (std::filesystem::path(dir) / "tokenizer_config.json").string();
  if (!std::filesystem::exists(path)) return std::nullopt;
  nlohmann::json config = read_json_file_bounded(path, "tokenizer config");
  if (!config.is_object()) fail("{}: expected a JSON object", path);
  auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) return std::nullopt;
  std::string source;
  if (it->is_string()) {
    source = it->get<std::string>();
  } else if (it->is_array()) {
    // [{"name": "default", "template": "..."}, {"name": "tool_use", ...}]
    for (const auto& entry : *it) {
      if (!entry.is_object() || !entry.contains("name") || !entry.contains("template") ||
          !entry["name"].is_string() || !entry["template"].is_string())
        fail("{}: \"chat_template\" list entries need string \"name\" and \"template\"", path);
      if (entry["name"] == "default") source = entry["template"].get<std::string>();
    }
    if (source.empty()) fail("{}: \"chat_template\" lists no template named \"default\"", path);
  } else {
    fail("{}: \"chat_template\" must be a string", path);
  }
  try {
    return parse(source, special_token(config, "bos_token", path), special_token(config, "eos_token", path));
  } catch (const error& e) {
    fail("{}: {}", path, e.what());
  }
}

std::string chat_template::render(const std::vector<chat_message>& messages, bool add_generation_prompt) const {
  nlohmann::ordered_json context;
  context["messages"] = nlohmann::ordered_json::array();
  for (const auto& m : messages) context["messages"].push_back({{"role", m.role}, {"content", m.content}});
  context["add_generation_prompt"] = add_generation_prompt;
  return render(context);
}

std::string chat_template::render(const nlohmann::ordered_json& context) const {
  if (!context.is_object() && !context.is_null()) fail("chat template context must be a JSON object");
  jinja::scope globals;
  jinja::install_globals(globals);
  auto define = [&](const std::string& name, jinja::value v) {
    if (globals.find(name)) fail("chat template context: '{}' is a built-in name and cannot be set", name);
    globals.set(name, std::move(v));
  };
  if (context.is_object())
    for (const auto& [k, v] : context.items()) define(k, jinja::from_json(v));
  if (!bos_.empty() && !(context.is_object() && context.contains("bos_token"))) define("bos_token", jinja::value::string(bos_));
  if (!eos_.empty() && !(context.is_object() && context.contains("eos_token"))) define("eos_token", jinja::value::string(eos_));
  jinja::limits lim;
  lim.max_output = limits.max_output;
  lim.max_steps = limits.max_steps;
  lim.max_items = limits.max_items;
  jinja::interpreter in(lim);
  return in.render(*program_, globals);
}

}  // namespace gsa::serve
