// Trainer state (src/train/checkpoint: trainer.json): the input is the file's text. A state that
// check_trainer_state accepts must then restore the data mixer without any further error, as a resume does.
#include <nlohmann/json.hpp>

#include "core/json-util.h"
#include "fuzz-util.h"
#include "train/checkpoint.h"
#include "train/mix.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gsa;
  const std::string src = "fuzz/checkpoint-1/trainer.json";
  fuzz::expect_clean(src, [&] {
    const nlohmann::json j = parse_json({reinterpret_cast<const char*>(data), size}, src);
    check_trainer_state(j, src);
    sample_mixer mixer(parse_mix("passkey"), nullptr,
                       [](const std::string&, int64_t, uint64_t) { return train_sample{}; }, 64, 0);
    try {
      mixer.set_state(j.at("mixer"));
      (void)j.at("step").get<int64_t>();
      (void)j.value("tokens", int64_t(0));
      (void)j.value("added_gist_ids", std::vector<int32_t>{});
    } catch (const std::exception& e) {
      fuzz::defect("a trainer state that check_trainer_state accepted fails on resume", e.what());
    }
  });
  return 0;
}
