// One GSA attention layer, forward + backward, on the GPU (backend/cuda/attention.h), over lengths and plan
// kinds; figures only. The plans are the engine's own (gist/plan.h); unfold plans select random earlier chunks
// with the adaptive k (the kernel's cost does not depend on which chunks). Compare with scripts/bench-torch-
// attention.py (PyTorch SDPA dense causal, FlexAttention with the same gist mask), run in the same device call.
//
//   bench-gsa-attention [--lengths 8k,16k,32k,64k,128k] [--heads 16] [--kv-heads 16,4] [--dim 128]
//                       [--plans causal,c16g1,c64g4,unfold16] [--reps 5] [--json FILE]
//
// Useful FLOPs: 4 * D per visible (query head, key) pair forward, 2.5x that backward (the FlashAttention count:
// 5 matmuls against 2), so fwd+bwd = 14 * D * pairs; TFLOP/s against the 767 TFLOP/s bf16 matmul rate measured
// on the H200. The backward is timed in its default mode (f32 atomics), deterministic (fixed-point dk / dv sums;
// key-major on structured plans), key-major in f32 (structured plans) and computing dq alone (about the key-major
// scheme's row pass): the last columns.
#include <cuda_runtime.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "backend/cpu/attention.h"
#include "backend/cuda/attention.h"
#include "backend/cuda/ops.h"
#include "backend/cuda/runtime.h"
#include "core/error.h"
#include "core/rng.h"
#include "gist/plan.h"
#include "gist/select.h"
#include "gist/stream.h"

namespace gsa {
namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string x;
  while (std::getline(ss, x, ',')) out.push_back(x);
  return out;
}

int64_t parse_len(const std::string& s) {
  const char u = s.empty() ? 0 : s.back();
  if (u == 'k' || u == 'K') return std::stoll(s.substr(0, s.size() - 1)) * 1024;
  return std::stoll(s);
}

struct plan_kind {
  std::string name;
  int c = 0, g = 1;      // 0: dense causal over the raw tokens
  bool unfold = false;   // adaptive-k unfolding of random chunks per block
};

plan_kind parse_kind(const std::string& s) {
  plan_kind k{s};
  if (s == "causal") return k;
  int c = 0, g = 1;
  if (std::sscanf(s.c_str(), "c%dg%d", &c, &g) == 2 && c > 0 && g > 0) {
    k.c = c, k.g = g;
    return k;
  }
  if (std::sscanf(s.c_str(), "unfold%d", &c) == 1 && c > 0) {
    k.c = c, k.unfold = true;
    return k;
  }
  fail("unknown plan '{}': use causal, c<C>g<G> (compress) or unfold<C> (adaptive k, g = 1)", s);
}

// The stream length and plan for L raw tokens.
cpu::attn_plan make_plan(const plan_kind& k, int L, int Hq, int Hkv, int& n) {
  if (k.c == 0) {
    n = L;
    return cpu::plan_causal(L, 0, 64);
  }
  gist::gsa_config cfg;
  cfg.chunk = {k.c};
  cfg.gists_per_chunk = k.g;
  cfg.gist_token_ids = {1};
  cfg.validate();
  std::vector<int32_t> raw(size_t(L), 7);
  gist::stream s = gist::build_stream(raw.data(), L, cfg);
  n = s.size();
  cpu::attn_plan base = gist::plan_compress(s, cfg);
  if (!k.unfold) return base;
  // Each block unfolds adaptive-k random chunks before its local window (the same for every KV head: union).
  rng r(99);
  std::vector<std::vector<int32_t>> sel(size_t(base.n_blocks()) * Hkv);
  for (int b = 0; b < base.n_blocks(); b++) {
    const int row = base.block_q[b];
    const int m = s.chunk[row];
    const int cand = std::max(0, m - cfg.local_chunks);
    const int kk = std::min(cand, gist::adaptive_k(int64_t(m) * k.c, cfg, Hq / Hkv, cand));
    std::vector<int32_t> pick;
    for (int i = 0; i < kk; i++) pick.push_back(int32_t(r.below(uint64_t(cand))));
    std::sort(pick.begin(), pick.end());
    pick.erase(std::unique(pick.begin(), pick.end()), pick.end());
    for (int h = 0; h < Hkv; h++) sel[size_t(b) * Hkv + h] = pick;
  }
  return gist::plan_unfold(s, cfg, base, sel, Hkv);
}

void* device_random(int64_t n, rng& r, float scale) {
  std::vector<float> h(static_cast<size_t>(n));
  for (auto& x : h) x = r.normal() * scale;
  std::vector<uint16_t> b(h.size());
  for (size_t i = 0; i < h.size(); i++) b[i] = f32_to_bf16(h[i]);
  void* p = cuda::alloc(size_t(n) * 2);
  cuda::copy_h2d(p, b.data(), b.size() * 2);
  return p;
}

int run(int argc, char** argv) {
  std::string lengths = "8k,16k,32k,64k,128k", kv = "16,4", kinds = "causal,c16g1,c64g4,unfold16", json_path;
  int Hq = 16, D = 128, reps = 5;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) fail("{} needs a value", a);
      return argv[++i];
    };
    if (a == "--lengths") lengths = next();
    else if (a == "--heads") Hq = std::stoi(next());
    else if (a == "--kv-heads") kv = next();
    else if (a == "--dim") D = std::stoi(next());
    else if (a == "--plans") kinds = next();
    else if (a == "--reps") reps = std::stoi(next());
    else if (a == "--json") json_path = next();
    else fail("unknown argument {}; see the header of bench/cuda/bench-gsa-attention.cpp", a);
  }
  std::string why;
  if (!cuda::available(&why)) fail("no GPU: {}", why);
  cudaEvent_t e0, e1;
  GSA_CUDA_CHECK(cudaEventCreate(&e0));
  GSA_CUDA_CHECK(cudaEventCreate(&e1));
  nlohmann::json rows = nlohmann::json::array();
  fmt::print("{:>8} {:>5} {:>10} {:>9} {:>10} {:>10} {:>10} {:>9} {:>8} {:>10}\n", "L", "Hkv", "plan", "n", "fwd ms",
             "bwd ms", "total ms", "TFLOP/s", "% 767", "plan MiB kernel   bwd: deterministic / key-major / dq only ms");
  for (const auto& hk : split(kv)) {
    const int Hkv = std::stoi(hk);
    for (const auto& ls : split(lengths)) {
      const int L = int(parse_len(ls));
      // Inputs once per (Hkv, L), sized for the longest stream of the plan kinds (n = L (1 + g / c) <= 1.25 L).
      const int64_t n_max = int64_t(L) + L / 4 + 64;
      rng r(uint64_t(L) * 31 + Hkv);
      void* q = device_random(n_max * Hq * D, r, 1.0f);
      void* k = device_random(n_max * Hkv * D, r, 1.0f);
      void* v = device_random(n_max * Hkv * D, r, 1.0f);
      void* dout = device_random(n_max * Hq * D, r, 1.0f);
      void* out = cuda::alloc(size_t(n_max) * Hq * D * 2);
      float* lse = static_cast<float*>(cuda::alloc(size_t(n_max) * Hq * 4));
      void* dq = cuda::alloc(size_t(n_max) * Hq * D * 2);
      void* dk = cuda::alloc(size_t(n_max) * Hkv * D * 2);
      void* dv = cuda::alloc(size_t(n_max) * Hkv * D * 2);
      for (const auto& ks : split(kinds)) {
        const plan_kind kind = parse_kind(ks);
        int n = 0;
        cpu::attn_plan plan = make_plan(kind, L, Hq, Hkv, n);
        GSA_ASSERT(n <= n_max);
        const int64_t pairs = cpu::attended_pairs(plan, Hkv, 0) * (Hq / Hkv);
        cuda::set_backward_scheme(1);  // uploads the inverse of structured plans, for the key-major column
        cuda::device_plan dp = cuda::upload_plan(plan, n, n, 0, Hkv);
        auto fwd = [&] { cuda::attention_forward(out, lse, q, k, v, dp, n, n, 0, Hq, Hkv, D, dtype::bf16); };
        auto bwd = [&] {
          cuda::memset0(dq, size_t(n) * Hq * D * 2);
          cuda::memset0(dk, size_t(n) * Hkv * D * 2);
          cuda::memset0(dv, size_t(n) * Hkv * D * 2);
          cuda::attention_backward(dq, dk, dv, dout, q, k, v, out, lse, dp, n, n, 0, Hq, Hkv, D, dtype::bf16);
        };
        auto time_ms = [&](auto&& f) {
          f();
          std::vector<float> t;
          for (int i = 0; i < reps; i++) {
            GSA_CUDA_CHECK(cudaEventRecord(e0, cuda::ctx().stream));
            f();
            GSA_CUDA_CHECK(cudaEventRecord(e1, cuda::ctx().stream));
            GSA_CUDA_CHECK(cudaEventSynchronize(e1));
            float ms = 0;
            GSA_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
            t.push_back(ms);
          }
          std::sort(t.begin(), t.end());
          return double(t[t.size() / 2]);
        };
        const double f_ms = time_ms(fwd);
        const bool fast = cuda::attention_plan_is_structured(dp);
        cuda::set_backward_scheme(0);
        const double b_ms = time_ms(bwd);  // the default: f32 atomics
        double b_km_ms = b_ms;             // structured plans: key-major dk / dv in f32 (GSA_CUDA_BWD=keymajor)
        if (fast) {
          cuda::set_backward_scheme(1);
          b_km_ms = time_ms(bwd);
        }
        const double b_dq_ms = time_ms([&] {  // dq alone: about the key-major scheme's row pass
          cuda::attention_backward(dq, nullptr, nullptr, dout, q, k, v, out, lse, dp, n, n, 0, Hq, Hkv, D, dtype::bf16);
        });
        cuda::set_backward_scheme(-1);
        cuda::set_deterministic_backward(true);  // and key-major on structured plans, as by default
        const double b_det_ms = time_ms(bwd);  // fixed-point dk / dv sums (GSA_CUDA_DETERMINISTIC=1)
        cuda::set_deterministic_backward(false);
        const double flops = 14.0 * double(D) * double(pairs);
        const double tflops = flops / ((f_ms + b_ms) * 1e-3) / 1e12;
        const double plan_mib = double(plan.bytes()) / 1048576.0;
        fmt::print("{:>8} {:>5} {:>10} {:>9} {:>10.3f} {:>10.3f} {:>10.3f} {:>9.1f} {:>7.1f}% {:>10.2f} {:<10} {:>8.3f} {:>8.3f} {:.3f}\n",
                   L, Hkv, kind.name, n, f_ms, b_ms, f_ms + b_ms, tflops, 100.0 * tflops / 767.0, plan_mib,
                   fast ? "structured" : "generic", b_det_ms, b_km_ms, b_dq_ms);
        std::fflush(stdout);
        rows.push_back({{"L", L},         {"n", n},           {"heads", Hq},      {"kv_heads", Hkv},
                        {"dim", D},       {"plan", kind.name}, {"pairs", pairs},   {"fwd_ms", f_ms},
                        {"bwd_ms", b_ms}, {"bwd_ms_deterministic", b_det_ms}, {"bwd_ms_keymajor", b_km_ms}, {"bwd_ms_dq_only", b_dq_ms}, {"ms", f_ms + b_ms}, {"tflops", tflops}, {"plan_bytes", plan.bytes()},
                        {"kernel", fast ? "structured" : "generic"}});
      }
      for (void* p : {q, k, v, dout, out, static_cast<void*>(lse), dq, dk, dv}) cuda::release(p);
    }
  }
  if (!json_path.empty()) std::ofstream(json_path) << rows.dump(1) << "\n";
  return 0;
}

}  // namespace
}  // namespace gsa

int main(int argc, char** argv) {
  try {
    return gsa::run(argc, argv);
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench-gsa-attention: {}\n", e.what());
    return 1;
  }
}
