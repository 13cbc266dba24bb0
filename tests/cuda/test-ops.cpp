// Tests of the CUDA runtime (allocator, checked calls) and of every CUDA op against the CPU reference
// (backend/cpu/ops.h), in f32 and bf16. Every test skips without a usable GPU. matmul_forward of a few rows runs in
// the GEMV kernel (gemv.cu), of more rows in cuBLASLt: both are tested.
//
// Method. Inputs are fresh random values (seeded with the test's full name, none near zero). For bf16 the CPU
// reference runs in f32 on the bf16-rounded inputs, i.e. on exactly the values the GPU sees, so the only
// legitimate differences are (a) f32 summation order and exp/sqrt ulps and (b) the GPU's final rounding to bf16.
// Tolerances (rel-L2 = ||got - ref|| / ||ref||):
//  * f32 results: 1e-5. f32 rounding of a K-term sum grows like sqrt(K) * 6e-8, about 1e-6 for the sizes here, so
//    1e-5 has ~10x headroom, while any indexing / layout / missing-term bug gives errors of order 1.
//  * bf16 results: 2 x (measured rel-L2 between the reference and the reference rounded to bf16) + 1e-5. The GPU
//    result is the f32 value rounded once, so its distance to the reference is about that rounding error (~1e-3);
//    2x absorbs the f32 noise before rounding (it can flip a rounding direction).
//  * f32 outputs of bf16 runs (dw, dbias, rstd, lse, loss) use 1e-5: products of bf16 values are exact in f32.
//  * Ops where the GPU rounds an intermediate to bf16 (the LM head's dlogits) add that rounding's bound, 2^-9
//    relative per element, twice.
// Overwritten outputs are poisoned with NaN first (so an unwritten element fails: NaN propagates into rel-L2).
// Accumulated outputs are pre-filled with random values of the same RMS as the expected increment, so that both
// "overwrote instead of adding" and "added twice" fail.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "backend/cpu/ops.h"
#include "backend/cuda/ops-internal.h"
#include "backend/cuda/ops.h"
#include "backend/cuda/runtime.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/rng.h"

namespace gsa::cuda {
namespace {

#define GSA_REQUIRE_GPU()                                   \
  do {                                                      \
    std::string why_;                                       \
    if (!::gsa::cuda::available(&why_)) GTEST_SKIP() << why_; \
  } while (0)

uint64_t test_seed() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  uint64_t h = 1469598103934665603ull;
  for (const std::string& s : {std::string(info->test_suite_name()), std::string(info->name())})
    for (char c : s) h = (h ^ uint8_t(c)) * 1099511628211ull;
  return h;
}

// Normal values with |x| >= 0.05 * scale: no zeros (a zero would hide a missing term or factor).
std::vector<float> rand_vec(rng& r, size_t n, float scale = 1.0f) {
  std::vector<float> v(n);
  for (auto& x : v) {
    float z = r.normal();
    if (std::fabs(z) < 0.05f) z = z < 0 ? -0.05f : 0.05f;
    x = z * scale;
  }
  return v;
}

// The values a buffer of type t holds for v.
std::vector<float> as_dtype(std::vector<float> v, dtype t) {
  if (t == dtype::bf16)
    for (auto& x : v) x = bf16_to_f32(f32_to_bf16(x));
  return v;
}

double rel_l2(const std::vector<float>& got, const std::vector<float>& ref) {
  EXPECT_EQ(got.size(), ref.size());
  double num = 0, den = 1e-300;
  for (size_t i = 0; i < std::min(got.size(), ref.size()); i++) {
    const double d = double(got[i]) - ref[i];
    num += d * d;
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / den);  // NaN if got holds a NaN
}

double rms(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += double(x) * x;
  return v.empty() ? 0.0 : std::sqrt(s / v.size());
}

constexpr double f32_tol = 1e-5;
constexpr double bf16_unit = 1.0 / 512;  // 2^-9: the largest relative rounding error of bf16

// Tolerance for a result of type t against the f32 reference ref (see the file comment).
double tol(const std::vector<float>& ref, dtype t) {
  if (t == dtype::f32) return f32_tol;
  return 2.0 * rel_l2(as_dtype(ref, dtype::bf16), ref) + f32_tol;
}

// A device buffer from the caching allocator.
struct dbuf {
  void* p = nullptr;
  size_t bytes = 0;
  explicit dbuf(size_t b) : p(alloc(b)), bytes(b) {}
  ~dbuf() { release(p); }
  dbuf(const dbuf&) = delete;
  dbuf& operator=(const dbuf&) = delete;
  template <class T = void>
  T* as() const {
    return static_cast<T*>(p);
  }
};

std::unique_ptr<dbuf> upload(const std::vector<float>& v, dtype t) {
  auto b = std::make_unique<dbuf>(v.size() * dtype_size(t));
  std::vector<uint8_t> host(v.size() * dtype_size(t));
  convert_from_f32(host.data(), v.data(), t, v.size());
  copy_h2d(b->p, host.data(), host.size());
  return b;
}

template <class I>
std::unique_ptr<dbuf> upload_raw(const std::vector<I>& v) {
  auto b = std::make_unique<dbuf>(v.size() * sizeof(I));
  copy_h2d(b->p, v.data(), v.size() * sizeof(I));
  return b;
}

std::vector<float> download(const dbuf& b, size_t n, dtype t, size_t offset_elems = 0) {
  std::vector<uint8_t> host(n * dtype_size(t));
  copy_d2h(host.data(), static_cast<const char*>(b.p) + offset_elems * dtype_size(t), host.size());
  std::vector<float> v(n);
  convert_to_f32(v.data(), host.data(), t, n);
  return v;
}

// Every byte 0xff: NaN in f32 and in bf16.
void poison(dbuf& b) { GSA_CUDA_CHECK(cudaMemsetAsync(b.p, 0xff, b.bytes, ctx().stream)); }

// Pre-fill for an accumulated output: random values of type t with the RMS of the expected increment.
std::vector<float> prefill_like(rng& r, const std::vector<float>& increment, dtype t) {
  const double s = rms(increment);
  return as_dtype(rand_vec(r, increment.size(), float(s > 0 ? s : 1.0)), t);
}

std::vector<float> plus(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<float> r(a.size());
  for (size_t i = 0; i < a.size(); i++) r[i] = a[i] + b[i];
  return r;
}

// Sets the LM head's tile budget for one scope (forces several row blocks on small shapes).
struct tile_budget_guard {
  int64_t saved = detail::xent_tile_budget();
  explicit tile_budget_guard(int64_t floats) { detail::xent_tile_budget() = floats; }
  ~tile_budget_guard() { detail::xent_tile_budget() = saved; }
};

// ---- runtime ---------------------------------------------------------------------------------------------------

TEST(CudaRuntime, AllocatorReusesFreedBlockOfSameRoundedSize) {
  GSA_REQUIRE_GPU();
  const size_t base = bytes_in_use();
  void* a = alloc(1000);  // rounds to 1024
  EXPECT_EQ(bytes_in_use(), base + 1024);
  EXPECT_GE(peak_bytes_in_use(), base + 1024);
  release(a);
  EXPECT_EQ(bytes_in_use(), base);
  void* b = alloc(1010);  // same rounded size: the cached block comes back
  EXPECT_EQ(b, a);
  void* c = alloc(2000);  // another size: a new block
  EXPECT_NE(c, a);
  EXPECT_EQ(bytes_in_use(), base + 1024 + 2048);
  release(b);
  release(c);
  empty_cache();
  EXPECT_EQ(bytes_in_use(), base);
  void* z = alloc(0);  // never null
  EXPECT_NE(z, nullptr);
  release(z);
  release(nullptr);  // a no-op
}

TEST(CudaRuntime, OutOfMemoryThrowsWithAdviceAndLeavesTheDeviceUsable) {
  GSA_REQUIRE_GPU();
  try {
    alloc(size_t(1) << 52);  // 4 PiB
    FAIL() << "expected gsa::error";
  } catch (const gsa::error& e) {
    EXPECT_NE(std::string(e.what()).find("--batch"), std::string::npos) << e.what();
  }
  dbuf ok(4096);
  memset0(ok.p, ok.bytes);
  synchronize();
}

TEST(CudaRuntime, CheckedCallsNameTheCallAndSayWhatToDo) {
  GSA_REQUIRE_GPU();
  try {
    check(cudaErrorMemoryAllocation, "cudaMalloc(&p, n)", "x.cpp", 7);
    FAIL();
  } catch (const gsa::error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cudaMalloc(&p, n)"), std::string::npos) << m;
    EXPECT_NE(m.find("x.cpp:7"), std::string::npos) << m;
    EXPECT_NE(m.find("lower --length or --batch"), std::string::npos) << m;
  }
  try {
    check(cudaErrorNoDevice, "cudaSetDevice(0)", "x.cpp", 8);
    FAIL();
  } catch (const gsa::error& e) {
    EXPECT_NE(std::string(e.what()).find("--device cpu"), std::string::npos) << e.what();
  }
  EXPECT_THROW(check_cublas(CUBLAS_STATUS_NOT_SUPPORTED, "cublasLtMatmul", "x.cpp", 9), gsa::error);
  EXPECT_NO_THROW(check(cudaSuccess, "fine", "x.cpp", 10));
}

TEST(CudaRuntime, CopiesRoundTrip) {
  GSA_REQUIRE_GPU();
  std::vector<int32_t> src(1000);
  for (int i = 0; i < 1000; i++) src[i] = i * 7 - 3;
  dbuf a(4000), b(4000);
  copy_h2d(a.p, src.data(), 4000);
  copy_d2d(b.p, a.p, 4000);
  std::vector<int32_t> back(1000, 0);
  copy_d2h(back.data(), b.p, 4000);
  EXPECT_EQ(back, src);
  memset0(b.p, 4000);
  copy_d2h(back.data(), b.p, 4000);
  EXPECT_EQ(back, std::vector<int32_t>(1000, 0));
}

// ---- ops, per activation type ----------------------------------------------------------------------------------

class CudaOps : public ::testing::TestWithParam<dtype> {};

TEST_P(CudaOps, MatmulForward) {
  GSA_REQUIRE_GPU();
  const dtype t = GetParam();
  rng r(test_seed());
  struct shape {
    int M, K, N;
    bool bias;
  };
  for (const shape s : {shape{37, 64, 48, true}, shape{1, 96, 33, false}, shape{130, 4, 7, true},
                        shape{64, 300, 129, true}, shape{5, 0, 6, true}}) {
    SCOPED_TRACE(::testing::Message() << "M " << s.M << " K " << s.K << " N " << s.N << " bias " << s.bias);
    const auto x = as_dtype(rand_vec(r, size_t(s.M) * s.K), t);
    const auto w = as_dtype(rand_vec(r, size_t(s.N) * s.K, 0.1f), t);
    const auto bias = as_dtype(rand_vec(r, s.N), t);
    std::vector<float> ref(size_t(s.M) * s.N);
    cpu::matmul_forward(ref.data(), x.data(), w.data(), s.bias ? bias.data() : nullptr, s.M, s.K, s.N);
    auto dx = upload(x, t), dw = upload(w, t), db = upload(bias, t);
    dbuf dy(ref.size() * dtype_size(t));
    poison(dy);
    matmul_forward(dy.p, dx->p, dw->p, s.bias ? db->p : nullptr, s.M, s.K, s.N, t);
    EXPECT_LT(rel_l2(download(dy, ref.size(), t), ref), tol(ref, t));
  }
}

// The decode step's products (M <= 8 rows) run in gemv.cu's kernel: called directly it must take every such shape
// whose rows are 16-byte loads (K a multiple of 8 bf16 / 4 f32 values, aligned pointers), including K below one
// warp's sweep and K with a tail after the unrolled loop, and equal the CPU reference; other shapes it declines
// (nothing written), and matmul_forward then still computes them through cuBLASLt. With so few outputs (one, for
// M = N = 1) a sum's cancellation is not averaged away, so the f32 tolerance scales with the sums' condition
// ||sum |x| |w| || / ||sum x w||: summation order moves a result by eps |x| |w| per term, not by eps |result|.
TEST_P(CudaOps, MatmulForwardOfFewRowsByTheGemvKernel) {
  GSA_REQUIRE_GPU();
  const dtype t = GetParam();
  const int V = t == dtype::bf16 ? 8 : 4;
  rng r(test_seed());
  for (const int M : {1, 2, 3, 5, 8})
    for (const int K : {V, 64, 2056, 4096 + 3 * V})
      for (const int N : {1, 13, 300})
        for (const bool with_bias : {false, true}) {
          SCOPED_TRACE(::testing::Message() << "M " << M << " K " << K << " N " << N << " bias " << with_bias);
          const auto x = as_dtype(rand_vec(r, size_t(M) * K), t);
          const auto w = as_dtype(rand_vec(r, size_t(N) * K, 0.1f), t);
          const auto bias = as_dtype(rand_vec(r, N), t);
          std::vector<float> ref(size_t(M) * N), mag(size_t(M) * N);
          cpu::matmul_forward(ref.data(), x.data(), w.data(), with_bias ? bias.data() : nullptr, M, K, N);
          std::vector<float> ax(x), aw(w), ab(bias);
          for (auto* v : {&ax, &aw, &ab})
            for (float& e : *v) e = std::fabs(e);
          cpu::matmul_forward(mag.data(), ax.data(), aw.data(), with_bias ? ab.data() : nullptr, M, K, N);
          const double cond = std::max(1.0, rms(mag) / rms(ref));
          auto dx = upload(x, t), dw = upload(w, t), db = upload(bias, t);
          dbuf dy(ref.size() * dtype_size(t));
          poison(dy);
          ASSERT_TRUE(detail::gemv_rows(dy.p, dx->p, dw->p, with_bias ? db->p : nullptr, M, K, N, t));
          EXPECT_LT(rel_l2(download(dy, ref.size(), t), ref), t == dtype::f32 ? f32_tol * cond : tol(ref, t))
              << "condition " << cond;
        }
  // Declined: 9 rows, K not a multiple of a 16-byte load, x off 16-byte alignment; matmul_forward computes them.
  struct declined {
    int M, K, x_offset;
  };
  for (const declined d : {declined{9, 64, 0}, declined{2, V + 1, 0}, declined{2, 64, 1}}) {
    SCOPED_TRACE(::testing::Message() << "M " << d.M << " K " << d.K << " x offset " << d.x_offset);
    const int N = 17;
    const auto xs = as_dtype(rand_vec(r, size_t(d.M) * d.K + d.x_offset), t);
    const auto w = as_dtype(rand_vec(r, size_t(N) * d.K, 0.1f), t);
    std::vector<float> ref(size_t(d.M) * N);
    cpu::matmul_forward(ref.data(), xs.data() + d.x_offset, w.data(), nullptr, d.M, d.K, N);
    auto dx = upload(xs, t), dw = upload(w, t);
    const void* x0 = static_cast<const char*>(dx->p) + size_t(d.x_offset) * dtype_size(t);
    dbuf dy(ref.size() * dtype_size(t));
    poison(dy);
    EXPECT_FALSE(detail::gemv_rows(dy.p, x0, dw->p, nullptr, d.M, d.K, N, t));
    matmul_forward(dy.p, x0, dw->p, nullptr, d.M, d.K, N, t);
    EXPECT_LT(rel_l2(download(dy, ref.size(), t), ref), tol(ref, t));
  }
}

TEST_P(CudaOps, MatmulBackwardAccumulates) {
  GSA_REQUIRE_GPU();
  const dtype t = GetParam();
  rng r(test_seed());
  struct shape {
    int M, K, N;
  };
  for (const shape s : {shape{37, 64, 48}, shape{130, 4, 7}, shape{64, 300, 129}, shape{1, 32, 16}}) {
    SCOPED_TRACE(::testing::Message() << "M " << s.M << " K " << s.K << " N " << s.N);
    const auto x = as_dtype(rand_vec(r, size_t(s.M) * s.K), t);
    const auto w = as_dtype(rand_vec(r, size_t(s.N) * s.K, 0.1f), t);
    const auto dy = as_dtype(rand_vec(r, size_t(s.M) * s.N), t);
    std::vector<float> inc_dx(x.size(), 0.0f), inc_dw(w.size(), 0.0f), inc_db(s.N, 0.0f);
    cpu::matmul_backward(inc_dx.data(), inc_dw.data(), inc_db.data(), dy.data(), x.data(), w.data(), s.M, s.K, s.N);
    const auto old_dx = prefill_like(r, inc_dx, t);
    const auto old_dw = prefill_like(r, inc_dw, dtype::f32);
    const auto old_db = prefill_like(r, inc_db, dtype::f32);
    auto gx = upload(x, t), gw = upload(w, t), gdy = upload(dy, t);
    auto gdx = upload(old_dx, t), gdw = upload(old_dw, dtype::f32), gdb = upload(old_db, dtype::f32);
    matmul_backward(gdx->p, gdw->as<float>(), gdb->as<float>(), gdy->p, gx->p, gw->p, s.M, s.K, s.N, t);
    const auto ref_dx = plus(old_dx, inc_dx);
    EXPECT_LT(rel_l2(download(*gdx, x.size(), t), ref_dx), tol(ref_dx, t));
    EXPECT_LT(rel_l2(download(*gdw, w.size(), dtype::f32), plus(old_dw, inc_dw)), f32_tol);
    EXPECT_LT(rel_l2(download(*gdb, s.N, dtype::f32), plus(old_db, inc_db)), f32_tol);
    // Null outputs are skipped: dw alone, on a fresh pre-fill.
    auto gdw2 = upload(old_dw, dtype::f32);
    matmul_backward(nullptr, gdw2->as<float>(), nullptr, gdy->p, gx->p, gw->p, s.M, s.K, s.N, t);
    EXPECT_LT(rel_l2(download(*gdw2, w.size(), dtype::f32), plus(old_dw, inc_dw)), f32_tol);
  }
}

TEST_P(CudaOps, EmbeddingForwardCopiesRows) {
  GSA_REQUIRE_GPU();
  const dtype t = GetParam();
  rng r(test_seed());
  for (const int C : {64, 4, 100}) {
    SCOPED_TRACE(::testing::Message() << "C " << C);
    const int V = 50, T = 77;
    const auto table = as_dtype(rand_vec(r, size_t(V) * C), t);
    std::vector<int32_t> ids(T);
    for (auto& id : ids) id = int32_t(r.below(V));
    std::vector<float> ref(size_t(T) * C);
    cpu::embedding_forward(ref.data(), ids.data(), table.data(), T, C);
    auto gt = upload(table, t);
    auto gi = upload_raw(ids);
    dbuf gy(ref.size() * dtype_size(t));
    poison(gy);
    embedding_forward(gy.p, gi->as<int32_t>(), gt->p, T, C, t);
    EXPECT_EQ(download(gy, ref.size(), t), ref);  // a copy: exact
  }
}

TEST_P(CudaOps, EmbeddingBackwardAccumulatesDeterministically) {
  GSA_REQUIRE_GPU();
  const dtype t = GetParam();
  rng r(test_seed());
  for (const int C : {64, 4, 37}) {
    SCOPED_TRACE(::testing::Message() << "C " << C);
    const int V = 20, T = 300;  // many repeated ids; some rows of the table never hit
    const auto dy = as_dtype(rand_vec(r, size_t(T) * C), t);
    std::vector<int32_t> ids(T);
    for (auto& id : ids) id = int32_t(r.below(V - 3));
    std::vector<float> inc(size_t(V) * C, 0.0f);
    cpu::embedding_backward(inc.data(), dy.data(), ids.data(), T, C);
    const auto old = prefill_like(r, inc, dtype::f32);
    auto gdy = upload(dy, t);
    auto gi = upload_raw(ids);
    auto g1 = upload(old, dtype::f32), g2 = upload(old, dtype::f32);
    embedding_backward(g1->as<float>(), gdy->p, gi->as<int32_t>(), T, C, t);
    embedding_backward(g2->as<float>(), gdy->p, gi->as<int32_t>(), T, C, t);
    const auto got1 = download(*g1, inc.size(), dtype::f32), got2 = download(*g2, inc.size(), dtype::f32);
    EXPECT_LT(rel_l2(got1, plus(old, inc)), f32_tol);
    EXPECT_EQ(0, std::memcmp(got1.data(), got2.data(), got1.size() * sizeof(float))) << "not deterministic";
    for (int v = V - 3; v < V; v++)  // untouched rows keep their bits
      for (int c = 0; c < C; c++) EXPECT_EQ(got1[size_t(v) * C + c], old[size_t(v) * C + c]);
  }
}

TEST_P(CudaOps, RmsnormForward) {
  GSA_REQUIRE_GPU();
  const dtype t = GetParam();
  rng r(test_seed());
  for (const auto& [T, C] : {std::pair{67, 256}, std::pair{5, 4}, std::pair{33, 100}, std::pair{3, 4096}}) {
    SCOPED_TRACE(::testing::Message() << "T " << T << " C " << C);
    const auto x = as_dtype(rand_vec(r, size_t(T) * C, 2.0f), t);
    const auto w = as_dtype(rand_vec(r, C), t);
    std::vector<float> ref(x.size()), ref_rstd(T);
    cpu::rmsnorm_forward(ref.data(), ref_rstd.data(), x.data(), w.data(), T, C, 1e-5f);
    auto gx = upload(x, t), gw = upload(w, t);
    dbuf gy(x.size() * dtype_size(t)), gr(T * sizeof(float));
    poison(gy);
    poison(gr);
    rmsnorm_forward(gy.p, gr.as<float>(), gx->p, gw->p, T, C, 1e-5f, t);
    EXPECT_LT(rel_l2(download(gy, x.size(), t), ref), tol(ref, t));
    EXPECT_LT(rel_l2(download(gr, T, dtype::f32), ref_rstd), f32_tol);
  }
}

TEST_P(CudaOps, RmsnormBackwardAccumulates) {
  GSA_REQUIRE_GPU();
  const dtype t = GetParam();
  rng r(test_seed());
  for (const auto& [T, C] : {std::pair{67, 256}, std::pair{5, 4}, std::pair{33, 100}, std::pair{300, 64}}) {
    SCOPED_TRACE(::testing::Message() << "T " << T << " C " << C);
    const auto x = as_dtype(rand_vec(r, size_t(T) * C, 2.0f), t);
    const auto w = as_dtype(rand_vec(r, C), t);
    const auto dy = as_dtype(rand_vec(r, x.size()), t);
    std::vector<float> y(x.size()), rstd(T);
    cpu::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), T, C, 1e-5f);
    std::vector<float> inc_dx(x.size(), 0.0f), inc_dw(C, 0.0f);
    cpu::rmsnorm_backward(inc_dx.data(), inc_dw.data(), dy.data(), x.data(), w.data(), rstd.data(), T, C);
    const auto old_dx = prefill_like(r, inc_dx, t);
    const auto old_dw = prefill_like(r, inc_dw, dtype::f32);
    auto gx = upload(x, t), gw = upload(w, t), gdy = upload(dy, t), gr = upload(rstd, dtype::f32);
    auto gdx = upload(old_dx, t), gdw = upload(old_dw, dtype::f32);
    rmsnorm_backward(gdx->p, gdw->as<float>(), gdy->p, gx->p, gw->p, gr->as<float>(), T, C, t);
    const auto ref_dx = plus(old_dx, inc_dx);
    EXPECT_LT(rel_l2(download(*gdx, x.size(), t), ref_dx), tol(ref_dx, t));
    EXPECT_LT(rel_l2(download(*gdw, C, dtype::f32), plus(old_dw, inc_dw)), f32_tol);
  }
}

TEST_P(CudaOps, RopeForwardAndBackward) {
  GSA_REQUIRE_GPU();
  const dtype t = GetParam();
  rng r(test_seed());
  cpu::rope_scaling llama3;
  llama3.llama3 = true;
  for (const auto& [D, scaled] : {std::pair{64, true}, std::pair{128, false}, std::pair{6, false}}) {
    SCOPED_TRACE(::testing::Message() << "D " << D << " llama3 " << scaled);
    const int T = 37, H = 3;
    const auto inv = cpu::rope_inv_freq(D, 500000.0f, scaled ? llama3 : cpu::rope_scaling{});
    std::vector<int32_t> pos(T);
    for (auto& p : pos) p = int32_t(r.below(20000));
    const auto x = as_dtype(rand_vec(r, size_t(T) * H * D), t);
    auto gpos = upload_raw(pos);
    auto ginv = upload(inv, dtype::f32);
    for (const bool forward : {true, false}) {
      auto ref = x;
      auto gx = upload(x, t);
      if (forward) {
        cpu::rope_forward(ref.data(), pos.data(), inv.data(), T, H, D);
        rope_forward(gx->p, gpos->as<int32_t>(), ginv->as<float>(), T, H, D, t);
      } else {
        cpu::rope_backward(ref.data(), pos.data(), inv.data(), T, H, D);
        rope_backward(gx->p, gpos->as<int32_t>(), ginv->as<float>(), T, H, D, t);
      }
      EXPECT_LT(rel_l2(download(*gx, x.size(), t), ref), tol(ref, t)) << (forward ? "forward" : "backward");
    }
  }
}

TEST_P(CudaOps, SwigluForwardAndBackward) {
  GSA_REQUIRE_GPU();
  const dtype t = GetParam();
  rng r(test_seed());
  // 4099: a tail after the 16-byte packs; offset 1: misaligned pointers take the scalar path.
  for (const auto& [n, offset] : {std::pair{1000, 0}, std::pair{4099, 0}, std::pair{3, 0}, std::pair{4099, 1}}) {
    SCOPED_TRACE(::testing::Message() << "n " << n << " offset " << offset);
    const auto gate = as_dtype(rand_vec(r, n + offset, 3.0f), t), up = as_dtype(rand_vec(r, n + offset), t);
    const auto dy = as_dtype(rand_vec(r, n + offset), t);
    std::vector<float> ref(n + offset, 0.0f), inc_dg(n + offset, 0.0f), inc_du(n + offset, 0.0f);
    cpu::swiglu_forward(ref.data(), gate.data(), up.data(), n + offset);
    cpu::swiglu_backward(inc_dg.data(), inc_du.data(), dy.data(), gate.data(), up.data(), n + offset);
    auto gg = upload(gate, t), gu = upload(up, t), gdy = upload(dy, t);
    const size_t es = dtype_size(t), off = size_t(offset) * es;
    auto at = [&](const dbuf& b) { return static_cast<char*>(b.p) + off; };
    dbuf gy((n + offset) * es);
    poison(gy);
    swiglu_forward(at(gy), at(*gg), at(*gu), n, t);
    const std::vector<float> ref_y(ref.begin() + offset, ref.end());
    EXPECT_LT(rel_l2(download(gy, n, t, offset), ref_y), tol(ref_y, t));

    const auto old_dg = prefill_like(r, inc_dg, t), old_du = prefill_like(r, inc_du, t);
    auto gdg = upload(old_dg, t), gdu = upload(old_du, t);
    swiglu_backward(at(*gdg), at(*gdu), at(*gdy), at(*gg), at(*gu), n, t);
    auto ref_dg = plus(old_dg, inc_dg), ref_du = plus(old_du, inc_du);
    ref_dg.erase(ref_dg.begin(), ref_dg.begin() + offset);
    ref_du.erase(ref_du.begin(), ref_du.begin() + offset);
    EXPECT_LT(rel_l2(download(*gdg, n, t, offset), ref_dg), tol(ref_dg, t));
    EXPECT_LT(rel_l2(download(*gdu, n, t, offset), ref_du), tol(ref_du, t));
    // dup only: dgate absent.
    auto gdu2 = upload(old_du, t);
    swiglu_backward(nullptr, at(*gdu2), at(*gdy), at(*gg), at(*gu), n, t);
    EXPECT_LT(rel_l2(download(*gdu2, n, t, offset), ref_du), tol(ref_du, t));
  }
}

TEST_P(CudaOps, AddInplaceIsOneRoundedAdd) {
  GSA_REQUIRE_GPU();
  const dtype t = GetParam();
  rng r(test_seed());
  for (const auto& [n, offset] : {std::pair{1027, 0}, std::pair{1027, 1}, std::pair{2, 0}}) {
    SCOPED_TRACE(::testing::Message() << "n " << n << " offset " << offset);
    const auto y = as_dtype(rand_vec(r, n + offset), t), x = as_dtype(rand_vec(r, n + offset), t);
    auto gy = upload(y, t), gx = upload(x, t);
    const size_t off = size_t(offset) * dtype_size(t);
    add_inplace(static_cast<char*>(gy->p) + off, static_cast<char*>(gx->p) + off, n, t);
    // One f32 add, one rounding to t: bit-exact.
    auto ref = as_dtype(plus(y, x), t);
    ref.erase(ref.begin(), ref.begin() + offset);
    EXPECT_EQ(download(*gy, n, t, offset), ref);
  }
}

TEST_P(CudaOps, LmHeadXentForward) {
  GSA_REQUIRE_GPU();
  const dtype t = GetParam();
  rng r(test_seed());
  struct shape {
    int T, C, V, chunk;
    int64_t budget;  // xent tile budget (floats): small values force several row blocks
    bool all_ignored;
  };
  const int64_t big = detail::xent_tile_budget();
  for (const shape s : {shape{77, 64, 1000, 256, big, false}, shape{77, 64, 1000, 256, 3 * 256, false},
                        shape{5, 4, 37, 8, big, false}, shape{9, 32, 100, 64, big, true},
                        shape{40, 48, 300, 512, 7 * 300, false}}) {
    SCOPED_TRACE(::testing::Message() << "T " << s.T << " C " << s.C << " V " << s.V << " chunk " << s.chunk
                                      << " budget " << s.budget);
    const auto h = as_dtype(rand_vec(r, size_t(s.T) * s.C), t);
    const auto w = as_dtype(rand_vec(r, size_t(s.V) * s.C, 0.5f), t);
    std::vector<int32_t> tg(s.T);
    for (auto& y : tg) y = (s.all_ignored || r.uniform() < 0.2f) ? -100 : int32_t(r.below(s.V));
    std::vector<float> ref_lse(s.T);
    int64_t ref_n = -1;
    const double ref_loss =
        cpu::lm_head_xent_forward(ref_lse.data(), h.data(), w.data(), tg.data(), s.T, s.C, s.V, &ref_n, s.chunk);
    auto gh = upload(h, t), gw = upload(w, t);
    auto gt = upload_raw(tg);
    dbuf glse(s.T * sizeof(float));
    poison(glse);
    int64_t n = -1;
    double loss = 0;
    {
      tile_budget_guard budget(s.budget);
      loss = lm_head_xent_forward(glse.as<float>(), gh->p, gw->p, gt->as<int32_t>(), s.T, s.C, s.V, &n, t, s.chunk);
    }
    EXPECT_EQ(n, ref_n);
    if (s.all_ignored) {
      EXPECT_EQ(loss, 0.0);
    }
    EXPECT_NEAR(loss, ref_loss, 1e-5 * std::fabs(ref_loss) + 1e-9);
    EXPECT_LT(rel_l2(download(glse, s.T, dtype::f32), ref_lse), f32_tol);
  }
}

TEST_P(CudaOps, LmHeadXentRejectsTargetsOutsideTheVocabulary) {
  GSA_REQUIRE_GPU();
  const dtype t = GetParam();
  rng r(test_seed());
  const int T = 6, C = 16, V = 50;
  auto gh = upload(as_dtype(rand_vec(r, T * C), t), t), gw = upload(as_dtype(rand_vec(r, V * C), t), t);
  auto gt = upload_raw(std::vector<int32_t>{1, -100, 3, V, 4, 5});
  dbuf glse(T * sizeof(float));
  int64_t n = 0;
  try {
    lm_head_xent_forward(glse.as<float>(), gh->p, gw->p, gt->as<int32_t>(), T, C, V, &n, t, 16);
    FAIL() << "expected gsa::error";
  } catch (const gsa::error& e) {
    EXPECT_NE(std::string(e.what()).find("row 3"), std::string::npos) << e.what();
  }
}

TEST_P(CudaOps, LmHeadXentBackwardAccumulates) {
  GSA_REQUIRE_GPU();
  const dtype t = GetParam();
  rng r(test_seed());
  struct shape {
    int T, C, V, chunk;
    int64_t budget;
  };
  const int64_t big = detail::xent_tile_budget();
  for (const shape s : {shape{77, 64, 1000, 256, big}, shape{77, 64, 1000, 256, 5 * 256}, shape{5, 4, 37, 8, big},
                        shape{40, 48, 301, 64, big}}) {
    SCOPED_TRACE(::testing::Message() << "T " << s.T << " C " << s.C << " V " << s.V << " chunk " << s.chunk
                                      << " budget " << s.budget);
    const auto h = as_dtype(rand_vec(r, size_t(s.T) * s.C), t);
    const auto w = as_dtype(rand_vec(r, size_t(s.V) * s.C, 0.5f), t);
    std::vector<int32_t> tg(s.T);
    for (auto& y : tg) y = r.uniform() < 0.2f ? -100 : int32_t(r.below(s.V));
    tg[0] = -100;  // at least one ignored row
    std::vector<float> lse(s.T);
    int64_t nv = 0;
    cpu::lm_head_xent_forward(lse.data(), h.data(), w.data(), tg.data(), s.T, s.C, s.V, &nv, s.chunk);
    const float scale = 1.0f / float(std::max<int64_t>(nv, 1));
    std::vector<float> inc_dh(h.size(), 0.0f), inc_dw(w.size(), 0.0f);
    cpu::lm_head_xent_backward(inc_dh.data(), inc_dw.data(), h.data(), w.data(), tg.data(), lse.data(), s.T, s.C,
                               s.V, scale, s.chunk);
    const auto old_dh = prefill_like(r, inc_dh, t);
    const auto old_dw = prefill_like(r, inc_dw, dtype::f32);
    auto gh = upload(h, t), gw = upload(w, t), glse = upload(lse, dtype::f32);
    auto gt = upload_raw(tg);
    auto gdh = upload(old_dh, t), gdw = upload(old_dw, dtype::f32);
    {
      tile_budget_guard budget(s.budget);
      lm_head_xent_backward(gdh->p, gdw->as<float>(), gh->p, gw->p, gt->as<int32_t>(), glse->as<float>(), s.T, s.C,
                            s.V, scale, t, s.chunk);
    }
    // bf16: dlogits are rounded to bf16 before the GEMMs (relative error <= 2^-9 each), on top of dh's single
    // final rounding (dh is accumulated over the vocabulary chunks in f32).
    const double extra = t == dtype::bf16 ? 2 * bf16_unit : 0.0;
    const auto ref_dh = plus(old_dh, inc_dh), ref_dw = plus(old_dw, inc_dw);
    EXPECT_LT(rel_l2(download(*gdh, h.size(), t), ref_dh), tol(ref_dh, t) + extra);
    EXPECT_LT(rel_l2(download(*gdw, w.size(), dtype::f32), ref_dw), f32_tol + extra);
  }
}

INSTANTIATE_TEST_SUITE_P(Types, CudaOps, ::testing::Values(dtype::f32, dtype::bf16),
                         [](const ::testing::TestParamInfo<dtype>& i) { return std::string(dtype_name(i.param)); });

// ---- type-independent ops ----------------------------------------------------------------------------------------

TEST(CudaOpsF32, ConvertRoundsToNearestEven) {
  GSA_REQUIRE_GPU();
  rng r(test_seed());
  const int n = 1001;
  auto v = rand_vec(r, n, 10.0f);
  v[0] = 1.0f + 1.0f / 256;  // a tie (halfway between two bf16 values): rounds to even
  auto gsrc = upload(v, dtype::f32);
  dbuf gb(n * 2), gf(n * 4), gc(n * 4);
  poison(gb);
  poison(gf);
  poison(gc);
  convert(gb.p, dtype::bf16, gsrc->p, dtype::f32, n);
  std::vector<uint16_t> bits(n);
  copy_d2h(bits.data(), gb.p, n * 2);
  for (int i = 0; i < n; i++) ASSERT_EQ(bits[i], f32_to_bf16(v[i])) << i;
  convert(gf.p, dtype::f32, gb.p, dtype::bf16, n);
  EXPECT_EQ(download(gf, n, dtype::f32), as_dtype(v, dtype::bf16));
  convert(gc.p, dtype::f32, gsrc->p, dtype::f32, n);
  EXPECT_EQ(download(gc, n, dtype::f32), v);
}

TEST(CudaOpsF32, AdamwMatchesCpu) {
  GSA_REQUIRE_GPU();
  rng r(test_seed());
  cpu::adamw_params hp;
  hp.lr = 1e-2f;
  hp.weight_decay = 0.1f;
  for (const auto& [n, offset, masked] : {std::tuple{1003, 0, true}, std::tuple{1003, 1, false}}) {
    SCOPED_TRACE(::testing::Message() << "n " << n << " offset " << offset << " masked " << masked);
    const int N = n + offset;
    const auto p = rand_vec(r, N), g = rand_vec(r, N, 0.1f), m = rand_vec(r, N, 0.01f);
    auto v = rand_vec(r, N, 0.001f);
    for (auto& x : v) x = std::fabs(x);
    std::vector<uint8_t> decay(N);
    for (auto& d : decay) d = r.uniform() < 0.5f ? 1 : 0;
    // CPU: one run with weight decay, one without; pick per element by the mask.
    auto p1 = p, m1 = m, v1 = v, p0 = p, m0 = m, v0 = v;
    cpu::adamw_step(p1.data(), g.data(), m1.data(), v1.data(), N, 3, hp);
    cpu::adamw_params no_wd = hp;
    no_wd.weight_decay = 0.0f;
    cpu::adamw_step(p0.data(), g.data(), m0.data(), v0.data(), N, 3, no_wd);
    std::vector<float> ref_p(n);
    for (int i = 0; i < n; i++) ref_p[i] = (!masked || decay[i + offset]) ? p1[i + offset] : p0[i + offset];
    auto gp = upload(p, dtype::f32), gg = upload(g, dtype::f32), gm = upload(m, dtype::f32),
         gv = upload(v, dtype::f32);
    auto gd = upload_raw(decay);
    dbuf glow(N * 2);
    poison(glow);
    auto f = [&](const dbuf& b) { return b.as<float>() + offset; };
    adamw_step(f(*gp), f(*gg), f(*gm), f(*gv), masked ? gd->as<uint8_t>() + offset : nullptr,
               masked ? glow.as<uint16_t>() + offset : nullptr, n, 3, hp);
    // Same operations in the same order, each rounded (no FMA): expected bit-exact; 1e-6 leaves room for a
    // last-ulp sqrt/division difference only.
    const auto got_p = download(*gp, n, dtype::f32, offset);
    EXPECT_LT(rel_l2(got_p, ref_p), 1e-6);
    EXPECT_LT(rel_l2(download(*gm, n, dtype::f32, offset), std::vector<float>(m1.begin() + offset, m1.end())), 1e-6);
    EXPECT_LT(rel_l2(download(*gv, n, dtype::f32, offset), std::vector<float>(v1.begin() + offset, v1.end())), 1e-6);
    if (masked) {
      std::vector<uint16_t> low(n);
      copy_d2h(low.data(), glow.as<uint16_t>() + offset, n * 2);
      for (int i = 0; i < n; i++) ASSERT_EQ(low[i], f32_to_bf16(got_p[i])) << i;
    }
  }
}

TEST(CudaOpsF32, SumSquaresAndScale) {
  GSA_REQUIRE_GPU();
  rng r(test_seed());
  for (const int n : {1000003, 5}) {
    SCOPED_TRACE(::testing::Message() << "n " << n);
    auto g = rand_vec(r, n);
    auto gg = upload(g, dtype::f32);
    const double ref = cpu::sum_squares(g.data(), n);
    const double got = sum_squares(gg->as<float>(), n);
    EXPECT_NEAR(got, ref, 1e-12 * ref);  // double accumulation of exact squares: only the order differs
    EXPECT_EQ(got, sum_squares(gg->as<float>(), n)) << "not deterministic";
    cpu::scale_inplace(g.data(), n, 0.37f);
    scale_inplace(gg->as<float>(), n, 0.37f);
    EXPECT_EQ(download(*gg, n, dtype::f32), g);  // one rounded multiply: exact
  }
}

}  // namespace
}  // namespace gsa::cuda
