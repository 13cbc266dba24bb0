// Method names; see method.h.
#include "infer/method.h"

#include "core/error.h"

namespace gsa::infer {

const char* method_name(method m) {
  switch (m) {
    case method::full: return "full";
    case method::gist: return "gist";
    case method::gsa: return "gsa";
    case method::hgsa: return "hgsa";
    case method::streaming: return "streaming";
    case method::quest: return "quest";
    case method::moba: return "moba";
    case method::h2o: return "h2o";
  }
  return "?";
}

method method_from_name(const std::string& s) {
  for (method m : {method::full, method::gist, method::gsa, method::hgsa, method::streaming, method::quest,
                   method::moba, method::h2o})
    if (s == method_name(m)) return m;
  fail("unknown method '{}' (use gsa, hgsa, full, gist, streaming, quest, moba or h2o)", s);
}

bool uses_gists(method m) { return m == method::gist || m == method::gsa || m == method::hgsa; }

const char* prefill_mode_name(prefill_mode p) {
  switch (p) {
    case prefill_mode::automatic: return "auto";
    case prefill_mode::gist_mask: return "gist-mask";
    case prefill_mode::unfold: return "unfold";
  }
  return "?";
}

prefill_mode prefill_mode_from_name(const std::string& s) {
  for (prefill_mode p : {prefill_mode::automatic, prefill_mode::gist_mask, prefill_mode::unfold})
    if (s == prefill_mode_name(p)) return p;
  fail("unknown prefill mode '{}' (use auto, gist-mask or unfold)", s);
}

}  // namespace gsa::infer
