// safetensors: a hand-built file parsed byte for byte, round trips in every float dtype, header padding, the
// atomic write, sharded sets, and every kind of bad file (each must throw one gsa::error naming the file and
// the tensor at fault).
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "io-test-util.h"
#include "io/safetensors.h"
#include "test-util.h"

namespace gsa {
namespace {

using test::error_of;
using test::scratch_dir;
using test::st_bytes;
using test::write_bytes;

// Data section of the hand-built file, little-endian bytes written out by hand:
// a F32 [1.0, -2.5], b BF16 [1.5, -2.0], c F16 [1.0, -5.0], i I64 [-7].
const std::string hand_data = std::string("\x00\x00\x80\x3f\x00\x00\x20\xc0", 8) +  // a
                              std::string("\xc0\x3f\x00\xc0", 4) +                  // b
                              std::string("\x00\x3c\x00\xc5", 4) +                  // c
                              std::string("\xf9\xff\xff\xff\xff\xff\xff\xff", 8);   // i
const std::string hand_header =
    R"({"i":{"dtype":"I64","shape":[1],"data_offsets":[16,24]},)"
    R"("__metadata__":{"format":"pt","note":"hand"},)"
    R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
    R"("c":{"dtype":"F16","shape":[2,1],"data_offsets":[12,16]},)"
    R"("b":{"dtype":"BF16","shape":[1,2],"data_offsets":[8,12]}})";

TEST(Safetensors, HandBuiltFileParsesExactly) {
  scratch_dir d;
  std::string p = d / "hand.safetensors";
  write_bytes(p, st_bytes(hand_header, hand_data));
  auto f = safetensors_file::open(p);
  EXPECT_EQ(f.names(), (std::vector<std::string>{"a", "b", "c", "i"}));  // offset order, not header order
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("note"), "hand");
  EXPECT_FALSE(f.has("__metadata__"));
  auto& b = f.info("b");
  EXPECT_EQ(b.type, dtype::bf16);
  EXPECT_EQ(b.shape, (shape_t{1, 2}));
  EXPECT_EQ(b.offset, 8u);
  EXPECT_EQ(b.nbytes, 4u);
  EXPECT_EQ(f.info("c").shape, (shape_t{2, 1}));

  Tensor a = f.view("a");
  EXPECT_FALSE(a.owning());
  EXPECT_EQ(a.f32()[0], 1.0f);
  EXPECT_EQ(a.f32()[1], -2.5f);
  Tensor i = f.view("i");
  EXPECT_EQ(i.type(), dtype::i64);
  EXPECT_EQ(static_cast<const int64_t*>(i.raw())[0], -7);

  auto bf = f.load_f32("b", {1, 2});
  EXPECT_EQ(bf.f32()[0], 1.5f);
  EXPECT_EQ(bf.f32()[1], -2.0f);
  auto cf = f.load_f32("c");
  EXPECT_EQ(cf.shape(), (shape_t{2, 1}));
  EXPECT_EQ(cf.f32()[0], 1.0f);
  EXPECT_EQ(cf.f32()[1], -5.0f);
}

TEST(Safetensors, ViewsOutliveTheFirstHandle) {
  scratch_dir d;
  std::string p = d / "hand.safetensors";
  write_bytes(p, st_bytes(hand_header, hand_data));
  Tensor a;
  safetensors_file keep;
  {
    auto f = safetensors_file::open(p);
    a = f.view("a");
    keep = f;  // copies share the mapping
  }
  EXPECT_EQ(a.f32()[1], -2.5f);
  EXPECT_EQ(keep.load_f32("a").f32()[0], 1.0f);
}

TEST(Safetensors, UnpaddedHeaderLoadsButRefusesMisalignedViews) {
  scratch_dir d;
  std::string h = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  while (h.size() % 8 != 3) h += ' ';
  std::string p = d / "odd.safetensors";
  write_bytes(p, st_bytes(h, hand_data.substr(0, 8), false));
  auto f = safetensors_file::open(p);
  auto a = f.load_f32("a", {2});
  EXPECT_EQ(a.f32()[0], 1.0f);
  EXPECT_EQ(a.f32()[1], -2.5f);
  std::string msg = error_of([&] { f.view("a"); });
  EXPECT_CONTAINS(msg, p);
  EXPECT_CONTAINS(msg, "'a'");
  EXPECT_CONTAINS(msg, "aligned");
}

// Written by write_safetensors, read back: every value equals the reference conversion of its f32 source.
TEST(Safetensors, RoundTripF32Bf16F16) {
  scratch_dir d;
  rng r(42);
  auto src = test::randn(6 * 5, r, 3.0f);
  src[0] = 0.0f;
  src[1] = -0.0f;
  src[2] = 65504.0f;    // f16 max
  src[3] = 1e-7f;       // f16 subnormal
  src[4] = 1.00390625f; // bf16 rounding tie
  Tensor base({6, 5});
  std::memcpy(base.f32(), src.data(), src.size() * 4);
  for (dtype t : {dtype::f32, dtype::bf16, dtype::f16}) {
    SCOPED_TRACE(dtype_name(t));
    Tensor stored = base.to(t);
    Tensor ids({3}, dtype::i32);
    for (int k = 0; k < 3; k++) ids.i32()[k] = 100 * k - 1;
    Tensor empty({0, 4}, t);
    Tensor scalar({}, t);
    std::string p = d / (std::string("rt-") + dtype_name(t) + ".safetensors");
    write_safetensors(p, {{"w", stored}, {"ids", ids}, {"empty", empty}, {"scalar", scalar}}, {{"step", "7"}});
    auto f = safetensors_file::open(p);
    EXPECT_EQ(f.names(), (std::vector<std::string>{"w", "ids", "empty", "scalar"}));
    EXPECT_EQ(f.metadata().at("step"), "7");
    EXPECT_EQ(f.info("w").type, t);
    EXPECT_EQ(f.info("empty").shape, (shape_t{0, 4}));
    EXPECT_EQ(f.info("scalar").shape, shape_t{});
    // Contiguous, in the given order.
    EXPECT_EQ(f.info("w").offset, 0u);
    EXPECT_EQ(f.info("ids").offset, stored.nbytes());
    Tensor v = f.view("w");
    ASSERT_EQ(v.nbytes(), stored.nbytes());
    EXPECT_EQ(std::memcmp(v.raw(), stored.raw(), stored.nbytes()), 0);
    Tensor back = f.load_f32("w", {6, 5});
    for (size_t k = 0; k < src.size(); k++) {
      float want = t == dtype::f32 ? src[k] : t == dtype::bf16 ? bf16_to_f32(f32_to_bf16(src[k])) : f16_to_f32(f32_to_f16(src[k]));
      ASSERT_EQ(std::memcmp(&back.f32()[k], &want, 4), 0) << "element " << k << " of " << src[k];
    }
    Tensor iv = f.view("ids");
    EXPECT_EQ(iv.i32()[2], 199);
    EXPECT_EQ(f.load_f32("scalar").numel(), 1);
  }
}

TEST(Safetensors, HeaderIsPaddedWithSpacesToEightBytes) {
  scratch_dir d;
  Tensor t({1});
  for (int len = 1; len <= 9; len++) {  // names of every length mod 8
    std::string p = d / "pad.safetensors";
    write_safetensors(p, {{std::string(len, 'x'), t}});
    std::string bytes = test::read_bytes(p);
    ASSERT_GE(bytes.size(), 8u);
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n |= uint64_t(uint8_t(bytes[i])) << (8 * i);
    EXPECT_EQ(n % 8, 0u) << "name length " << len;
    EXPECT_EQ(bytes.size(), 8 + n + 4);
    std::string header = bytes.substr(8, n);
    size_t end = header.find_last_not_of(' ');
    EXPECT_EQ(header[end], '}');
    EXPECT_LT(n - (end + 1), 8u);  // at most 7 spaces
    auto j = nlohmann::json::parse(header);
    EXPECT_EQ(j[std::string(len, 'x')]["data_offsets"], nlohmann::json({0, 4}));
  }
}

TEST(Safetensors, WriteReplacesAtomicallyAndKeepsTheOldFileOnError) {
  scratch_dir d;
  std::string p = d / "m.safetensors";
  Tensor a({2});
  a.f32()[0] = 5;
  write_safetensors(p, {{"a", a}});
  a.f32()[0] = 6;
  write_safetensors(p, {{"a", a}});
  EXPECT_EQ(safetensors_file::open(p).load_f32("a").f32()[0], 6.0f);
  EXPECT_FALSE(std::filesystem::exists(p + ".tmp"));
  // A failing write (duplicate name) leaves the good file as it was and no .tmp behind.
  std::string msg = error_of([&] { write_safetensors(p, {{"a", a}, {"a", a}}); });
  EXPECT_CONTAINS(msg, p);
  EXPECT_CONTAINS(msg, "'a'");
  EXPECT_EQ(safetensors_file::open(p).load_f32("a").f32()[0], 6.0f);
  EXPECT_FALSE(std::filesystem::exists(p + ".tmp"));
  msg = error_of([&] { write_safetensors(d / "no-such-dir/x.safetensors", {{"a", a}}); });
  EXPECT_CONTAINS(msg, "no-such-dir/x.safetensors");
}

// --- sharded sets ---

TEST(SafetensorsSet, IndexWithTwoShards) {
  scratch_dir d;
  Tensor a({2, 2}), b({3}, dtype::bf16), c({1});
  for (int k = 0; k < 4; k++) a.f32()[k] = float(k);
  c.f32()[0] = 9;
  write_safetensors(d / "model-00001-of-00002.safetensors", {{"a", a}, {"b", b}});
  write_safetensors(d / "model-00002-of-00002.safetensors", {{"c", c}});
  nlohmann::json idx = {{"metadata", {{"total_size", 26}}},
                        {"weight_map",
                         {{"a", "model-00001-of-00002.safetensors"},
                          {"b", "model-00001-of-00002.safetensors"},
                          {"c", "model-00002-of-00002.safetensors"}}}};
  write_bytes(d / "model.safetensors.index.json", idx.dump());
  for (std::string where : {d.str(), d / "model.safetensors.index.json"}) {
    auto s = safetensors_set::open(where);
    EXPECT_EQ(s.files().size(), 2u);
    EXPECT_EQ(s.names(), (std::vector<std::string>{"a", "b", "c"}));
    EXPECT_EQ(s.load_f32("a", {2, 2}).f32()[3], 3.0f);
    EXPECT_EQ(s.load_f32("c").f32()[0], 9.0f);
    EXPECT_EQ(s.info("b").type, dtype::bf16);
    EXPECT_CONTAINS(s.file_of("c").path(), "model-00002-of-00002.safetensors");
    // Errors name the shard that holds the tensor.
    std::string msg = error_of([&] { s.load_f32("c", {2}); });
    EXPECT_CONTAINS(msg, "model-00002-of-00002.safetensors");
    EXPECT_CONTAINS(msg, "'c'");
    msg = error_of([&] { s.info("zzz"); });
    EXPECT_CONTAINS(msg, "model.safetensors.index.json");
    EXPECT_CONTAINS(msg, "'zzz'");
  }
  // An index naming a tensor its shard lacks.
  idx["weight_map"]["d"] = "model-00002-of-00002.safetensors";
  write_bytes(d / "model.safetensors.index.json", idx.dump());
  std::string msg = error_of([&] { safetensors_set::open(d.str()); });
  EXPECT_CONTAINS(msg, "model-00002-of-00002.safetensors");
  EXPECT_CONTAINS(msg, "'d'");
  // A shard outside the directory is refused.
  idx["weight_map"]["d"] = "../elsewhere.safetensors";
  write_bytes(d / "model.safetensors.index.json", idx.dump());
  msg = error_of([&] { safetensors_set::open(d.str()); });
  EXPECT_CONTAINS(msg, "'d'");
  EXPECT_CONTAINS(msg, "../elsewhere.safetensors");
  // No weight_map.
  write_bytes(d / "model.safetensors.index.json", R"({"metadata": {}})");
  msg = error_of([&] { safetensors_set::open(d.str()); });
  EXPECT_CONTAINS(msg, "model.safetensors.index.json");
  EXPECT_CONTAINS(msg, "weight_map");
}

TEST(SafetensorsSet, SingleFileAndEmptyDirectory) {
  scratch_dir d;
  Tensor a({2});
  write_safetensors(d / "model.safetensors", {{"a", a}});
  auto s = safetensors_set::open(d.str());
  EXPECT_EQ(s.names(), std::vector<std::string>{"a"});
  EXPECT_CONTAINS(s.path(), "model.safetensors");
  std::filesystem::remove(d / "model.safetensors");
  std::string msg = error_of([&] { safetensors_set::open(d.str()); });
  EXPECT_CONTAINS(msg, d.str());
  EXPECT_CONTAINS(msg, "model.safetensors");
}

// --- bad files ---

struct bad_case {
  const char* what;
  std::string header;
  std::string data;
  std::vector<std::string> expect;  // substrings of the message besides the path
};

TEST(SafetensorsBad, CorruptHeaders) {
  scratch_dir d;
  const std::string f32x2 = hand_data.substr(0, 8);
  std::vector<bad_case> cases = {
      {"invalid JSON", R"({"a":{"dtype":"F32",)", f32x2, {"not valid JSON"}},
      {"not an object", R"([1,2])", f32x2, {"not a JSON object"}},
      {"offsets out of range", R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", f32x2,
       {"'a'", "[0, 16]", "data section (8 bytes)"}},
      {"overlap", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       f32x2 + f32x2, {"'a'", "'b'", "overlap"}},
      {"size/dtype mismatch", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", f32x2,
       {"'a'", "[3]", "needs 12"}},
      {"bf16 size mismatch", R"({"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,8]}})", f32x2,
       {"'a'", "BF16", "needs 4"}},
      {"unknown dtype", R"({"a":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}})", f32x2,
       {"'a'", "F8_E4M3", "BF16"}},
      {"missing dtype", R"({"a":{"shape":[2],"data_offsets":[0,8]}})", f32x2, {"'a'", "'dtype'"}},
      {"missing shape", R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", f32x2, {"'a'", "'shape'"}},
      {"missing offsets", R"({"a":{"dtype":"F32","shape":[2]}})", f32x2, {"'a'", "'data_offsets'"}},
      {"negative dim", R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", f32x2, {"'a'", "shape"}},
      {"reversed offsets", R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", f32x2, {"'a'", "[8, 0]"}},
      {"huge shape", R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", f32x2,
       {"'a'", "2^64"}},
      {"bad metadata", R"({"__metadata__":{"k":1},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", f32x2,
       {"__metadata__", "'k'"}},
  };
  for (auto& c : cases) {
    SCOPED_TRACE(c.what);
    std::string p = d / "bad.safetensors";
    write_bytes(p, st_bytes(c.header, c.data));
    std::string msg = error_of([&] { safetensors_file::open(p); });
    EXPECT_CONTAINS(msg, p);
    for (auto& s : c.expect) EXPECT_CONTAINS(msg, s);
  }
}

TEST(SafetensorsBad, TruncatedAtEveryStage) {
  scratch_dir d;
  std::string good = st_bytes(hand_header, hand_data);
  size_t n = good.size() - 8 - hand_data.size();
  // Inside the length, inside the header, just after the header, inside the data, one byte short.
  std::vector<size_t> cuts = {0, 3, 7, 8, 8 + n / 2, 8 + n, 8 + n + 5, good.size() - 1};
  for (size_t cut : cuts) {
    SCOPED_TRACE("cut at " + std::to_string(cut));
    std::string p = d / "cut.safetensors";
    write_bytes(p, good.substr(0, cut));
    std::string msg = error_of([&] { safetensors_file::open(p); });
    EXPECT_CONTAINS(msg, p);
    EXPECT_CONTAINS(msg, "truncated");
  }
  // Cut inside the data: the message names a tensor whose bytes are missing ("i" is last).
  std::string p = d / "cut.safetensors";
  write_bytes(p, good.substr(0, good.size() - 1));
  EXPECT_CONTAINS(error_of([&] { safetensors_file::open(p); }), "'i'");
}

TEST(SafetensorsBad, HeaderLengthLargerThanFile) {
  scratch_dir d;
  std::string p = d / "long.safetensors";
  write_bytes(p, test::le_u64(1000) + "{}      ");
  std::string msg = error_of([&] { safetensors_file::open(p); });
  EXPECT_CONTAINS(msg, p);
  EXPECT_CONTAINS(msg, "1000");
  write_bytes(p, test::le_u64(~uint64_t(0)) + "{}      ");  // would overflow 8 + n
  msg = error_of([&] { safetensors_file::open(p); });
  EXPECT_CONTAINS(msg, p);
  EXPECT_CONTAINS(msg, "header length");
}

TEST(SafetensorsBad, MissingFileTensorAndWrongShapeOrType) {
  scratch_dir d;
  std::string msg = error_of([&] { safetensors_file::open(d / "nope.safetensors"); });
  EXPECT_CONTAINS(msg, d / "nope.safetensors");
  std::string p = d / "hand.safetensors";
  write_bytes(p, st_bytes(hand_header, hand_data));
  auto f = safetensors_file::open(p);
  msg = error_of([&] { f.load_f32("model.norm.weight"); });
  EXPECT_CONTAINS(msg, p);
  EXPECT_CONTAINS(msg, "'model.norm.weight'");
  msg = error_of([&] { f.view("zz"); });
  EXPECT_CONTAINS(msg, "'zz'");
  msg = error_of([&] { f.load_f32("b", {2, 1}); });
  EXPECT_EQ(msg, p + ": tensor 'b' has shape [1, 2] but the model expects [2, 1]");
  msg = error_of([&] { f.load_f32("i"); });
  EXPECT_CONTAINS(msg, p);
  EXPECT_CONTAINS(msg, "'i'");
  EXPECT_CONTAINS(msg, "I64");
}

}  // namespace
}  // namespace gsa
