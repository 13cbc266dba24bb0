// Kernel-level benchmark of the plan-driven CPU attention: forward + backward of one layer (Hq = 8, Hkv = 2,
// D = 64) over a GSA stream, with a plain causal plan vs the GSA plan, at 1k / 4k / 16k raw tokens.
// The stream has chunks of 16 raw tokens + 1 gist; each query block is one chunk (17 rows). The GSA plan lets a
// block see its own chunk, the previous chunk, the 3 sink tokens and the gist of every earlier chunk; the causal
// plan uses the same blocks with every earlier key. Reported: time per iteration (ms), visible (query, key) pairs
// summed over KV heads, and pairs/s. Figures only; nothing here fails on time.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <vector>

#include "backend/cpu/attention.h"
#include "core/rng.h"

namespace {

using namespace gsa::cpu;

constexpr int kChunk = 16, kBlock = kChunk + 1, kSink = 3, kHq = 8, kHkv = 2, kD = 64;

attn_plan plan_gsa(int n_chunks) {
  attn_plan p;
  p.block_q = {0};
  p.seg_ptr = {0};
  p.gist_ptr = {0, n_chunks};
  for (int c = 0; c < n_chunks; c++) p.gist_pos.push_back(c * kBlock + kChunk);  // chunk c's gist
  for (int m = 0; m < n_chunks; m++) {
    const int prev = std::max(0, (m - 1) * kBlock);
    if (prev > kSink) p.segs.push_back(key_range(0, kSink));       // sink raw tokens (else inside the range below)
    if (m >= 2) p.segs.push_back(gist_units(0, 0, m - 1));          // gists of older chunks
    p.segs.push_back(key_range(prev, (m + 1) * kBlock));             // previous + own chunk, their gists included
    p.seg_ptr.push_back(int64_t(p.segs.size()));
    p.block_q.push_back((m + 1) * kBlock);
  }
  return p;
}

void bm_attention(benchmark::State& state) {
  const int raw = int(state.range(0));
  const bool gsa = state.range(1) != 0;
  const int n_chunks = raw / kChunk, T = n_chunks * kBlock;
  const attn_plan plan = gsa ? plan_gsa(n_chunks) : plan_causal(T, 0, kBlock);

  gsa::rng r(1);
  auto fill = [&](size_t n) {
    std::vector<float> x(n);
    for (auto& e : x) e = r.normal();
    return x;
  };
  const auto q = fill(size_t(T) * kHq * kD), k = fill(size_t(T) * kHkv * kD), v = fill(size_t(T) * kHkv * kD);
  const auto dout = fill(q.size());
  std::vector<float> out(q.size()), lse(size_t(T) * kHq), dq(q.size()), dk(k.size()), dv(v.size());

  for (auto _ : state) {
    attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), plan, T, T, 0, kHq, kHkv, kD);
    attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(), out.data(),
                       lse.data(), plan, T, T, 0, kHq, kHkv, kD);
    benchmark::DoNotOptimize(dq.data());
    benchmark::ClobberMemory();
  }
  const double pairs = double(attended_pairs(plan, kHkv, 0));
  state.counters["stream"] = T;
  state.counters["plan_bytes"] = double(plan.bytes());
  state.counters["pairs"] = pairs;
  state.counters["pairs/s"] = benchmark::Counter(pairs, benchmark::Counter::kIsIterationInvariantRate);
  // Fraction of the causal pairs that the plan keeps (1 for causal).
  state.counters["vs_causal"] = pairs / (double(T) * (T + 1) / 2 * kHkv);
}

BENCHMARK(bm_attention)
    ->ArgNames({"raw", "gsa"})
    ->ArgsProduct({{1024, 4096, 16384}, {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
