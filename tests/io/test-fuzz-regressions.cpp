// Inputs found by the fuzzers (fuzz/, scripts/fuzz.sh), reduced to the bytes that matter. Each used to crash or
// to reach undefined behaviour under the sanitizers; each must now be refused with a gsa::error naming the file.
#include <gtest/gtest.h>

#include "io-test-util.h"
#include "io/safetensors.h"

namespace gsa {
namespace {

using test::error_of;
using test::scratch_dir;
using test::st_bytes;
using test::write_bytes;

// fuzz-safetensors: an empty tensor (0 bytes, so its offsets are right) naming huge dimensions. Loading it built
// row strides 2^40 x 2^40: signed overflow in core/tensor.cpp (UBSan), garbage strides without it.
TEST(FuzzRegressions, EmptyTensorWithHugeDimensions) {
  scratch_dir d;
  const std::string p = d / "huge.safetensors";
  for (const char* shape : {"[0,1099511627776,1099511627776]", "[0,9223372036854775807,2]", "[3,0,4611686018427387904,4]"}) {
    write_bytes(p, st_bytes(std::string(R"({"a":{"dtype":"F32","shape":)") + shape + R"(,"data_offsets":[0,0]}})", ""));
    const std::string msg = error_of([&] { safetensors_file::open(p); });
    EXPECT_CONTAINS(msg, p);
    EXPECT_CONTAINS(msg, "multiplies past 2^63");
  }
  // Empty tensors with ordinary dimensions still load.
  write_bytes(p, st_bytes(R"({"a":{"dtype":"F32","shape":[0,4096,4096],"data_offsets":[0,0]}})", ""));
  EXPECT_EQ(safetensors_file::open(p).load_f32("a").numel(), 0);
}

}  // namespace
}  // namespace gsa
