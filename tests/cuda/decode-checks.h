// Correctness checks of gsa::cuda decode attention against naive CPU references, shared by the gtest program
// (test-decode-attention.cpp) and the standalone device binary (bench/cuda/bench-decode-attention.cpp --check),
// so the GPU machine, which may lack GoogleTest, runs the very same checks.
//
// Each check draws fresh random q/k/v (bf16 inputs are rounded first, and the references see the rounded
// values), random ascending key lists of the requested lengths, runs the kernel on poisoned outputs, and
// compares with (a) a float64 reference and (b) a naive float32 implementation (two-pass softmax, sequential
// sums). Pass: every output written and finite where the reference is, empty lists give exactly 0 / -inf, and
//   err(kernel) <= 4 * err(naive f32) + 1e-6  (+ the bf16 rounding of the reference itself for bf16 output),
// err = ||x - ref64|| / ||ref64|| over the whole output; lse within 4 * naive + 2e-5 absolute.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/decode-attention.h"
#include "core/dtype.h"

namespace gsa::cuda::test {

struct check_case {
  int batch = 1, hq = 8, hkv = 2, d = 128;
  decode_dtype kv = decode_dtype::bf16, out = decode_dtype::f32;
  std::vector<int64_t> lens;  // one per (b, hkv) list, cycled if shorter than batch*hkv
  int force_splits = 0;       // 0: the plan's heuristic
  bool padded = false;        // padded strides and a non-zero row offset per sequence
  bool async_copy = true;     // load path of the CUDA-core split kernel
  bool tensor_cores = true;   // the tensor-core kernel where it applies (bf16, D 64 / 128)
  uint64_t seed = 1;
};

struct check_result {
  bool ok = false;
  double err = 0, err_naive = 0, err_round = 0, lse_err = 0, lse_err_naive = 0;
  int num_splits = 0;
  std::string msg;
};

namespace detail {

inline void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

template <typename T>
struct dev_buf {
  T* p = nullptr;
  explicit dev_buf(size_t n) { cuda_ok(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)), "cudaMalloc"); }
  ~dev_buf() { cudaFree(p); }
  dev_buf(const dev_buf&) = delete;
  dev_buf& operator=(const dev_buf&) = delete;
};

inline double rel_l2(const std::vector<double>& x, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); i++) {
    if (!std::isfinite(ref[i])) continue;
    num += (x[i] - ref[i]) * (x[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

}  // namespace detail

inline check_result run_check(const check_case& c) {
  using detail::cuda_ok;
  check_result res;
  std::mt19937_64 gen(c.seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int B = c.batch, Hq = c.hq, Hkv = c.hkv, D = c.d, G = Hq / Hkv;
  const size_t es = c.kv == decode_dtype::f32 ? 4 : 2;
  const int64_t pad = c.padded ? int64_t(16 / es) : 0;

  // Lists: ascending distinct positions with random gaps; each sequence's cache is as long as its longest list needs.
  const int n_lists = B * Hkv;
  std::vector<int64_t> indptr(n_lists + 1, 0);
  std::vector<int32_t> indices;
  std::vector<int64_t> seq_rows(B, 1);
  int64_t max_len = 0;
  for (int li = 0; li < n_lists; li++) {
    const int64_t n = c.lens.empty() ? 0 : c.lens[li % c.lens.size()];
    max_len = std::max(max_len, n);
    int64_t pos = int64_t(gen() % 3);
    for (int64_t i = 0; i < n; i++) {
      indices.push_back(int32_t(pos));
      pos += 1 + int64_t(gen() % 3);
    }
    seq_rows[li / Hkv] = std::max(seq_rows[li / Hkv], pos);
    indptr[li + 1] = int64_t(indices.size());
  }
  std::vector<int64_t> row_off(B, 0);
  int64_t rows = 0;
  for (int b = 0; b < B; b++) {
    rows += c.padded ? 5 : 0;  // gaps between sequences in the pool
    row_off[b] = rows;
    rows += seq_rows[b];
  }

  const int64_t kv_sh = D + pad, kv_st = Hkv * kv_sh;
  const int64_t q_sh = D + pad, q_sb = Hq * q_sh + pad;
  const int64_t o_sh = D + (c.padded ? 8 : 0), o_sb = Hq * o_sh;
  const int64_t lse_sb = Hq + (c.padded ? 3 : 0);

  // Host data as f32 (already rounded for bf16) plus the device representation.
  auto make = [&](size_t n, std::vector<float>& f, std::vector<uint8_t>& raw) {
    f.resize(n);
    raw.resize(n * es);
    for (size_t i = 0; i < n; i++) {
      float x = nd(gen);
      if (c.kv == decode_dtype::bf16) {
        const uint16_t h = f32_to_bf16(x);
        x = bf16_to_f32(h);
        std::memcpy(&raw[i * 2], &h, 2);
      } else {
        std::memcpy(&raw[i * 4], &x, 4);
      }
      f[i] = x;
    }
  };
  std::vector<float> qf, kf, vf;
  std::vector<uint8_t> qr, kr, vr;
  make(size_t(B) * q_sb, qf, qr);
  make(size_t(rows) * kv_st, kf, kr);
  make(size_t(rows) * kv_st, vf, vr);
  // References.
  const float scale = 1.0f / std::sqrt(float(D));
  const size_t n_out = size_t(B) * Hq * D;
  std::vector<double> ref(n_out), naive(n_out), ref_lse(size_t(B) * Hq), naive_lse(size_t(B) * Hq);
  std::vector<double> sc;
  std::vector<float> sc32;
  for (int b = 0; b < B; b++)
    for (int hq = 0; hq < Hq; hq++) {
      const int h = hq / G, li = b * Hkv + h;
      const int64_t n = indptr[li + 1] - indptr[li];
      const float* q = &qf[size_t(b) * q_sb + size_t(hq) * q_sh];
      double* o = &ref[(size_t(b) * Hq + hq) * D];
      double* o32 = &naive[(size_t(b) * Hq + hq) * D];
      if (n == 0) {
        std::fill(o, o + D, 0.0);
        std::fill(o32, o32 + D, 0.0);
        ref_lse[b * Hq + hq] = naive_lse[b * Hq + hq] = -INFINITY;
        continue;
      }
      sc.resize(n);
      sc32.resize(n);
      double mx = -INFINITY;
      float mx32 = -INFINITY;
      for (int64_t j = 0; j < n; j++) {
        const int64_t r = row_off[b] + indices[indptr[li] + j];
        const float* k = &kf[size_t(r) * kv_st + size_t(h) * kv_sh];
        double s = 0;
        float s32 = 0;
        for (int d = 0; d < D; d++) {
          s += double(q[d]) * double(k[d]);
          s32 += q[d] * k[d];
        }
        sc[j] = s * scale;
        sc32[j] = s32 * scale;
        mx = std::max(mx, sc[j]);
        mx32 = std::max(mx32, sc32[j]);
      }
      double sum = 0;
      float sum32 = 0;
      std::vector<double> acc(D, 0.0);
      std::vector<float> acc32(D, 0.f);
      for (int64_t j = 0; j < n; j++) {
        const int64_t r = row_off[b] + indices[indptr[li] + j];
        const float* v = &vf[size_t(r) * kv_st + size_t(h) * kv_sh];
        const double p = std::exp(sc[j] - mx);
        const float p32 = std::exp(sc32[j] - mx32);
        sum += p;
        sum32 += p32;
        for (int d = 0; d < D; d++) {
          acc[d] += p * v[d];
          acc32[d] += p32 * v[d];
        }
      }
      for (int d = 0; d < D; d++) {
        o[d] = acc[d] / sum;
        o32[d] = double(acc32[d] / sum32);
      }
      ref_lse[b * Hq + hq] = mx + std::log(sum);
      naive_lse[b * Hq + hq] = double(mx32 + std::log(sum32));
    }

  // Device run.
  detail::dev_buf<uint8_t> dq(qr.size()), dk(kr.size()), dv(vr.size());
  detail::dev_buf<int64_t> dptr(indptr.size()), doff(B);
  detail::dev_buf<int32_t> didx(indices.size());
  const size_t oes = c.out == decode_dtype::f32 ? 4 : 2;
  detail::dev_buf<uint8_t> dout(size_t(B) * o_sb * oes);
  detail::dev_buf<float> dlse(size_t(B) * lse_sb);
  cuda_ok(cudaMemcpy(dq.p, qr.data(), qr.size(), cudaMemcpyHostToDevice), "copy q");
  cuda_ok(cudaMemcpy(dk.p, kr.data(), kr.size(), cudaMemcpyHostToDevice), "copy k");
  cuda_ok(cudaMemcpy(dv.p, vr.data(), vr.size(), cudaMemcpyHostToDevice), "copy v");
  cuda_ok(cudaMemcpy(dptr.p, indptr.data(), indptr.size() * 8, cudaMemcpyHostToDevice), "copy indptr");
  if (!indices.empty())
    cuda_ok(cudaMemcpy(didx.p, indices.data(), indices.size() * 4, cudaMemcpyHostToDevice), "copy indices");
  cuda_ok(cudaMemcpy(doff.p, row_off.data(), size_t(B) * 8, cudaMemcpyHostToDevice), "copy offsets");
  cuda_ok(cudaMemset(dout.p, 0xff, size_t(B) * o_sb * oes), "poison out");  // NaN in f32 and bf16
  cuda_ok(cudaMemset(dlse.p, 0xff, size_t(B) * lse_sb * 4), "poison lse");

  decode_params p;
  p.batch = B;
  p.n_q_heads = Hq;
  p.n_kv_heads = Hkv;
  p.head_dim = D;
  p.kv_dtype = c.kv;
  p.out_dtype = c.out;
  p.scale = scale;
  p.q = dq.p;
  p.q_stride_b = q_sb;
  p.q_stride_h = q_sh;
  p.k = dk.p;
  p.v = dv.p;
  p.kv_stride_t = kv_st;
  p.kv_stride_h = kv_sh;
  p.kv_row_offset = doff.p;
  p.indptr = dptr.p;
  p.indices = didx.p;
  p.out = dout.p;
  p.o_stride_b = o_sb;
  p.o_stride_h = o_sh;
  p.lse = dlse.p;
  p.lse_stride_b = lse_sb;
  decode_plan_options opt;
  opt.num_sms = current_device_sms();
  opt.force_splits = c.force_splits;
  opt.async_copy = c.async_copy;
  opt.tensor_cores = c.tensor_cores;
  const decode_plan plan = plan_decode(p, max_len, opt);
  res.num_splits = plan.num_splits;
  detail::dev_buf<uint8_t> ws(plan.workspace_bytes);
  run_decode(p, plan, ws.p);
  cuda_ok(cudaDeviceSynchronize(), "decode kernel");

  std::vector<uint8_t> outr(size_t(B) * o_sb * oes);
  std::vector<float> lse(size_t(B) * lse_sb);
  cuda_ok(cudaMemcpy(outr.data(), dout.p, outr.size(), cudaMemcpyDeviceToHost), "copy out");
  cuda_ok(cudaMemcpy(lse.data(), dlse.p, lse.size() * 4, cudaMemcpyDeviceToHost), "copy lse");

  std::vector<double> got(n_out), rounded(n_out);
  std::string bad;
  for (int b = 0; b < B; b++)
    for (int hq = 0; hq < Hq; hq++) {
      const bool empty = std::isinf(ref_lse[b * Hq + hq]);
      const float l = lse[size_t(b) * lse_sb + hq];
      if (empty ? !(std::isinf(l) && l < 0) : !std::isfinite(l))
        bad = "lse of (" + std::to_string(b) + "," + std::to_string(hq) + ") is " + std::to_string(l);
      if (!empty) {
        res.lse_err = std::max(res.lse_err, std::fabs(double(l) - ref_lse[b * Hq + hq]));
        res.lse_err_naive = std::max(res.lse_err_naive, std::fabs(naive_lse[b * Hq + hq] - ref_lse[b * Hq + hq]));
      }
      for (int d = 0; d < D; d++) {
        const size_t off = size_t(b) * o_sb + size_t(hq) * o_sh + d, i = (size_t(b) * Hq + hq) * D + d;
        float x;
        if (c.out == decode_dtype::f32) {
          std::memcpy(&x, &outr[off * 4], 4);
        } else {
          uint16_t h16;
          std::memcpy(&h16, &outr[off * 2], 2);
          x = bf16_to_f32(h16);
        }
        got[i] = x;
        rounded[i] = c.out == decode_dtype::f32 ? ref[i] : double(bf16_to_f32(f32_to_bf16(float(ref[i]))));
        if (!std::isfinite(x)) bad = "output not written or not finite at b=" + std::to_string(b);
        if (empty && x != 0.f) bad = "empty list gave a non-zero output";
      }
    }
  res.err = detail::rel_l2(got, ref);
  res.err_naive = detail::rel_l2(naive, ref);
  res.err_round = detail::rel_l2(rounded, ref);
  const double bound = 1.25 * res.err_round + 4 * res.err_naive + 1e-6;
  const double lse_bound = 4 * res.lse_err_naive + 2e-5;
  res.ok = bad.empty() && res.err <= bound && res.lse_err <= lse_bound;
  if (!bad.empty())
    res.msg = bad;
  else if (!res.ok)
    res.msg = "error " + std::to_string(res.err) + " (bound " + std::to_string(bound) + "), lse error " +
              std::to_string(res.lse_err) + " (bound " + std::to_string(lse_bound) + ")";
  return res;
}

// The case matrix the device run covers (the gtest program has one test per entry).
inline std::vector<check_case> standard_cases() {
  std::vector<check_case> cs;
  uint64_t seed = 100;
  // B 3, Hkv 2, group g, lists of 1, 7, 300, 0, 33 and 4097 keys.
  auto grid_case = [&](decode_dtype kv, int d, int g, decode_dtype out, bool padded) {
    check_case c;
    c.kv = kv;
    c.d = d;
    c.hkv = 2;
    c.hq = 2 * g;
    c.batch = 3;
    c.lens = {1, 7, 300, 0, 33, 4097};
    c.out = out;
    c.padded = padded;
    c.seed = seed++;
    return c;
  };
  for (auto kv : {decode_dtype::bf16, decode_dtype::f32})
    for (int d : {64, 128})
      for (int g : {1, 2, 4, 8})
        cs.push_back(grid_case(kv, d, g, (g == 2 || g == 8) ? decode_dtype::bf16 : decode_dtype::f32, g == 4));
  // The CUDA-core kernel's register-load path over the same matrix, and its cp.async ring where the tensor-core
  // kernel took the bf16 cases.
  const size_t n_main = cs.size();
  for (size_t i = 0; i < n_main; i++) {
    check_case c = cs[i];
    c.async_copy = false;
    c.tensor_cores = false;
    c.seed = seed++;
    cs.push_back(c);
    if (c.kv == decode_dtype::bf16) {
      c.async_copy = true;
      c.seed = seed++;
      cs.push_back(c);
    }
  }
  // Forced split counts (the combine path with empty trailing splits, and one split for a long list).
  for (int s : {1, 3, 17, 64}) {
    check_case c;
    c.batch = 2;
    c.hq = 8;
    c.hkv = 2;
    c.lens = {1000, 5, 0, 2500};
    c.force_splits = s;
    c.seed = seed++;
    cs.push_back(c);
  }
  // The groups of common models that are not powers of two (3: Llama-3.2-3B and our GPU presets, 6: Qwen2.5-1.5B,
  // 7: Qwen2-7B), each dtype and head size once.
  for (int g : {3, 6, 7})
    for (auto kv : {decode_dtype::bf16, decode_dtype::f32})
      for (int d : {64, 128}) cs.push_back(grid_case(kv, d, g, kv, g == 6));
  // Head dim 32 (the shipped demo models: 4 query / 2 KV heads), both dtypes and load paths, forced splits too.
  for (auto kv : {decode_dtype::bf16, decode_dtype::f32})
    for (bool async : {true, false}) {
      check_case c = grid_case(kv, 32, 2, kv, !async);
      c.async_copy = async;
      c.tensor_cores = async;  // D 32 never takes the tensor-core kernel: both paths run on CUDA cores
      cs.push_back(c);
    }
  {
    check_case c = grid_case(decode_dtype::bf16, 32, 2, decode_dtype::f32, false);
    c.force_splits = 5;
    cs.push_back(c);
  }
  // Long lists (100k keys), each dtype and head size once.
  for (auto kv : {decode_dtype::bf16, decode_dtype::f32})
    for (int d : {64, 128}) {
      check_case c;
      c.kv = kv;
      c.d = d;
      c.batch = 1;
      c.hq = 8;
      c.hkv = 1;
      c.lens = {100000};
      c.out = kv == decode_dtype::bf16 ? decode_dtype::bf16 : decode_dtype::f32;
      c.seed = seed++;
      cs.push_back(c);
    }
  // Everything empty.
  {
    check_case c;
    c.batch = 2;
    c.lens = {0};
    c.seed = seed++;
    cs.push_back(c);
  }
  return cs;
}

inline std::string describe(const check_case& c) {
  std::string s;
  s += c.kv == decode_dtype::bf16 ? "bf16" : "f32";
  s += c.out == decode_dtype::bf16 ? "->bf16" : "->f32";
  s.append(" B").append(std::to_string(c.batch));
  s.append(" Hq").append(std::to_string(c.hq));
  s.append(" Hkv").append(std::to_string(c.hkv));
  s.append(" D").append(std::to_string(c.d));
  s += " lens";
  for (auto n : c.lens) s.append(":").append(std::to_string(n));
  if (c.force_splits) s.append(" splits=").append(std::to_string(c.force_splits));
  if (c.padded) s += " padded";
  const bool tc = c.tensor_cores && c.kv == decode_dtype::bf16 && (c.d == 64 || c.d == 128);
  if (tc) s += " mma";
  else if (!c.async_copy) s += " regs";
  else s += " ring";
  return s;
}

}  // namespace gsa::cuda::test
