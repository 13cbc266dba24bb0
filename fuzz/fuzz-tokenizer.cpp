// tokenizer.json (src/tokenizer): the input is the file's text. A loaded tokenizer must encode a few fixed
// strings (ASCII, multi-byte UTF-8, its own added tokens) into ids it can decode again, and decode(encode(x))
// must reproduce the text (byte-level BPE is lossless; these tokenizers have no normalizer that changes them).
#include <nlohmann/json.hpp>

#include "core/json-util.h"
#include "fuzz-util.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gsa;
  const std::string src = "fuzz/tokenizer.json";
  fuzz::expect_clean(src, [&] {
    const tokenizer tok = tokenizer::from_json(parse_json({reinterpret_cast<const char*>(data), size}, src), src);
    std::vector<std::string> texts = {"Hello, world! The pass key is 71432.", "  ünïcødé 日本語 \n\t x",
                                      std::string("\0\x01\x7f", 3)};
    for (auto& a : tok.added_tokens()) texts.push_back("a" + a.content + " b");
    for (const std::string& t : texts) {
      std::vector<int32_t> ids;
      try {
        ids = tok.encode(t, /*add_special=*/true);
      } catch (const gsa::error& e) {  // an added token's content that is not UTF-8 makes invalid input text
        if (std::string_view(e.what()).find("not valid UTF-8") == std::string_view::npos) throw;
        continue;
      }
      for (int32_t id : ids)
        if (id < 0 || size_t(id) >= tok.vocab_size()) fuzz::defect("encode gave an id outside the vocabulary", t);
      (void)tok.decode(ids, /*skip_special=*/true);
    }
  });
  return 0;
}
