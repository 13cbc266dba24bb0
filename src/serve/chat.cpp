// Chat rendering through serve/chat-template.h; contract in chat.h.
#include "serve/chat.h"

#include <memory>

// The renderer is written alongside this server (issue 13, item 2); until its header is in the tree, every
// model is served as one without a template.
#if __has_include("serve/chat-template.h")
#include "serve/chat-template.h"
#define GSA_HAVE_CHAT_TEMPLATE 1
#endif

namespace gsa::serve {

#ifndef GSA_HAVE_CHAT_TEMPLATE
chat_renderer chat_renderer_from_model_dir(const std::string&) { return {}; }
#else
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
#endif

}  // namespace gsa::serve
