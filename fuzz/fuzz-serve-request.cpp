// Request bodies of `gsa serve` (src/serve/api): the input is the body of a POST to /v1/completions and to
// /v1/chat/completions. The body then takes the server's path without sockets: the model check, the prompt
// (the messages rendered through real chat templates, tokenized with the demo model's tokenizer), the length
// check against a few context sizes, and the response and stream chunks that would carry the text.
//
// The contract is the server's (docs/serve.md): a bad body is an api_error with a 4xx status, which the route
// sends as an OpenAI error object. Any other exception would reach the route's catch-all as a 500 naming no
// field, so it is a defect here, as is a crash, a leak or a hang. A template that refuses the messages throws
// gsa::error (the chat renderer turns it into a 400).
#include <fstream>
#include <sstream>

#include "fuzz-util.h"
#include "serve/api.h"
#include "serve/chat-template.h"
#include "tokenizer/tokenizer.h"

namespace {

using namespace gsa;
using namespace gsa::serve;

struct fixture {
  tokenizer tok;
  std::vector<chat_template> templates;
};

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "fuzz-serve-request: cannot read %s\n", path.c_str());
    std::abort();
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const fixture& fx() {
  static const fixture f = [] {
    const std::string root = GSA_SOURCE_DIR;
    const std::string t = root + "/tests/data/chat/templates/";
    fixture x{tokenizer::load(root + "/models/demo/gsa"), {}};
    x.templates.push_back(chat_template::parse(read_text(t + "llama31-style.jinja"), "<|begin_of_text|>", "<|eot_id|>"));
    x.templates.push_back(chat_template::parse(read_text(t + "qwen25-style.jinja"), "", "<|im_end|>"));
    x.templates.push_back(chat_template::parse(read_text(t + "alternating.jinja"), "<s>", "</s>"));
    return x;
  }();
  return f;
}

// Runs f; true when it returned, false on a client error (api_error 4xx); anything else is a defect.
template <typename F>
bool client_error_or_ok(F&& f) {
  try {
    f();
    return true;
  } catch (const api_error& e) {
    if (e.status < 400 || e.status >= 500) fuzz::defect("a bad request answered with a non-4xx status", e.what());
    if (std::string_view(e.what()).empty()) fuzz::defect("an api_error without a message", e.code);
    (void)dump(error_json(e));
    return false;
  } catch (const std::exception& e) {
    fuzz::defect("an exception other than api_error (the route would answer 500)", e.what());
  }
}

void serve_one(std::string_view body, endpoint kind) {
  completion_request r;
  if (!client_error_or_ok([&] { r = parse_request(body, kind); })) return;
  if (utf8_invalid_at(body) != std::string_view::npos) fuzz::defect("a body that is not UTF-8 was accepted", "");
  client_error_or_ok([&] { check_model(r, "gsa"); });
  std::vector<std::string> prompts;
  if (kind == endpoint::chat) {
    std::vector<chat_message> cm;
    for (const auto& m : r.messages) cm.push_back({m.role, m.content});
    for (const chat_template& t : fx().templates) {
      try {
        prompts.push_back(t.render(cm, true));
      } catch (const gsa::error& e) {  // a refusal: the chat renderer answers 400 with the template's message
        if (std::string_view(e.what()).starts_with("internal error")) fuzz::defect("internal assertion", e.what());
      } catch (const std::exception& e) {
        fuzz::defect("the chat template threw something other than gsa::error", e.what());
      }
    }
  } else {
    prompts.push_back(r.prompt_is_ids ? std::string() : r.prompt);  // ids: the length checks only
  }
  for (const std::string& p : prompts) {
    const int64_t n = r.prompt_is_ids ? int64_t(r.prompt_ids.size()) : int64_t(fx().tok.encode(p, false).size());
    for (int64_t max_context : {n, n + 1, int64_t(64), int64_t(4096)}) {
      int64_t m = 0;
      if (!client_error_or_ok([&] { m = resolve_max_tokens(r, n, max_context); })) continue;
      if (m < 1 || n + m > max_context) fuzz::defect("max_tokens resolved outside the context", std::to_string(m));
    }
    const nlohmann::json gsa = r.gsa_stats ? nlohmann::json{{"chunks", 1}} : nlohmann::json(nullptr);
    (void)dump(response_json(kind, "id", 0, r.model, p, "stop", {n, 1}, gsa));
    const size_t cut = utf8_complete_prefix(p.substr(0, p.size() / 2));
    (void)dump(chunk_json(kind, "id", 0, r.model, p.substr(0, cut), "", true));
    (void)dump(usage_chunk_json(kind, "id", 0, r.model, {n, 1}));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  if (utf8_complete_prefix(body) > size) fuzz::defect("utf8_complete_prefix past the end", "");
  serve_one(body, endpoint::completions);
  serve_one(body, endpoint::chat);
  return 0;
}
