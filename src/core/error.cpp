#include "core/error.h"

namespace gsa {

void assert_failed(const char* expr, const char* file, int line, const std::string& msg) {
  throw error(fmt::format("internal error (a bug in gsa, please report it): {}:{}: assertion `{}` failed{}{}",
                          file, line, expr, msg.empty() ? "" : ": ", msg));
}

}  // namespace gsa
