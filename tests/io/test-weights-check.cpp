// Weights that hold NaN or Inf (issue 12): `gsa forward` printed "loss -nan" and exited 0. check_finite_weights
// (`gsa info --check`) names the file, the tensor and the first bad element, for every floating-point dtype and
// for data the header left unaligned.
#include <gtest/gtest.h>

#include <cmath>

#include "io-test-util.h"
#include "io/model-dir.h"
#include "test-util.h"

namespace gsa {
namespace {

using test::error_of;
using test::scratch_dir;

model_config small_config() {
  nlohmann::json j = {{"model_type", "llama"}, {"vocab_size", 11},       {"hidden_size", 8},
                      {"intermediate_size", 6}, {"num_hidden_layers", 2}, {"num_attention_heads", 2}};
  return model_config_from_json(j, "small");
}

std::vector<std::pair<std::string, Tensor>> ones(const model_config& c, dtype t) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& [name, shape] : expected_tensors(c)) {
    Tensor w(shape);
    for (int64_t i = 0; i < w.numel(); i++) w.f32()[i] = 0.5f;
    out.push_back({name, w.to(t)});
  }
  return out;
}

TEST(WeightsCheck, NamesTheTensorAndElementHoldingNaNOrInf) {
  const model_config c = small_config();
  const std::string name = "model.layers.1.self_attn.k_proj.weight";  // (8, 8)
  for (dtype t : {dtype::f32, dtype::bf16, dtype::f16}) {
    for (float bad : {NAN, INFINITY, -INFINITY}) {
      scratch_dir d;
      auto w = ones(c, dtype::f32);
      save_model_dir(d.str(), c, [&] {
        auto conv = w;
        for (auto& [n, x] : conv) x = x.to(t);
        return conv;
      }());
      EXPECT_NO_THROW(check_finite_weights(safetensors_set::open(d.str()), c));
      for (auto& [n, x] : w)
        if (n == name) x.f32()[3 * 8 + 5] = bad;
      for (auto& [n, x] : w) x = x.to(t);
      save_model_dir(d.str(), c, w);
      const auto set = safetensors_set::open(d.str());
      EXPECT_EQ(set.file_of(name).first_non_finite(name), 3 * 8 + 5);
      const std::string m = error_of([&] { check_finite_weights(set, c); });
      EXPECT_CONTAINS(m, d / "model.safetensors");
      EXPECT_CONTAINS(m, name);
      EXPECT_CONTAINS(m, "element [3, 5]");
    }
  }
}

TEST(WeightsCheck, UnalignedDataIsReadToo) {
  scratch_dir d;
  const std::string p = d / "u.safetensors";
  std::string data(12, '\0');
  const float vals[3] = {1.0f, 2.0f, NAN};
  std::memcpy(data.data(), vals, 12);
  // A 55-byte header leaves the data at file offset 63: unaligned for floats.
  test::write_bytes(p, test::st_bytes(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})", data, false));
  EXPECT_EQ(safetensors_file::open(p).first_non_finite("x"), 2);
}

}  // namespace
}  // namespace gsa
