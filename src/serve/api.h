// The OpenAI-compatible request and response bodies of `gsa serve` (docs/serve.md), without sockets: parsing and
// validating a request body into a completion_request, the length checks that need the prompt's token count,
// and the JSON of responses, stream chunks and errors. Everything a client can get wrong throws api_error
// carrying the HTTP status and OpenAI's error fields (type, param naming the field, code).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace gsa::serve {

// An error the client caused, sent as {"error": {"message", "type", "param", "code"}} with `status`.
class api_error : public std::runtime_error {
 public:
  api_error(int status, std::string message, std::string param = {}, std::string code = {},
            std::string type = "invalid_request_error")
      : std::runtime_error(message),
        status(status),
        type(std::move(type)),
        param(std::move(param)),
        code(std::move(code)) {}
  int status;
  std::string type, param, code;  // param / code: "" is sent as null
};

// {"error": {...}} for an error; param and code "" become null.
nlohmann::json error_json(const std::string& message, const std::string& type, const std::string& param = {},
                          const std::string& code = {});
nlohmann::json error_json(const api_error& e);

enum class endpoint { completions, chat };

struct message {
  std::string role, content;
};

struct completion_request {
  endpoint kind = endpoint::completions;
  std::string model;
  std::string prompt;               // completions: the text (when not given as token ids)
  std::vector<int32_t> prompt_ids;  // completions: the prompt given as token ids
  bool prompt_is_ids = false;
  std::vector<message> messages;  // chat
  int64_t max_tokens = -1;        // -1: not given (see resolve_max_tokens)
  float temperature = 1.0f;       // OpenAI's default
  float top_p = 1.0f;
  std::optional<uint64_t> seed;   // none: a fresh random seed per request
  std::vector<std::string> stop;  // at most 4, each non-empty
  int64_t n = 1;                  // choices, each sampled on its own (seed + i when a seed is given)
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool gsa_stats = false;      // "gsa": {"stats": true}: the extension object in the response
  bool gsa_reuse = true;       // "gsa": {"reuse": false}: always prefill, never continue a held session
};

// Limits of the bodies a server accepts.
constexpr size_t max_stop_sequences = 4;
constexpr int64_t max_choices = 16;  // n: each choice holds a session while it generates
constexpr int64_t default_completion_tokens = 16;  // OpenAI's default max_tokens for /v1/completions

// Parses and validates a body (which must be valid UTF-8 and a JSON object; nesting is bounded). Checks types
// and ranges of every field it knows (n in 1 .. max_choices), refuses what gsa does not support (best_of other
// than n, echo, logprobs, non-zero penalties, several prompts) naming the field; unknown fields are ignored as
// OpenAI's server does.
// Does not check the model name (see check_model) or token counts (see resolve_max_tokens).
completion_request parse_request(std::string_view body, endpoint kind);

// 404 model_not_found unless name is the served model id.
void check_model(const completion_request& r, const std::string& served_id);

// The number of tokens to generate: the request's max_tokens, or the default (completions: 16; chat: the rest
// of the context window). 400 context_length_exceeded when the prompt alone reaches max_context, or when the
// prompt plus max_tokens exceeds it (message with the three numbers, as OpenAI's).
int64_t resolve_max_tokens(const completion_request& r, int64_t prompt_tokens, int64_t max_context);

// The first byte offset where text is not valid UTF-8 (overlongs, surrogates and code points past U+10FFFF are
// invalid), or npos when it is valid.
size_t utf8_invalid_at(std::string_view text);
// Bytes of text that end on a character boundary: a trailing incomplete multi-byte sequence is held back.
size_t utf8_complete_prefix(std::string_view text);

struct usage {
  int64_t prompt_tokens = 0, completion_tokens = 0;
};
nlohmann::json usage_json(const usage& u);

// One choice of a response: its text and finish reason.
struct choice {
  std::string text, finish_reason;
};
// The whole response of a non-streaming request, choices in index order. gsa: the extension object, or null.
nlohmann::json response_json(endpoint kind, const std::string& id, int64_t created, const std::string& model,
                             const std::vector<choice>& choices, const usage& u, const nlohmann::json& gsa);
// The same with one choice.
nlohmann::json response_json(endpoint kind, const std::string& id, int64_t created, const std::string& model,
                             const std::string& text, const std::string& finish_reason, const usage& u,
                             const nlohmann::json& gsa);
// One chunk of a stream for the choice `index`. first: the chat chunk that carries the role. finish_reason "" is
// sent as null.
nlohmann::json chunk_json(endpoint kind, const std::string& id, int64_t created, const std::string& model,
                          const std::string& text, const std::string& finish_reason, bool first, int64_t index = 0);
// The final usage chunk of a stream (stream_options.include_usage): empty choices, usage set.
nlohmann::json usage_chunk_json(endpoint kind, const std::string& id, int64_t created, const std::string& model,
                                const usage& u);
// JSON text that survives invalid UTF-8 in generated text (a token may end inside a character): replaced by U+FFFD.
std::string dump(const nlohmann::json& j);

}  // namespace gsa::serve
