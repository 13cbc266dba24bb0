// Chat rendering through serve/chat-template.h; contract in chat.h.
#include "serve/chat.h"

#include <memory>

#include "serve/chat-template.h"

namespace gsa::serve {

chat_renderer chat_renderer_from_model_dir(const std::string& dir) {
  auto t = chat_template::from_model_dir(dir);
  if (!t) return {};
  auto tmpl = std::make_shared<chat_template>(std::move(*t));
  return [tmpl](const std::vector<message>& ms) {
    std::vector<chat_message> cm;
    cm.reserve(ms.size());
    for (const auto& m : ms) cm.push_back({m.role, m.content});
    try {
      return tmpl->render(cm, true);
    } catch (const std::exception& e) {
      throw api_error(400, std::string("the model's chat_template refused the messages: ") + e.what(), "messages",
                      "invalid_value");
    }
  };
}

}  // namespace gsa::serve
