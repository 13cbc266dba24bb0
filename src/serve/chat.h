// The chat endpoint's prompt: the messages rendered through the model's chat_template (serve/chat-template.h,
// tokenizer_config.json) with the generation prompt appended. A model without a template still serves
// completions; its chat endpoint answers 400 "model has no chat_template".
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "serve/api.h"

namespace gsa::serve {

// Renders messages to the prompt text; throws api_error (400) when the template refuses them.
using chat_renderer = std::function<std::string(const std::vector<message>&)>;

// The model directory's template, or an empty function when it has none.
chat_renderer chat_renderer_from_model_dir(const std::string& dir);

}  // namespace gsa::serve
