// Request parsing and response JSON; contract in api.h.
#include "serve/api.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/json-util.h"

namespace gsa::serve {

using nlohmann::json;

json error_json(const std::string& message, const std::string& type, const std::string& param,
                const std::string& code) {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code.empty() ? json(nullptr) : json(code)}}}};
}

json error_json(const api_error& e) { return error_json(e.what(), e.type, e.param, e.code); }

size_t utf8_invalid_at(std::string_view t) {
  const auto* s = reinterpret_cast<const unsigned char*>(t.data());
  const size_t n = t.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    int len;
    char32_t cp, min;
    if ((c & 0xE0) == 0xC0)
      len = 2, cp = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0)
      len = 3, cp = c & 0x0F, min = 0x800;
    else if ((c & 0xF8) == 0xF0)
      len = 4, cp = c & 0x07, min = 0x10000;
    else
      return i;
    if (i + len > n) return i;
    for (int k = 1; k < len; k++) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return std::string_view::npos;
}

size_t utf8_complete_prefix(std::string_view t) {
  // Look back at most 3 bytes for the lead byte of a sequence that runs past the end.
  const size_t n = t.size();
  for (size_t back = 1; back <= 3 && back <= n; back++) {
    const unsigned char c = static_cast<unsigned char>(t[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    const size_t need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    return need > back ? n - back : n;
  }
  return n;
}

namespace {

const char* type_name(const json& v) {
  if (v.is_string()) return "a string";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_array()) return "an array";
  if (v.is_object()) return "an object";
  return "null";
}

[[noreturn]] void wrong_type(const std::string& field, const char* want, const json& v) {
  throw api_error(400, fmt::format("'{}' must be {}, got {}", field, want, type_name(v)), field, "invalid_type");
}

[[noreturn]] void unsupported(const std::string& field, const std::string& why) {
  throw api_error(400, fmt::format("'{}': {}", field, why), field, "unsupported_parameter");
}

// The field when present and not null.
const json* field(const json& j, const char* name) {
  auto it = j.find(name);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

int64_t get_int(const json& v, const std::string& name) {
  if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
    throw api_error(400, fmt::format("'{}' is too large", name), name, "invalid_value");
  if (!v.is_number_integer()) wrong_type(name, "an integer", v);
  return v.get<int64_t>();
}

double get_number(const json& v, const std::string& name) {
  if (!v.is_number()) wrong_type(name, "a number", v);
  return v.get<double>();
}

bool get_bool(const json& v, const std::string& name) {
  if (!v.is_boolean()) wrong_type(name, "a boolean", v);
  return v.get<bool>();
}

std::string parse_content(const json& v, const std::string& name) {
  if (v.is_string()) return v.get<std::string>();
  if (!v.is_array()) wrong_type(name, "a string or an array of text parts", v);
  std::string out;
  for (size_t i = 0; i < v.size(); i++) {
    const std::string part = fmt::format("{}[{}]", name, i);
    const json& p = v[i];
    if (!p.is_object()) wrong_type(part, "an object", p);
    const json* type = field(p, "type");
    if (!type || !type->is_string() || type->get<std::string>() != "text")
      unsupported(part + ".type", "only \"text\" content parts are supported");
    const json* text = field(p, "text");
    if (!text)
      throw api_error(400, fmt::format("missing required parameter '{}.text'", part), part + ".text",
                      "missing_required_parameter");
    if (!text->is_string()) wrong_type(part + ".text", "a string", *text);
    out += text->get<std::string>();
  }
  return out;
}

void parse_messages(const json& j, completion_request& r) {
  const json* m = field(j, "messages");
  if (!m) throw api_error(400, "missing required parameter 'messages'", "messages", "missing_required_parameter");
  if (!m->is_array()) wrong_type("messages", "an array", *m);
  if (m->empty()) throw api_error(400, "'messages' is empty; give at least one message", "messages", "invalid_value");
  for (size_t i = 0; i < m->size(); i++) {
    const std::string name = fmt::format("messages[{}]", i);
    const json& e = (*m)[i];
    if (!e.is_object()) wrong_type(name, "an object", e);
    const json* role = field(e, "role");
    if (!role)
      throw api_error(400, fmt::format("missing required parameter '{}.role'", name), name + ".role",
                      "missing_required_parameter");
    if (!role->is_string()) wrong_type(name + ".role", "a string", *role);
    const std::string rs = role->get<std::string>();
    if (rs != "system" && rs != "user" && rs != "assistant" && rs != "developer" && rs != "tool")
      throw api_error(400, fmt::format("'{}.role' is '{}'; use system, developer, user, assistant or tool", name, rs),
                      name + ".role", "invalid_value");
    const json* content = field(e, "content");
    if (!content && rs != "assistant")
      throw api_error(400, fmt::format("missing required parameter '{}.content'", name), name + ".content",
                      "missing_required_parameter");
    r.messages.push_back({rs, content ? parse_content(*content, name + ".content") : std::string()});
  }
}

void parse_prompt(const json& j, completion_request& r) {
  const json* p = field(j, "prompt");
  if (!p) throw api_error(400, "missing required parameter 'prompt'", "prompt", "missing_required_parameter");
  const json* v = p;
  // A batch of prompts is n > 1 in disguise: one prompt (a string, or a token id list) per request.
  if (p->is_array() && !p->empty() && (p->front().is_string() || p->front().is_array())) {
    if (p->size() != 1)
      unsupported("prompt", "several prompts in one request are not supported; send one request each");
    v = &p->front();
  }
  if (v->is_string()) {
    r.prompt = v->get<std::string>();
    if (r.prompt.empty())
      throw api_error(400, "'prompt' is empty; give some text to continue", "prompt", "invalid_value");
    return;
  }
  if (!v->is_array()) wrong_type("prompt", "a string or an array of token ids", *v);
  if (v->empty()) throw api_error(400, "'prompt' is empty; give some text to continue", "prompt", "invalid_value");
  for (size_t i = 0; i < v->size(); i++) {
    const json& t = (*v)[i];
    if (!t.is_number_integer()) wrong_type(fmt::format("prompt[{}]", i), "a token id (an integer)", t);
    const int64_t id = t.get<int64_t>();
    if (id < 0 || id > std::numeric_limits<int32_t>::max())
      throw api_error(400, fmt::format("'prompt[{}]' ({}) is not a token id", i, id), "prompt", "invalid_value");
    r.prompt_ids.push_back(int32_t(id));
  }
  r.prompt_is_ids = true;
}

void parse_stop(const json& j, completion_request& r) {
  const json* s = field(j, "stop");
  if (!s) return;
  if (s->is_string()) {
    r.stop.push_back(s->get<std::string>());
  } else if (s->is_array()) {
    for (size_t i = 0; i < s->size(); i++) {
      if (!(*s)[i].is_string()) wrong_type(fmt::format("stop[{}]", i), "a string", (*s)[i]);
      r.stop.push_back((*s)[i].get<std::string>());
    }
  } else {
    wrong_type("stop", "a string or an array of strings", *s);
  }
  if (r.stop.size() > max_stop_sequences)
    throw api_error(400,
                    fmt::format("'stop' has {} sequences; at most {} are allowed", r.stop.size(), max_stop_sequences),
                    "stop", "invalid_value");
  for (const auto& st : r.stop)
    if (st.empty())
      throw api_error(400, "'stop' holds an empty string; every stop sequence needs text", "stop", "invalid_value");
}

// Fields gsa does not implement: accepted only at the value that means "off".
void refuse_unsupported(const json& j, endpoint kind, int64_t n) {
  if (const json* b = field(j, "best_of"); b && get_int(*b, "best_of") != n)
    unsupported("best_of", "best_of must equal n (every generated choice is returned)");
  if (const json* e = field(j, "echo"); e && get_bool(*e, "echo")) unsupported("echo", "echo is not supported");
  if (const json* l = field(j, "logprobs")) {
    const bool on = l->is_boolean() ? l->get<bool>() : l->is_number_integer() ? l->get<int64_t>() != 0 : true;
    if (on) unsupported("logprobs", "log probabilities are not supported");
  }
  for (const char* p : {"presence_penalty", "frequency_penalty"})
    if (const json* v = field(j, p); v && get_number(*v, p) != 0)
      unsupported(p, "penalties are not supported; leave it 0");
  if (const json* lb = field(j, "logit_bias"); lb && !(lb->is_object() && lb->empty()))
    unsupported("logit_bias", "logit_bias is not supported");
  if (kind == endpoint::chat) {
    if (const json* t = field(j, "tools"); t && !(t->is_array() && t->empty()))
      unsupported("tools", "tool calls are not supported");
    if (const json* f = field(j, "response_format")) {
      const json* type = f->is_object() ? field(*f, "type") : nullptr;
      if (!type || !type->is_string() || type->get<std::string>() != "text")
        unsupported("response_format", "only {\"type\": \"text\"} is supported");
    }
  } else if (const json* s = field(j, "suffix"); s && !(s->is_string() && s->get<std::string>().empty())) {
    unsupported("suffix", "suffix is not supported");
  }
}

}  // namespace

completion_request parse_request(std::string_view body, endpoint kind) {
  if (const size_t at = utf8_invalid_at(body); at != std::string_view::npos)
    throw api_error(400, fmt::format("the request body is not valid UTF-8 (byte {})", at), "", "invalid_utf8");
  json j;
  try {
    j = parse_json(body, "request body");
  } catch (const gsa::error& e) {
    throw api_error(400, fmt::format("could not parse the JSON body: {}", e.what()), "", "invalid_json");
  }
  if (!j.is_object())
    throw api_error(400, fmt::format("the request body must be a JSON object, got {}", type_name(j)), "",
                    "invalid_json");
  completion_request r;
  r.kind = kind;
  const json* model = field(j, "model");
  if (!model) throw api_error(400, "missing required parameter 'model'", "model", "missing_required_parameter");
  if (!model->is_string()) wrong_type("model", "a string", *model);
  r.model = model->get<std::string>();
  if (kind == endpoint::chat)
    parse_messages(j, r);
  else
    parse_prompt(j, r);
  const char* max_name = "max_tokens";
  const json* mt = field(j, "max_tokens");
  if (kind == endpoint::chat && field(j, "max_completion_tokens")) mt = field(j, max_name = "max_completion_tokens");
  if (mt) {
    r.max_tokens = get_int(*mt, max_name);
    if (r.max_tokens < 1)
      throw api_error(400, fmt::format("'{}' is {}; it must be at least 1", max_name, r.max_tokens), max_name,
                      "invalid_value");
  }
  if (const json* t = field(j, "temperature")) {
    const double v = get_number(*t, "temperature");
    if (!(v >= 0 && v <= 2))
      throw api_error(400, fmt::format("'temperature' is {}; give 0 .. 2", v), "temperature", "invalid_value");
    r.temperature = float(v);
  }
  if (const json* t = field(j, "top_p")) {
    const double v = get_number(*t, "top_p");
    if (!(v > 0 && v <= 1))
      throw api_error(400, fmt::format("'top_p' is {}; give a value in (0, 1]", v), "top_p", "invalid_value");
    r.top_p = float(v);
  }
  if (const json* s = field(j, "seed")) {
    if (s->is_number_unsigned())
      r.seed = s->get<uint64_t>();
    else
      r.seed = uint64_t(get_int(*s, "seed"));
  }
  parse_stop(j, r);
  if (const json* n = field(j, "n")) {
    r.n = get_int(*n, "n");
    if (r.n < 1 || r.n > max_choices)
      throw api_error(400, fmt::format("'n' is {}; give 1 .. {} choices", r.n, max_choices), "n", "invalid_value");
  }
  if (const json* s = field(j, "stream")) r.stream = get_bool(*s, "stream");
  if (const json* so = field(j, "stream_options")) {
    if (!so->is_object()) wrong_type("stream_options", "an object", *so);
    if (!r.stream)
      throw api_error(400, "'stream_options' is only allowed with \"stream\": true", "stream_options", "invalid_value");
    if (const json* u = field(*so, "include_usage")) r.include_usage = get_bool(*u, "stream_options.include_usage");
  }
  if (const json* g = field(j, "gsa")) {
    if (!g->is_object()) wrong_type("gsa", "an object", *g);
    if (const json* s = field(*g, "stats")) r.gsa_stats = get_bool(*s, "gsa.stats");
    if (const json* s = field(*g, "reuse")) r.gsa_reuse = get_bool(*s, "gsa.reuse");
  }
  refuse_unsupported(j, kind, r.n);
  return r;
}

void check_model(const completion_request& r, const std::string& served_id) {
  if (r.model != served_id)
    throw api_error(404, fmt::format("the model '{}' does not exist; this server serves '{}'", r.model, served_id),
                    "model", "model_not_found");
}

int64_t resolve_max_tokens(const completion_request& r, int64_t prompt_tokens, int64_t max_context) {
  const char* param = r.kind == endpoint::chat ? "messages" : "prompt";
  if (prompt_tokens >= max_context)
    throw api_error(400,
                    fmt::format("this model's maximum context length is {} tokens; the {} holds {} tokens, which "
                                "leaves no room to generate; shorten it",
                                max_context, param, prompt_tokens),
                    param, "context_length_exceeded");
  if (r.max_tokens < 0)
    return r.kind == endpoint::chat ? max_context - prompt_tokens
                                    : std::min(default_completion_tokens, max_context - prompt_tokens);
  if (r.max_tokens > max_context - prompt_tokens)  // the sum of the two may pass 2^63 - 1: add them unsigned
    throw api_error(400,
                    fmt::format("this model's maximum context length is {} tokens; you requested {} tokens ({} in "
                                "the {}, {} for the completion); lower max_tokens or shorten the {}",
                                max_context, uint64_t(prompt_tokens) + uint64_t(r.max_tokens), prompt_tokens, param,
                                r.max_tokens, param),
                    "max_tokens", "context_length_exceeded");
  return r.max_tokens;
}

json usage_json(const usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

namespace {

json finish_json(const std::string& f) { return f.empty() ? json(nullptr) : json(f); }

json head(endpoint kind, const std::string& id, int64_t created, const std::string& model, bool chunk) {
  const char* object = kind == endpoint::completions ? "text_completion"
                       : chunk                       ? "chat.completion.chunk"
                                                     : "chat.completion";
  return {{"id", id}, {"object", object}, {"created", created}, {"model", model}};
}

}  // namespace

json response_json(endpoint kind, const std::string& id, int64_t created, const std::string& model,
                   const std::vector<choice>& choices, const usage& u, const json& gsa) {
  json j = head(kind, id, created, model, false);
  j["choices"] = json::array();
  for (size_t i = 0; i < choices.size(); i++) {
    json c = {{"index", i}, {"logprobs", nullptr}, {"finish_reason", finish_json(choices[i].finish_reason)}};
    if (kind == endpoint::chat)
      c["message"] = {{"role", "assistant"}, {"content", choices[i].text}};
    else
      c["text"] = choices[i].text;
    j["choices"].push_back(c);
  }
  j["usage"] = usage_json(u);
  if (!gsa.is_null()) j["gsa"] = gsa;
  return j;
}

json response_json(endpoint kind, const std::string& id, int64_t created, const std::string& model,
                   const std::string& text, const std::string& finish_reason, const usage& u, const json& gsa) {
  return response_json(kind, id, created, model, std::vector<choice>{{text, finish_reason}}, u, gsa);
}

json chunk_json(endpoint kind, const std::string& id, int64_t created, const std::string& model,
                const std::string& text, const std::string& finish_reason, bool first, int64_t index) {
  json j = head(kind, id, created, model, true);
  json choice = {{"index", index}, {"logprobs", nullptr}, {"finish_reason", finish_json(finish_reason)}};
  if (kind == endpoint::chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (first || !text.empty()) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  j["choices"] = json::array({choice});
  return j;
}

json usage_chunk_json(endpoint kind, const std::string& id, int64_t created, const std::string& model, const usage& u) {
  json j = head(kind, id, created, model, true);
  j["choices"] = json::array();
  j["usage"] = usage_json(u);
  return j;
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace gsa::serve
