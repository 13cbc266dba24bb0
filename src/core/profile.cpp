#include "core/profile.h"

#include <chrono>
#include <cstdlib>

namespace gsa {
namespace {
std::map<std::string, double>& counters() {
  static std::map<std::string, double> c;
  return c;
}
}  // namespace

bool profile_on() {
  static const bool on = std::getenv("GSA_TRAIN_PROFILE") != nullptr;
  return on;
}

void profile_add(const std::string& name, double ms) { counters()[name] += ms; }

double profile_clock_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::map<std::string, double> profile_take() {
  std::map<std::string, double> out;
  out.swap(counters());
  return out;
}

}  // namespace gsa
