#include "dist/process-group.h"

#include <cerrno>
#include <cstdlib>

#include "core/error.h"

namespace gsa::dist {

namespace {

// A whole decimal number in [lo, hi]; the error names the variable.
int parse_int(const std::string& s, const char* var, long lo, long hi, const char* what) {
  char* end = nullptr;
  errno = 0;
  const long v = s.empty() ? 0 : std::strtol(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno != 0 || s[0] == ' ' || s[0] == '+' || v < lo || v > hi)
    fail("{}='{}' is not {} ({} .. {}); {}", var, s, what, lo, hi,
         "set it as torchrun does, or start the run with `gsa train --gpus N` on one host");
  return int(v);
}

}  // namespace

process_group process_group_from(const std::function<std::optional<std::string>(const char*)>& get) {
  process_group g;
  const auto ws = get("WORLD_SIZE");
  if (!ws) return g;
  g.world_size = parse_int(*ws, "WORLD_SIZE", 1, 65536, "a process count");
  if (g.world_size == 1) return g;
  const auto need = [&](const char* var) {
    auto v = get(var);
    if (!v || v->empty())
      fail("WORLD_SIZE={} but {} is not set: every process of a data-parallel run needs RANK, MASTER_ADDR and "
           "MASTER_PORT (torchrun sets them; `gsa train --gpus N` sets them for one host)", g.world_size, var);
    return *v;
  };
  g.rank = parse_int(need("RANK"), "RANK", 0, g.world_size - 1, "a rank below WORLD_SIZE");
  const auto lr = get("LOCAL_RANK");
  g.local_rank = lr && !lr->empty() ? parse_int(*lr, "LOCAL_RANK", 0, 1023, "a GPU index on this host") : g.rank;
  g.master_addr = need("MASTER_ADDR");
  g.master_port = parse_int(need("MASTER_PORT"), "MASTER_PORT", 1, 65535, "a TCP port");
  return g;
}

process_group process_group_from_environment() {
  return process_group_from([](const char* var) -> std::optional<std::string> {
    const char* v = std::getenv(var);
    if (!v) return std::nullopt;
    return std::string(v);
  });
}

int dist_timeout_seconds() {
  const char* v = std::getenv("GSA_DIST_TIMEOUT");
  if (!v || !*v) return 120;
  return parse_int(v, "GSA_DIST_TIMEOUT", 1, 86400, "a number of seconds");
}

}  // namespace gsa::dist
