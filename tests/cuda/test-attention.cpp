// Tests of gsa::cuda plan-driven attention (backend/cuda/attention.h) on random plans in the segment format of
// backend/attn-plan.h. The reference is a dense float64 computation written here over a mask expanded with
// attn_plan::for_each_key (independent of the CPU kernels); a naive float32 run of the same code sets the f32
// tolerance. bf16: inputs are rounded to bf16 first and the references see the rounded values.
//
// Pass rule per tensor, err = ||x - ref64|| / ||ref64|| over the whole tensor:
//   bf16: err <= 1e-2 (bf16 output rounding ~2e-3 plus P rounded to bf16 in the forward);
//   f32:  err <= max(1e-5, 8 * err(naive f32));
// lse: max |lse - ref| <= 2e-3 (bf16) or max(1e-5, 8 * naive) (f32) on finite rows; rows that see no key must give
// exactly out 0 and lse -inf. Outputs are poisoned with NaN first; dq/dk/dv are pre-filled (accumulation).
// Every kernel test starts with the device check and skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backend/attn-plan.h"
#include "backend/backend.h"
#include "backend/row-unfold.h"
#include "backend/cuda/attention.h"
#include "backend/cuda/runtime.h"
#include "core/dtype.h"
#include "core/error.h"
#include "gist/config.h"
#include "gist/plan.h"
#include "gist/select.h"
#include "gist/stream.h"

namespace gsa::cuda {
namespace {

enum class blocks_kind { mixed, per_token, big };

struct attn_case {
  int D = 64;
  dtype t = dtype::bf16;
  int G = 1, Hkv = 2;
  bool per_head = false;  // plan.heads = Hkv instead of 1
  int g = 1;              // gists per unit
  int Tq = 150, Tk = 260, q_offset = 90;
  blocks_kind blocks = blocks_kind::mixed;
  double p_empty = 0.1;  // probability that a list is empty
  int grads = 7;         // gradients asked for: 1 dq, 2 dk, 4 dv (the others are passed as null)
  uint64_t seed = 1;
};

std::string describe(const attn_case& c) {
  std::ostringstream s;
  s << dtype_name(c.t) << " D" << c.D << " G" << c.G << " Hkv" << c.Hkv << (c.per_head ? " per-head" : " shared")
    << " g" << c.g << " Tq" << c.Tq << " Tk" << c.Tk << " off" << c.q_offset
    << (c.blocks == blocks_kind::per_token ? " per-token" : c.blocks == blocks_kind::big ? " big" : "")
    << (c.grads != 7 ? " grads" + std::to_string(c.grads) : "") << " seed" << c.seed;
  return s.str();
}

// Random plan: blocks of random sizes (1-row and empty blocks included), per list up to 6 disjoint segments mixing
// ranges (near the block or anywhere, possibly after the block's rows: the causal rule trims them) and gist units
// of two levels of a shuffled gist table.
attn_plan random_plan(const attn_case& c, std::mt19937_64& rng) {
  auto uni = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };  // [lo, hi]
  auto coin = [&](double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; };
  attn_plan plan;
  plan.heads = c.per_head ? c.Hkv : 1;
  plan.gists_per_unit = c.g;
  plan.gist_ptr = {0};
  for (int stride : {7, 23}) {  // level 0 every 7 positions, level 1 every 23, stored in shuffled order
    std::vector<int32_t> pos;
    for (int p = stride - c.g; p >= 0 && p + c.g <= c.Tk; p += stride) pos.push_back(p);
    std::shuffle(pos.begin(), pos.end(), rng);
    plan.gist_pos.insert(plan.gist_pos.end(), pos.begin(), pos.end());
    plan.gist_ptr.push_back(int32_t(plan.gist_pos.size()));
  }
  plan.block_q = {0};
  while (plan.block_q.back() < c.Tq) {
    int n = 1;
    if (c.blocks == blocks_kind::big) n = uni(60, 200);
    if (c.blocks == blocks_kind::mixed) {
      const int kind = uni(0, 9);
      n = kind < 2 ? 1 : kind < 4 ? uni(2, 20) : kind < 6 ? 17 : kind < 8 ? uni(30, 80) : kind == 8 ? 0 : uni(1, 5);
    }
    plan.block_q.push_back(std::min(c.Tq, plan.block_q.back() + n));
  }
  plan.seg_ptr = {0};
  std::vector<char> used(size_t(c.Tk));
  for (int b = 0; b < plan.n_blocks(); b++)
    for (int h = 0; h < plan.heads; h++) {
      std::fill(used.begin(), used.end(), 0);
      const int n_segs = coin(c.p_empty) ? 0 : uni(1, 6);
      const int last = c.q_offset + plan.block_q[b + 1] - 1;  // the block's last row position
      for (int s = 0, tries = 0; s < n_segs && tries < 30; tries++) {
        key_seg seg;
        if (coin(0.6)) {
          const int len = coin(0.3) ? uni(40, 160) : uni(1, 12);
          const int a = coin(0.5) ? uni(0, c.Tk - 1) : std::clamp(last - uni(-4, 60), 0, c.Tk - 1);
          seg = key_range(a, std::min(c.Tk, a + len));
        } else {
          const int l = uni(0, 1);
          const int units = plan.gist_ptr[l + 1] - plan.gist_ptr[l];
          if (units == 0) continue;
          const int u0 = uni(0, units - 1);
          seg = gist_units(l, u0, std::min(units, u0 + uni(1, 8)));
        }
        // Keep the list disjoint: drop a segment that repeats a key.
        std::vector<int32_t> keys;
        if (seg.level < 0) {
          for (int j = seg.begin; j < seg.end; j++) keys.push_back(j);
        } else {
          const int32_t* base = plan.gist_pos.data() + plan.gist_ptr[size_t(seg.level)];
          for (int u = seg.begin; u < seg.end; u++)
            for (int r = 0; r < c.g; r++) keys.push_back(base[u] + r);
        }
        bool clash = false;
        for (int32_t j : keys) clash |= used[size_t(j)] != 0;
        if (clash) continue;
        for (int32_t j : keys) used[size_t(j)] = 1;
        plan.segs.push_back(seg);
        s++;
      }
      plan.seg_ptr.push_back(int64_t(plan.segs.size()));
    }
  return plan;
}

// Dense attention over mask (Hkv, Tq, Tk), accumulated in A; forward then backward (gradients overwritten).
template <typename A>
struct reference {
  std::vector<A> out, lse, dq, dk, dv;
  void run(const attn_case& c, const std::vector<uint8_t>& mask, const std::vector<float>& q,
           const std::vector<float>& k, const std::vector<float>& v, const std::vector<float>& dout) {
    const int Hq = c.G * c.Hkv, D = c.D;
    const A scale = A(1) / std::sqrt(A(D));
    out.assign(size_t(c.Tq) * Hq * D, 0);
    lse.assign(size_t(c.Tq) * Hq, -INFINITY);
    dq.assign(out.size(), 0);
    dk.assign(size_t(c.Tk) * c.Hkv * D, 0);
    dv.assign(dk.size(), 0);
    std::vector<A> s(size_t(c.Tk));
    for (int i = 0; i < c.Tq; i++)
      for (int hq = 0; hq < Hq; hq++) {
        const int hk = hq / c.G;
        const uint8_t* vis = mask.data() + (size_t(hk) * c.Tq + i) * c.Tk;
        const float* qi = q.data() + (size_t(i) * Hq + hq) * D;
        const float* gi = dout.data() + (size_t(i) * Hq + hq) * D;
        A m = -INFINITY;
        for (int j = 0; j < c.Tk; j++) {
          if (!vis[j]) continue;
          const float* kj = k.data() + (size_t(j) * c.Hkv + hk) * D;
          A x = 0;
          for (int d = 0; d < D; d++) x += A(qi[d]) * A(kj[d]);
          s[size_t(j)] = x * scale;
          m = std::max(m, s[size_t(j)]);
        }
        if (m == -INFINITY) continue;
        A sum = 0;
        for (int j = 0; j < c.Tk; j++)
          if (vis[j]) sum += std::exp(s[size_t(j)] - m);
        const A l = m + std::log(sum);
        lse[size_t(i) * Hq + hq] = l;
        A* oi = out.data() + (size_t(i) * Hq + hq) * D;
        for (int j = 0; j < c.Tk; j++) {
          if (!vis[j]) continue;
          const A p = std::exp(s[size_t(j)] - l);
          const float* vj = v.data() + (size_t(j) * c.Hkv + hk) * D;
          for (int d = 0; d < D; d++) oi[d] += p * A(vj[d]);
        }
        A Di = 0;
        for (int d = 0; d < D; d++) Di += A(gi[d]) * oi[d];
        A* dqi = dq.data() + (size_t(i) * Hq + hq) * D;
        for (int j = 0; j < c.Tk; j++) {
          if (!vis[j]) continue;
          const A p = std::exp(s[size_t(j)] - l);
          const size_t kv = (size_t(j) * c.Hkv + hk) * D;
          A dp = 0;
          for (int d = 0; d < D; d++) dp += A(gi[d]) * A(v[kv + d]);
          const A ds = p * (dp - Di);
          for (int d = 0; d < D; d++) {
            dqi[d] += scale * ds * A(k[kv + d]);
            dk[kv + d] += scale * ds * A(qi[d]);
            dv[kv + d] += p * A(gi[d]);
          }
        }
      }
  }
};

// Values in +-[0.05, 1] * amp (never zero), rounded to bf16 when t is bf16.
std::vector<float> random_values(std::mt19937_64& rng, size_t n, float amp, dtype t) {
  std::uniform_real_distribution<float> u(0.05f, 1.f);
  std::vector<float> x(n);
  for (auto& e : x) {
    e = u(rng) * amp * ((rng() & 1) ? 1.f : -1.f);
    if (t == dtype::bf16) e = bf16_to_f32(f32_to_bf16(e));
  }
  return x;
}

struct dev_buf {
  void* p = nullptr;
  size_t bytes = 0;
  explicit dev_buf(size_t n) : p(alloc(std::max<size_t>(n, 16))), bytes(n) {}
  ~dev_buf() { release(p); }
  dev_buf(const dev_buf&) = delete;
  dev_buf& operator=(const dev_buf&) = delete;
};

// Host floats -> a device buffer of type t.
void upload(dev_buf& b, const std::vector<float>& x, dtype t) {
  std::vector<unsigned char> raw(x.size() * dtype_size(t));
  convert_from_f32(raw.data(), x.data(), t, x.size());
  copy_h2d(b.p, raw.data(), raw.size());
}
std::vector<float> download(const dev_buf& b, size_t n, dtype t) {
  std::vector<unsigned char> raw(n * dtype_size(t));
  copy_d2h(raw.data(), b.p, raw.size());
  std::vector<float> x(n);
  convert_to_f32(x.data(), raw.data(), t, n);
  return x;
}
void poison(dev_buf& b) {
  std::vector<unsigned char> nan(b.bytes, 0xff);  // NaN in f32 and in bf16
  copy_h2d(b.p, nan.data(), nan.size());
}

template <typename X, typename R>
double rel_l2(const std::vector<X>& x, const std::vector<R>& ref, const std::vector<float>* base = nullptr) {
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); i++) {
    const double r = double(ref[i]) + (base ? double((*base)[i]) : 0.0);
    num += (double(x[i]) - r) * (double(x[i]) - r);
    den += r * r;
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Which kernels a run must take: the generic ones, the structured fast path, or whichever upload_plan picks.
enum class path { any, generic, structured };

// Runs plan forward and backward on the device and checks it against the dense references.
// mask_from (optional): the plain plan whose visibility the run must have (a plan carrying a row unfold runs as
// base + unfold and is checked against its expansion).
void check_plan(const attn_case& c, const attn_plan& plan, std::mt19937_64& rng, path want = path::any,
                const attn_plan* mask_from = nullptr) {
  const int Hq = c.G * c.Hkv, D = c.D;
  const size_t nq = size_t(c.Tq) * Hq * D, nkv = size_t(c.Tk) * c.Hkv * D;

  std::vector<uint8_t> mask(size_t(c.Hkv) * c.Tq * c.Tk, 0);
  const attn_plan& mp = mask_from ? *mask_from : plan;
  for (int b = 0; b < mp.n_blocks(); b++)
    for (int hk = 0; hk < c.Hkv; hk++)
      mp.for_each_key(b, hk, [&](int32_t j) {
        for (int i = mp.block_q[b]; i < mp.block_q[b + 1]; i++)
          if (j <= c.q_offset + i) mask[(size_t(hk) * c.Tq + i) * c.Tk + j] = 1;
      });

  const auto q = random_values(rng, nq, 3.f, c.t), k = random_values(rng, nkv, 1.f, c.t),
             v = random_values(rng, nkv, 1.f, c.t), dout = random_values(rng, nq, 1.f, c.t);
  const auto dq0 = random_values(rng, nq, 0.1f, c.t), dk0 = random_values(rng, nkv, 0.1f, c.t),
             dv0 = random_values(rng, nkv, 0.1f, c.t);
  reference<double> ref;
  reference<float> naive;
  ref.run(c, mask, q, k, v, dout);
  naive.run(c, mask, q, k, v, dout);

  device_plan dp = upload_plan(plan, c.Tq, c.Tk, c.q_offset, c.Hkv);
  attach_unfold(dp, plan.unfold);
  if (want == path::structured) {
    ASSERT_TRUE(attention_plan_is_structured(dp)) << "the fast path was not chosen";
  }
  if (want == path::generic) dp.structured = false;
  if (plan.heads != 1) {
    EXPECT_FALSE(attention_plan_is_structured(dp)) << "per-head lists are never structured";
  }
  const size_t es = dtype_size(c.t);
  dev_buf dq_(nq * es), dk_(nkv * es), dv_(nkv * es), q_(nq * es), k_(nkv * es), v_(nkv * es), out_(nq * es),
      dout_(nq * es), lse_(size_t(c.Tq) * Hq * 4);
  upload(q_, q, c.t);
  upload(k_, k, c.t);
  upload(v_, v, c.t);
  upload(dout_, dout, c.t);
  upload(dq_, dq0, c.t);
  upload(dk_, dk0, c.t);
  upload(dv_, dv0, c.t);
  poison(out_);
  poison(lse_);

  attention_forward(out_.p, static_cast<float*>(lse_.p), q_.p, k_.p, v_.p, dp, c.Tq, c.Tk, c.q_offset, Hq, c.Hkv,
                    D, c.t);
  attention_backward(c.grads & 1 ? dq_.p : nullptr, c.grads & 2 ? dk_.p : nullptr, c.grads & 4 ? dv_.p : nullptr,
                     dout_.p, q_.p, k_.p, v_.p, out_.p, static_cast<const float*>(lse_.p), dp,
                     c.Tq, c.Tk, c.q_offset, Hq, c.Hkv, D, c.t);
  const auto out = download(out_, nq, c.t), dq = download(dq_, nq, c.t), dk = download(dk_, nkv, c.t),
             dv = download(dv_, nkv, c.t);
  std::vector<float> lse(size_t(c.Tq) * Hq);
  copy_d2h(lse.data(), lse_.p, lse.size() * 4);

  // Rows that see no key: exactly 0 / -inf. Others: finite.
  int empty_rows = 0;
  double lse_err = 0, lse_err_naive = 0;
  for (size_t r = 0; r < lse.size(); r++) {
    if (ref.lse[r] == -INFINITY) {
      empty_rows++;
      ASSERT_EQ(lse[r], -INFINITY) << "row " << r / Hq << " head " << r % Hq << " sees no key";
      for (int d = 0; d < D; d++) ASSERT_EQ(out[r * D + d], 0.f) << "row " << r / Hq << " sees no key";
      continue;
    }
    ASSERT_TRUE(std::isfinite(lse[r])) << "row " << r / Hq << " head " << r % Hq;
    lse_err = std::max(lse_err, std::abs(double(lse[r]) - ref.lse[r]));
    lse_err_naive = std::max(lse_err_naive, std::abs(double(naive.lse[r]) - ref.lse[r]));
  }
  for (float x : out) ASSERT_TRUE(std::isfinite(x)) << "out not written (NaN poison left)";
  const bool bf = c.t == dtype::bf16;
  auto bound = [&](double naive_err) { return bf ? 1e-2 : std::max(1e-5, 8 * naive_err); };
  EXPECT_LE(lse_err, bf ? 2e-3 : std::max(1e-5, 8 * lse_err_naive));
  EXPECT_LE(rel_l2(out, ref.out), bound(rel_l2(naive.out, ref.out))) << "out";
  // A gradient not asked for must be left as it was (pre-filled values, exactly).
  auto untouched = [](const std::vector<float>& x, const std::vector<float>& x0) { return x == x0; };
  if (c.grads & 1)
    EXPECT_LE(rel_l2(dq, ref.dq, &dq0), bound(rel_l2(naive.dq, ref.dq))) << "dq";
  else
    EXPECT_TRUE(untouched(dq, dq0)) << "dq written though null";
  if (c.grads & 2)
    EXPECT_LE(rel_l2(dk, ref.dk, &dk0), bound(rel_l2(naive.dk, ref.dk))) << "dk";
  else
    EXPECT_TRUE(untouched(dk, dk0)) << "dk written though null";
  if (c.grads & 4)
    EXPECT_LE(rel_l2(dv, ref.dv, &dv0), bound(rel_l2(naive.dv, ref.dv))) << "dv";
  else
    EXPECT_TRUE(untouched(dv, dv0)) << "dv written though null";
  // The case must exercise something: visible pairs exist (unless it asks for empty lists only).
  if (c.p_empty < 1) {
    EXPECT_LT(empty_rows, int(lse.size()));
  }
}

void run_case(const attn_case& c) {
  SCOPED_TRACE(describe(c));
  std::mt19937_64 rng(c.seed * 0x9e3779b97f4a7c15ull + uint64_t(c.D) * 131 + uint64_t(c.G) * 7 + c.g);
  const attn_plan plan = random_plan(c, rng);
  check_plan(c, plan, rng);
}

std::vector<attn_case> matrix() {
  std::vector<attn_case> cases;
  uint64_t seed = 11;
  for (dtype t : {dtype::bf16, dtype::f32})
    for (int D : {64, 128})
      for (int G : {1, 2, 4})
        for (bool per_head : {false, true}) {
          attn_case c;
          c.t = t;
          c.D = D;
          c.G = G;
          c.per_head = per_head;
          c.g = per_head ? 2 : 1;
          c.seed = seed++;
          cases.push_back(c);
        }
  auto add = [&](auto edit) {
    for (dtype t : {dtype::bf16, dtype::f32}) {
      attn_case c;
      c.t = t;
      c.D = 128;
      c.G = 4;
      c.seed = seed++;
      edit(c);
      cases.push_back(c);
    }
  };
  add([](attn_case& c) { c.blocks = blocks_kind::per_token; c.Tq = 48; c.Tk = 120; c.q_offset = 70; });
  add([](attn_case& c) { c.blocks = blocks_kind::big; c.Tq = 400; c.Tk = 400; c.q_offset = 0; c.g = 2; });
  add([](attn_case& c) { c.Hkv = 1; c.G = 8; c.D = 64; c.per_head = true; c.q_offset = 0; c.Tk = 150; });
  add([](attn_case& c) { c.p_empty = 1; });
  // Row tiles of 64 stacked rows with G > 1 at D 64 (64-key tiles of the bf16 backward), per-head lists, g = 4.
  add([](attn_case& c) { c.blocks = blocks_kind::big; c.D = 64; c.G = 2; c.per_head = true; c.g = 4; c.Tq = 300;
                         c.Tk = 420; c.q_offset = 120; });
  // Long lists: ranges spanning several key tiles and tiles straddling segment ends.
  add([](attn_case& c) { c.blocks = blocks_kind::big; c.G = 1; c.Tq = 260; c.Tk = 900; c.q_offset = 640; });
  // Null gradients: the kernels must skip them (dq only; dk and dv only).
  add([](attn_case& c) { c.grads = 1; });
  add([](attn_case& c) { c.grads = 6; c.D = 64; });
  return cases;
}

class CudaAttention : public ::testing::TestWithParam<attn_case> {};

TEST_P(CudaAttention, MatchesDenseReference) {
  std::string why;
  if (!gsa::cuda::available(&why)) GTEST_SKIP() << why;
  run_case(GetParam());
}

INSTANTIATE_TEST_SUITE_P(Matrix, CudaAttention, ::testing::ValuesIn(matrix()));

// Gist-mask plans as training builds them (gist::plan_compress, q_offset 0): upload_plan must find the structure
// and the structured kernels must match the dense reference; the generic kernels run the same plan as a control.
struct compress_case {
  std::vector<int> chunk;  // gsa_config::chunk (levels)
  int g = 1, raw = 500, D = 128, Hkv = 4, G = 4;
};

void run_compress(const compress_case& cc, path want) {
  gist::gsa_config cfg;
  cfg.chunk = cc.chunk;
  cfg.gists_per_chunk = cc.g;
  for (size_t l = 0; l < cc.chunk.size(); l++) cfg.gist_token_ids.push_back(int32_t(1 + l));
  cfg.validate();
  const std::vector<int32_t> raw(size_t(cc.raw), 7);
  const gist::stream st = gist::build_stream(raw.data(), cc.raw, cfg);
  const attn_plan plan = gist::plan_compress(st, cfg);
  attn_case c;
  c.t = dtype::bf16;
  c.D = cc.D;
  c.G = cc.G;
  c.Hkv = cc.Hkv;
  c.g = cc.g;
  c.Tq = c.Tk = st.size();
  c.q_offset = 0;
  std::ostringstream name;
  name << "compress c" << cc.chunk[0] << (cc.chunk.size() > 1 ? "x" + std::to_string(cc.chunk[1]) : "") << " g"
       << cc.g << " raw " << cc.raw << " (n " << st.size() << ") " << describe(c)
       << (want == path::generic ? " generic" : " structured");
  SCOPED_TRACE(name.str());
  std::mt19937_64 rng(uint64_t(cc.raw) * 1000003 + uint64_t(cc.D) * 31 + cc.G);
  check_plan(c, plan, rng, want);
}

std::vector<compress_case> compress_cases() {
  return {
      {{16}, 1, 500, 128, 16, 1},    // blocks of 17 rows, MHA: 8-warp forward tiles span 8 blocks
      {{16}, 1, 333, 64, 4, 4},      // GQA 4: 16 rows per 64 stacked
      {{64}, 4, 700, 128, 4, 4},     // blocks of 68 rows, 4 gists per unit
      {{64}, 4, 517, 64, 16, 1},     //
      {{8, 4}, 1, 300, 128, 4, 4},   // two levels: 1-row level-1 gist blocks, lower-level group windows
      {{8, 4}, 2, 410, 64, 2, 2},    // two levels, g = 2
  };
}

struct restore_keymajor {
  int was = backward_scheme();
  ~restore_keymajor() { set_backward_scheme(was); }
};

// Both backward schemes of the structured path (key-major dK / dV, the default, and the row pass's per-tile
// atomics), then the generic kernels.
TEST(CudaAttentionStructured, CompressPlansMatchDenseReference) {
  std::string why;
  if (!gsa::cuda::available(&why)) GTEST_SKIP() << why;
  restore_keymajor keep;
  for (const compress_case& cc : compress_cases()) {
    for (bool km : {true, false}) {
      SCOPED_TRACE(km ? "key-major backward" : "atomic backward");
      set_backward_scheme(km ? 1 : 0);
      run_compress(cc, path::structured);
    }
    run_compress(cc, path::generic);
  }
}

// A prefill chunk's plan (q_offset > 0: the rows are the last Tq of Tk positions) through the key-major backward:
// the inverse cuts rows before each key tile's first position by the offset.
TEST(CudaAttentionStructured, KeyMajorWithAQueryOffset) {
  std::string why;
  if (!gsa::cuda::available(&why)) GTEST_SKIP() << why;
  restore_keymajor keep;
  set_backward_scheme(1);
  gist::gsa_config cfg;
  cfg.chunk = {16};
  cfg.gists_per_chunk = 2;
  cfg.gist_token_ids = {1};
  cfg.validate();
  const std::vector<int32_t> raw(700, 7);
  const gist::stream st = gist::build_stream(raw.data(), 700, cfg);
  const attn_plan full = gist::plan_compress(st, cfg);
  // The plan of the last rows: blocks from the first block at or after row 300, rows shifted by the offset.
  int b0 = 0;
  while (full.block_q[b0] < 300) b0++;
  const int off = full.block_q[b0];
  attn_plan plan;
  plan.heads = 1;
  plan.gists_per_unit = full.gists_per_unit;
  plan.gist_ptr = full.gist_ptr;
  plan.gist_pos = full.gist_pos;
  plan.seg_ptr.push_back(0);
  for (int b = b0; b < full.n_blocks(); b++) {
    plan.block_q.push_back(full.block_q[b] - off);
    for (int64_t i = full.seg_begin(b, 0); i < full.seg_end(b, 0); i++) plan.segs.push_back(full.segs[size_t(i)]);
    plan.seg_ptr.push_back(int64_t(plan.segs.size()));
  }
  plan.block_q.push_back(full.block_q[full.n_blocks()] - off);
  attn_case c;
  c.t = dtype::bf16;
  c.D = 64;
  c.G = 2;
  c.Hkv = 2;
  c.g = 2;
  c.Tk = st.size();
  c.Tq = st.size() - off;
  c.q_offset = off;
  std::mt19937_64 rng(77);
  check_plan(c, plan, rng, path::structured);
}

TEST(CudaAttentionStructured, DetectsTheStructure) {
  std::string why;
  if (!gsa::cuda::available(&why)) GTEST_SKIP() << why;
  gist::gsa_config cfg;
  cfg.chunk = {16};
  cfg.gist_token_ids = {1};
  const std::vector<int32_t> raw(300, 7);
  const gist::stream st = gist::build_stream(raw.data(), 300, cfg);
  attn_plan plan = gist::plan_compress(st, cfg);
  EXPECT_TRUE(attention_plan_is_structured(upload_plan(plan, st.size(), st.size(), 0, 2)));
  // A long stream range (a dense causal block) is not the structure: the generic kernels keep it.
  attn_plan causal;
  causal.block_q = {0, 600};
  causal.seg_ptr = {0, 1};
  causal.segs = {key_range(0, 600)};
  EXPECT_FALSE(attention_plan_is_structured(upload_plan(causal, 600, 600, 0, 2)));
  // Per-head lists are not either.
  plan.heads = 2;
  const size_t nb = size_t(plan.n_blocks());
  attn_plan per_head = plan;
  per_head.seg_ptr = {0};
  per_head.segs.clear();
  for (size_t b = 0; b < nb; b++)
    for (int h = 0; h < 2; h++) {
      per_head.segs.insert(per_head.segs.end(), plan.segs.begin() + plan.seg_ptr[b],
                           plan.segs.begin() + plan.seg_ptr[b + 1]);
      per_head.seg_ptr.push_back(int64_t(per_head.segs.size()));
    }
  EXPECT_FALSE(attention_plan_is_structured(upload_plan(per_head, st.size(), st.size(), 0, 2)));
}

attn_plan small_plan() {
  attn_plan p;
  p.block_q = {0, 4, 8};
  p.seg_ptr = {0, 1, 3};
  p.segs = {key_range(0, 6), key_range(6, 12), gist_units(0, 0, 2)};
  p.gist_ptr = {0, 2};
  p.gist_pos = {1, 3};
  return p;
}

TEST(CudaAttentionPlan, UploadRejectsMalformedPlans) {
  std::string why;
  if (!gsa::cuda::available(&why)) GTEST_SKIP() << why;
  EXPECT_NO_THROW(upload_plan(small_plan(), 8, 12, 4, 2));
  auto bad = [](auto edit, int Tq = 8, int Tk = 12) {
    attn_plan p = small_plan();
    edit(p);
    EXPECT_THROW(upload_plan(p, Tq, Tk, 4, 2), gsa::error);
  };
  bad([](attn_plan&) {}, 9);                                       // block_q does not cover Tq
  bad([](attn_plan&) {}, 8, 11);                                   // range past Tk
  bad([](attn_plan& p) { p.block_q = {0, 5, 4, 8}; p.seg_ptr = {0, 1, 2, 3}; });  // not monotone
  bad([](attn_plan& p) { p.seg_ptr = {0, 2, 1}; });                // seg_ptr not monotone / not ending at segs
  bad([](attn_plan& p) { p.seg_ptr = {0, 3}; });                   // wrong list count
  bad([](attn_plan& p) { p.heads = 3; });                          // heads neither 1 nor Hkv
  bad([](attn_plan& p) { p.segs[1] = key_range(-1, 3); });         // negative key
  bad([](attn_plan& p) { p.segs[1] = key_range(5, 3); });          // reversed range
  bad([](attn_plan& p) { p.segs[2] = gist_units(1, 0, 1); });      // no level 1
  bad([](attn_plan& p) { p.segs[2] = gist_units(0, 1, 3); });      // units past the level
  bad([](attn_plan& p) { p.segs[2].level = -2; });                 // unknown level
  bad([](attn_plan& p) { p.gist_pos[1] = 11; p.gists_per_unit = 2; });  // gist past Tk
  bad([](attn_plan& p) { p.gists_per_unit = 0; });
  bad([](attn_plan& p) { p.gist_ptr = {0, 3}; });                  // table size mismatch
}

TEST(CudaAttentionPlan, RunRejectsMismatchedSizesAndShapes) {
  std::string why;
  if (!gsa::cuda::available(&why)) GTEST_SKIP() << why;
  const device_plan dp = upload_plan(small_plan(), 8, 12, 4, 2);
  EXPECT_EQ(dp.max_block_rows, 4);
  dev_buf buf(size_t(12) * 8 * 128 * 4);
  float* lse = static_cast<float*>(buf.p);
  // Uploaded for Tq 8: running with Tq 7 must throw before touching memory.
  EXPECT_THROW(attention_forward(buf.p, lse, buf.p, buf.p, buf.p, dp, 7, 12, 4, 4, 2, 64, dtype::f32), gsa::error);
  EXPECT_THROW(attention_forward(buf.p, lse, buf.p, buf.p, buf.p, dp, 8, 12, 4, 4, 2, 96, dtype::f32), gsa::error);
  EXPECT_THROW(attention_forward(buf.p, lse, buf.p, buf.p, buf.p, dp, 8, 12, 4, 3, 2, 64, dtype::f32), gsa::error);
  EXPECT_THROW(attention_forward(buf.p, lse, buf.p, buf.p, buf.p, dp, 8, 12, 4, 4, 2, 64, dtype::f16), gsa::error);
  EXPECT_THROW(attention_forward(nullptr, lse, buf.p, buf.p, buf.p, dp, 8, 12, 4, 4, 2, 64, dtype::f32), gsa::error);
  EXPECT_THROW(attention_backward(buf.p, nullptr, nullptr, nullptr, buf.p, buf.p, buf.p, buf.p, lse, dp, 8, 12, 4, 4,
                                  2, 64, dtype::f32),
               gsa::error);  // dout missing
  EXPECT_FALSE(attention_supported(96, dtype::bf16, &why));
  EXPECT_NE(why.find("64 or 128"), std::string::npos);
  EXPECT_TRUE(attention_supported(128, dtype::f32, nullptr));
}

}  // namespace
}  // namespace gsa::cuda

// ---- determinism of the backward (attention.h: deterministic_backward) -------------------------------------------

namespace gsa::cuda {
namespace {

// Forward once, then the backward `reps` times from the same pre-filled dq / dk / dv; the raw bytes of dq, dk
// and dv of each run (concatenated), and the last run's dk and dv as floats in *dk_dv.
std::vector<std::vector<unsigned char>> backward_runs(const attn_case& c, const attn_plan& plan, bool generic,
                                                      int reps, float dout_amp, std::vector<float>* dk_dv) {
  std::mt19937_64 rng(c.seed);
  const int Hq = c.G * c.Hkv, D = c.D;
  const size_t nq = size_t(c.Tq) * Hq * D, nkv = size_t(c.Tk) * c.Hkv * D, es = dtype_size(c.t);
  device_plan dp = upload_plan(plan, c.Tq, c.Tk, c.q_offset, c.Hkv);
  if (generic) dp.structured = false;
  dev_buf dq_(nq * es), dk_(nkv * es), dv_(nkv * es), q_(nq * es), k_(nkv * es), v_(nkv * es), out_(nq * es),
      dout_(nq * es), lse_(size_t(c.Tq) * Hq * 4);
  upload(q_, random_values(rng, nq, 3.f, c.t), c.t);
  upload(k_, random_values(rng, nkv, 1.f, c.t), c.t);
  upload(v_, random_values(rng, nkv, 1.f, c.t), c.t);
  upload(dout_, random_values(rng, nq, dout_amp, c.t), c.t);
  const auto dq0 = random_values(rng, nq, 0.1f, c.t), dk0 = random_values(rng, nkv, 0.1f, c.t),
             dv0 = random_values(rng, nkv, 0.1f, c.t);
  attention_forward(out_.p, static_cast<float*>(lse_.p), q_.p, k_.p, v_.p, dp, c.Tq, c.Tk, c.q_offset, Hq, c.Hkv,
                    D, c.t);
  std::vector<std::vector<unsigned char>> runs;
  for (int r = 0; r < reps; r++) {
    upload(dq_, dq0, c.t);
    upload(dk_, dk0, c.t);
    upload(dv_, dv0, c.t);
    attention_backward(dq_.p, dk_.p, dv_.p, dout_.p, q_.p, k_.p, v_.p, out_.p, static_cast<const float*>(lse_.p),
                       dp, c.Tq, c.Tk, c.q_offset, Hq, c.Hkv, D, c.t);
    std::vector<unsigned char> bytes((nq + 2 * nkv) * es);
    copy_d2h(bytes.data(), dq_.p, nq * es);
    copy_d2h(bytes.data() + nq * es, dk_.p, nkv * es);
    copy_d2h(bytes.data() + (nq + nkv) * es, dv_.p, nkv * es);
    runs.push_back(std::move(bytes));
  }
  if (dk_dv) {
    *dk_dv = download(dk_, nkv, c.t);
    const auto dv = download(dv_, nkv, c.t);
    dk_dv->insert(dk_dv->end(), dv.begin(), dv.end());
  }
  return runs;
}

// A long compress plan (c 64, g 4: every gist key is seen by hundreds of row tiles, each adding its partial).
attn_plan long_compress_plan(attn_case& c, int raw) {
  gist::gsa_config cfg;
  cfg.chunk = {64};
  cfg.gists_per_chunk = 4;
  cfg.gist_token_ids = {1};
  cfg.validate();
  const std::vector<int32_t> ids(size_t(raw), 7);
  const gist::stream st = gist::build_stream(ids.data(), raw, cfg);
  c.g = 4;
  c.Tq = c.Tk = st.size();
  c.q_offset = 0;
  return gist::plan_compress(st, cfg);
}

struct restore_mode {
  bool was = deterministic_backward();
  ~restore_mode() { set_deterministic_backward(was); }
};

TEST(CudaAttentionDeterminism, BackwardIsTheSameBitsOnEveryRun) {
  std::string why;
  if (!gsa::cuda::available(&why)) GTEST_SKIP() << why;
  restore_mode keep;
  set_deterministic_backward(true);
  struct run {
    const char* name;
    attn_case c;
    bool generic;
  };
  std::vector<run> runs;
  attn_case s;  // structured bf16 tensor-core path
  s.t = dtype::bf16;
  s.D = 128;
  s.G = 4;
  s.Hkv = 2;
  s.seed = 5;
  runs.push_back({"structured bf16 D128", s, false});
  runs.push_back({"generic bf16 D128 (same plan)", s, true});
  attn_case f = s;  // CUDA-core f32 path
  f.t = dtype::f32;
  f.D = 64;
  runs.push_back({"f32 D64", f, true});
  for (auto& r : runs) {
    SCOPED_TRACE(r.name);
    const attn_plan plan = long_compress_plan(r.c, 3000);
    const auto out = backward_runs(r.c, plan, r.generic, 4, 1.f, nullptr);
    for (size_t i = 1; i < out.size(); i++)
      EXPECT_TRUE(out[i] == out[0]) << "run " << i << " differs from run 0 in its bits";
  }
}

TEST(CudaAttentionDeterminism, FixedPointAgreesWithFloatAtomics) {
  std::string why;
  if (!gsa::cuda::available(&why)) GTEST_SKIP() << why;
  restore_mode keep;
  for (dtype t : {dtype::f32, dtype::bf16}) {
    attn_case c;
    c.t = t;
    c.D = 64;
    c.G = 2;
    c.Hkv = 2;
    c.seed = 9;
    const attn_plan plan = long_compress_plan(c, 2000);
    std::vector<float> fixed, atomics;
    set_deterministic_backward(true);
    backward_runs(c, plan, t == dtype::f32, 1, 1.f, &fixed);
    set_deterministic_backward(false);
    backward_runs(c, plan, t == dtype::f32, 1, 1.f, &atomics);
    EXPECT_LE(rel_l2(fixed, atomics), t == dtype::f32 ? 1e-6 : 4e-3) << dtype_name(t);
  }
}

// The key-major backward against the row pass's per-tile atomics on a plan long enough that gist tiles are cut
// into pieces of rows, in both scratch modes (BackwardIsTheSameBitsOnEveryRun covers its determinism).
TEST(CudaAttentionDeterminism, KeyMajorAgreesWithTheAtomicScheme) {
  std::string why;
  if (!gsa::cuda::available(&why)) GTEST_SKIP() << why;
  restore_mode keep;
  restore_keymajor keep_km;
  for (bool fixed : {false, true})
    for (int D : {64, 128}) {
      attn_case c;
      c.t = dtype::bf16;
      c.D = D;
      c.G = 4;
      c.Hkv = 2;
      c.seed = 11;
      const attn_plan plan = long_compress_plan(c, 3000);
      set_deterministic_backward(fixed);
      std::vector<float> km, at;
      set_backward_scheme(1);
      backward_runs(c, plan, false, 1, 1.f, &km);
      set_backward_scheme(0);
      backward_runs(c, plan, false, 1, 1.f, &at);
      EXPECT_LE(rel_l2(km, at), 4e-3) << "D " << D << (fixed ? " fixed point" : " f32") << ": dk / dv";
    }
}

TEST(CudaAttentionDeterminism, KeyMajorExactlyWhenDeterministicUnlessForced) {
  restore_mode keep;
  restore_keymajor keep_km;
  set_backward_scheme(-1);
  set_deterministic_backward(true);
  EXPECT_TRUE(keymajor_backward());
  set_deterministic_backward(false);
  EXPECT_FALSE(keymajor_backward());
  set_backward_scheme(1);
  EXPECT_TRUE(keymajor_backward());
  set_backward_scheme(0);
  set_deterministic_backward(true);
  EXPECT_FALSE(keymajor_backward());
}

TEST(CudaAttentionDeterminism, AnOutOfRangePartialGivesNaNNotAWrappedSum) {
  std::string why;
  if (!gsa::cuda::available(&why)) GTEST_SKIP() << why;
  restore_mode keep;
  set_deterministic_backward(true);
  attn_case c;
  c.t = dtype::bf16;
  c.D = 64;
  c.G = 1;
  c.Hkv = 1;
  const attn_plan plan = long_compress_plan(c, 600);
  std::vector<float> dk_dv;
  backward_runs(c, plan, false, 1, 1e5f, &dk_dv);  // dV partials ~ sum of P x 1e5 over 128 rows: past 2^10
  size_t nan = 0;
  for (float x : dk_dv) nan += std::isnan(x);
  EXPECT_EQ(nan, dk_dv.size()) << "every dk / dv value must be NaN after an overflow";
}

// Row unfolds (the per-token selection kept on the device, backend/row-unfold.h): the gist mask on the plan
// kernels plus random per-row chunk tables on the overlay kernels, against the dense reference over the expanded
// plan (expand_row_unfold; tests/model/test-row-unfold.cpp checks that expansion against gist::plan_unfold).
// Neighbouring rows share part of their picks (as real selections do), so warp tiles see unions of several rows'
// lists; some rows pick nothing. GQA 1 to 16 (16 / G rows per warp tile, padding rows), D 64 and 128, g 1 and 2,
// sinks that cut chunks, fixed-point and float dK / dV sums, gradients left out.
TEST(CudaAttentionUnfold, OverlayMatchesDenseReference) {
  std::string why;
  if (!gsa::cuda::available(&why)) GTEST_SKIP() << why;
  struct ucase {
    int G, Hkv, D, c, g, sink, raw, max_pick, grads;
    bool fixed;
  };
  const ucase cases[] = {{1, 4, 64, 8, 1, 3, 300, 4, 7, false},   {3, 4, 64, 16, 1, 5, 520, 6, 7, false},
                         {4, 2, 128, 8, 2, 0, 310, 8, 7, false},  {16, 1, 64, 8, 1, 3, 200, 3, 7, false},
                         {2, 2, 128, 16, 1, 20, 700, 10, 5, true}, {5, 1, 128, 4, 1, 2, 150, 5, 3, false}};
  restore_mode keep;
  backend& be = get_backend(device::cuda, dtype::bf16);
  for (const ucase& uc : cases) {
    gist::gsa_config cfg;
    cfg.chunk = {uc.c};
    cfg.gists_per_chunk = uc.g;
    cfg.gist_token_ids = {1};
    cfg.sink = uc.sink;
    cfg.local_chunks = 1;
    cfg.validate();
    std::mt19937_64 rng(uint64_t(uc.raw) * 31 + uint64_t(uc.G));
    std::vector<int32_t> ids(size_t(uc.raw), 7);
    const gist::stream st = gist::build_stream(ids.data(), uc.raw, cfg);
    const int T = st.size(), n_complete = gist::complete_chunk_count(st);
    std::vector<std::vector<int32_t>> sel(size_t(T) * uc.Hkv);
    std::vector<int32_t> shared;
    for (int r = 0; r < T; r++) {
      if (st.level[r] > 0) continue;
      const int n_cand = gist::candidate_count(st.chunk[r], n_complete, cfg.local_chunks);
      if (n_cand <= 0) continue;
      if (r % 8 == 0) shared.clear();
      for (int h = 0; h < uc.Hkv; h++) {
        auto& v = sel[size_t(r) * uc.Hkv + h];
        const int want = int(rng() % uint64_t(uc.max_pick + 1));
        for (int i = 0; i < want; i++) {
          int32_t m = int32_t(rng() % uint64_t(n_cand));
          if (!shared.empty() && (rng() & 1)) m = std::min<int32_t>(shared[rng() % shared.size()], n_cand - 1);
          if (std::find(v.begin(), v.end(), m) == v.end()) v.push_back(m);
          if (shared.size() < 6) shared.push_back(m);
        }
      }
    }
    const row_unfold host = host_row_unfold(st, cfg, uc.Hkv, 0, sel);
    auto dev = std::make_shared<row_unfold>(host);
    for (Tensor* t : {&dev->count, &dev->ids, &dev->chunk_begin, &dev->chunk_end}) *t = be.upload(*t, dtype::i32);
    attn_plan plan = gist::plan_compress(st, cfg);
    const attn_plan expanded = expand_row_unfold(plan, host, 0);
    plan.unfold = dev;
    attn_case c;
    c.D = uc.D;
    c.G = uc.G;
    c.Hkv = uc.Hkv;
    c.g = uc.g;
    c.Tq = c.Tk = T;
    c.q_offset = 0;
    c.p_empty = 0;
    c.grads = uc.grads;
    SCOPED_TRACE(describe(c) + " c" + std::to_string(uc.c) + " sink" + std::to_string(uc.sink) +
                 (uc.fixed ? " fixed-point" : ""));
    ASSERT_GT(unfold_totals(host).chunks, int64_t(T) / 2) << "the case must unfold";
    set_deterministic_backward(uc.fixed);
    check_plan(c, plan, rng, path::any, &expanded);
  }
}

// The overlay refuses what it cannot run: tables for another plan size, f32 activations.
TEST(CudaAttentionUnfold, RefusesMismatchedTablesAndF32) {
  std::string why;
  if (!gsa::cuda::available(&why)) GTEST_SKIP() << why;
  gist::gsa_config cfg;
  cfg.chunk = {8};
  cfg.gist_token_ids = {1};
  cfg.validate();
  std::vector<int32_t> ids(64, 7);
  const gist::stream st = gist::build_stream(ids.data(), 64, cfg);
  std::vector<std::vector<int32_t>> sel(size_t(st.size()));
  sel.back() = {0};
  backend& be = get_backend(device::cuda, dtype::bf16);
  auto dev = std::make_shared<row_unfold>(host_row_unfold(st, cfg, 1, 0, sel));
  EXPECT_THROW(attach_unfold(*std::make_shared<device_plan>(upload_plan(gist::plan_compress(st, cfg), st.size(),
                                                                        st.size(), 0, 1)),
                             dev),
               error)
      << "host tables";
  for (Tensor* t : {&dev->count, &dev->ids, &dev->chunk_begin, &dev->chunk_end}) *t = be.upload(*t, dtype::i32);
  attn_plan shorter = gist::plan_compress(st, cfg);
  std::vector<int32_t> ids2(56, 7);
  const gist::stream st2 = gist::build_stream(ids2.data(), 56, cfg);
  device_plan dp2 = upload_plan(gist::plan_compress(st2, cfg), st2.size(), st2.size(), 0, 1);
  EXPECT_THROW(attach_unfold(dp2, dev), error) << "rows";
  device_plan dp = upload_plan(shorter, st.size(), st.size(), 0, 1);
  attach_unfold(dp, dev);
  const int T = st.size();
  dev_buf q(size_t(T) * 64 * 4), out(size_t(T) * 64 * 4), lse(size_t(T) * 4);
  EXPECT_THROW(attention_forward(out.p, static_cast<float*>(lse.p), q.p, q.p, q.p, dp, T, T, 0, 1, 1, 64, dtype::f32),
               error);
}

}  // namespace
}  // namespace gsa::cuda
