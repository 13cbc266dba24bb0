// Shared by the CUDA attention tests (test-attention.cpp: the kernels against the dense reference, plan checks;
// test-attention-backward.cpp: determinism, the key-major backward, the row unfold's overlay): random plans, the
// float64 / float32 dense references, device buffers and check_plan (the pass rule is in test-attention.cpp's
// header comment).
#pragma once
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

namespace gsa::cuda::attn_test {


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

inline std::string describe(const attn_case& c) {
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
inline attn_plan random_plan(const attn_case& c, std::mt19937_64& rng) {
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
inline std::vector<float> random_values(std::mt19937_64& rng, size_t n, float amp, dtype t) {
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
inline void upload(dev_buf& b, const std::vector<float>& x, dtype t) {
  std::vector<unsigned char> raw(x.size() * dtype_size(t));
  convert_from_f32(raw.data(), x.data(), t, x.size());
  copy_h2d(b.p, raw.data(), raw.size());
}
inline std::vector<float> download(const dev_buf& b, size_t n, dtype t) {
  std::vector<unsigned char> raw(n * dtype_size(t));
  copy_d2h(raw.data(), b.p, raw.size());
  std::vector<float> x(n);
  convert_to_f32(x.data(), raw.data(), t, n);
  return x;
}
inline void poison(dev_buf& b) {
  std::vector<unsigned char> nan(b.bytes, 0xff);  // NaN in f32 and in bf16
  copy_h2d(b.p, nan.data(), nan.size());
}

template <typename X, typename R>
inline double rel_l2(const std::vector<X>& x, const std::vector<R>& ref, const std::vector<float>* base = nullptr) {
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
inline void check_plan(const attn_case& c, const attn_plan& plan, std::mt19937_64& rng, path want = path::any,
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

// Restore the backward's switches (attention.h) at the end of a test that changes them.
struct restore_keymajor {
  int was = backward_scheme();
  ~restore_keymajor() { set_backward_scheme(was); }
};
struct restore_rows {
  int was = structured_backward_rows(), was_fwd = structured_forward_rows(), was_wgmma = structured_wgmma();
  ~restore_rows() {
    set_structured_backward_rows(was);
    set_structured_forward_rows(was_fwd);
    set_structured_wgmma(was_wgmma);
  }
};
struct restore_mode {
  bool was = deterministic_backward();
  ~restore_mode() { set_deterministic_backward(was); }
};

}  // namespace gsa::cuda::attn_test
