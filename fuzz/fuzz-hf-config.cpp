// config.json (src/io/hf-config) including its "gsa" object (src/gist/config): the input is the file's text.
// A parsed config must give a parameter count and tensor list without overflow, write back to JSON and parse
// again to the same sizes; its "gsa" object is parsed and validated as a session does.
#include <nlohmann/json.hpp>

#include "core/json-util.h"
#include "fuzz-util.h"
#include "gist/config.h"
#include "io/hf-config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gsa;
  const std::string src = "fuzz/config.json";
  fuzz::expect_clean(src, [&] {
    const nlohmann::json j = parse_json({reinterpret_cast<const char*>(data), size}, src);
    const model_config c = model_config_from_json(j, src);
    const int64_t n = parameter_count(c);
    if (n <= 0) fuzz::defect("a non-positive parameter count", j.dump());
    const model_config back = model_config_from_json(model_config_to_json(c), src);
    if (parameter_count(back) != n || back.head_dim != c.head_dim || back.vocab_size != c.vocab_size)
      fuzz::defect("config.json does not survive a round trip", j.dump());
    if (!c.gsa.is_null()) {
      try {
        gist::gsa_config g = gist::gsa_config_from_json(c.gsa);
        g.validate();
        (void)g.ratio();
        (void)gist::gsa_config_to_json(g).dump();
      } catch (const gsa::error& e) {  // the gsa object's errors name the field ("gsa.chunk", ...)
        if (std::string_view(e.what()).find("gsa") == std::string_view::npos) throw;
      }
    }
  });
  return 0;
}
