// Hugging Face chat templates: renders a model's `chat_template` (tokenizer_config.json) for a conversation,
// identically to the reference renderer @huggingface/jinja (what transformers.js uses) on the Llama 3 and
// Qwen 2 / 2.5 / 3 templates (tools blocks included). The Jinja subset, its whitespace rules, what differs from
// Python's Jinja and the limits on untrusted templates are in docs/chat-templates.md.
//
// Errors are gsa::error: a template outside the subset names the line; a template that calls
// raise_exception("...") (roles out of order, say) gives exactly the template's message.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace gsa::serve {

namespace jinja {
struct node;
}

struct chat_message {
  std::string role, content;
};

// Bounds on what an (untrusted) template may do while rendering; past one, render throws gsa::error.
struct chat_template_limits {
  size_t max_output = size_t(64) << 20;  // bytes of the rendered text (and of any string built on the way)
  uint64_t max_steps = 20'000'000;       // evaluation steps (about a second of work)
  size_t max_items = size_t(1) << 20;    // elements of a list the template builds (range(), list + list)
};

class chat_template {
 public:
  // Parses the template source; bos_token / eos_token are the tokenizer's special tokens (empty: not defined,
  // as when tokenizer_config.json has none). Throws gsa::error naming the line on a syntax error.
  static chat_template parse(const std::string& source, std::string bos_token = "", std::string eos_token = "");
  // tokenizer_config.json's "chat_template" (+ bos_token / eos_token, which may be strings or {"content": ...}
  // objects) of a model dir; std::nullopt when the file or the key is absent. A malformed file: gsa::error
  // naming it. A list of named templates takes the one named "default".
  static std::optional<chat_template> from_model_dir(const std::string& dir);

  // The prompt for messages ({role, content}); add_generation_prompt appends the assistant's header.
  std::string render(const std::vector<chat_message>& messages, bool add_generation_prompt) const;
  // Full form: context holds the template's variables (messages with any fields, tools, documents,
  // add_generation_prompt, enable_thinking, date_string, ...). bos_token / eos_token are added unless the
  // context sets them. Keep the context an ordered_json: `tojson` prints keys in their order.
  std::string render(const nlohmann::ordered_json& context) const;

  const std::string& source() const { return source_; }
  const std::string& bos_token() const { return bos_; }
  const std::string& eos_token() const { return eos_; }
  chat_template_limits limits;

 private:
  std::string source_, bos_, eos_;
  std::shared_ptr<const jinja::node> program_;
};

}  // namespace gsa::serve
