#include "core/log.h"

#include <cstdlib>
#include <cstring>

namespace gsa {

static log_level initial_level() {
  const char* env = std::getenv("GSA_LOG");
  if (!env) return log_level::info;
  if (!std::strcmp(env, "debug")) return log_level::debug;
  if (!std::strcmp(env, "warn")) return log_level::warn;
  if (!std::strcmp(env, "error")) return log_level::error;
  if (!std::strcmp(env, "quiet")) return log_level::quiet;
  return log_level::info;
}

static log_level g_level = initial_level();

log_level get_log_level() { return g_level; }
void set_log_level(log_level level) { g_level = level; }

}  // namespace gsa
