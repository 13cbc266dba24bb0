// Throughput of the CPU operators. matmul_forward is reported in FLOP/s next to a direct cblas_sgemm call on the
// same shape (the ratio shows what our wrapper and the M == 1 kernel cost or gain); rmsnorm in bytes/s; the fused
// LM head + cross-entropy in tokens/s and FLOP/s. Reports figures only: it never fails on time.
//   ./bench-ops --benchmark_filter=matmul
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <vector>

#include "backend/cpu/ops.h"
#include "core/rng.h"

namespace {

std::vector<float> random_vec(size_t n, uint64_t seed, float scale = 1.0f) {
  gsa::rng r(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = r.normal() * scale;
  return v;
}

void set_flops(benchmark::State& st, double flops_per_iter) {
  st.counters["FLOP/s"] = benchmark::Counter(flops_per_iter, benchmark::Counter::kIsIterationInvariantRate,
                                             benchmark::Counter::OneK::kIs1000);
}

// Shapes (M, K, N): a GPT-2-small projection, a large square, and decode-time matrix-vector.
void matmul_shapes(benchmark::internal::Benchmark* b) {
  b->Args({512, 768, 768})->Args({2048, 2048, 2048})->Args({1, 4096, 4096})->Args({1, 768, 3072});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

void BM_matmul_forward(benchmark::State& st) {
  const int M = int(st.range(0)), K = int(st.range(1)), N = int(st.range(2));
  auto x = random_vec(size_t(M) * K, 1), w = random_vec(size_t(N) * K, 2);
  std::vector<float> y(size_t(M) * N);
  for (auto _ : st) {
    gsa::cpu::matmul_forward(y.data(), x.data(), w.data(), nullptr, M, K, N);
    benchmark::DoNotOptimize(y.data());
  }
  set_flops(st, 2.0 * M * N * K);
}
BENCHMARK(BM_matmul_forward)->Apply(matmul_shapes);

void BM_matmul_cblas_sgemm(benchmark::State& st) {
  const int M = int(st.range(0)), K = int(st.range(1)), N = int(st.range(2));
  auto x = random_vec(size_t(M) * K, 1), w = random_vec(size_t(N) * K, 2);
  std::vector<float> y(size_t(M) * N);
  for (auto _ : st) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x.data(), K, w.data(), K, 0.0f, y.data(),
                N);
    benchmark::DoNotOptimize(y.data());
  }
  set_flops(st, 2.0 * M * N * K);
}
BENCHMARK(BM_matmul_cblas_sgemm)->Apply(matmul_shapes);

void BM_matmul_backward(benchmark::State& st) {
  const int M = int(st.range(0)), K = int(st.range(1)), N = int(st.range(2));
  auto x = random_vec(size_t(M) * K, 1), w = random_vec(size_t(N) * K, 2), dy = random_vec(size_t(M) * N, 3);
  std::vector<float> dx(x.size()), dw(w.size()), db(N);
  for (auto _ : st) {
    gsa::cpu::matmul_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), M, K, N);
    benchmark::DoNotOptimize(dx.data());
  }
  set_flops(st, 4.0 * M * N * K);
}
BENCHMARK(BM_matmul_backward)->Args({512, 768, 768})->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_rmsnorm_forward(benchmark::State& st) {
  const int T = int(st.range(0)), C = int(st.range(1));
  auto x = random_vec(size_t(T) * C, 1), w = random_vec(C, 2);
  std::vector<float> y(x.size()), rstd(T);
  for (auto _ : st) {
    gsa::cpu::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), T, C, 1e-5f);
    benchmark::DoNotOptimize(y.data());
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * 2 * int64_t(T) * C * int64_t(sizeof(float)));  // read x, write y
}
BENCHMARK(BM_rmsnorm_forward)->Args({1024, 768})->Args({4096, 2048})->UseRealTime();

void BM_rmsnorm_backward(benchmark::State& st) {
  const int T = int(st.range(0)), C = int(st.range(1));
  auto x = random_vec(size_t(T) * C, 1), w = random_vec(C, 2), dy = random_vec(size_t(T) * C, 3);
  std::vector<float> y(x.size()), rstd(T), dx(x.size()), dw(C);
  gsa::cpu::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), T, C, 1e-5f);
  for (auto _ : st) {
    gsa::cpu::rmsnorm_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(), T, C);
    benchmark::DoNotOptimize(dx.data());
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * 3 * int64_t(T) * C * int64_t(sizeof(float)));
}
BENCHMARK(BM_rmsnorm_backward)->Args({1024, 768})->Args({4096, 2048})->UseRealTime();

// (T, C, V): GPT-2-small-like head, and a Llama-3-sized vocabulary with a short sequence.
void xent_shapes(benchmark::internal::Benchmark* b) {
  b->Args({512, 768, 50304})->Args({128, 2048, 128256})->Unit(benchmark::kMillisecond)->UseRealTime();
}

void BM_xent_forward(benchmark::State& st) {
  const int T = int(st.range(0)), C = int(st.range(1)), V = int(st.range(2));
  auto h = random_vec(size_t(T) * C, 1), w = random_vec(size_t(V) * C, 2, 0.02f);
  std::vector<int32_t> y(T);
  for (int t = 0; t < T; t++) y[t] = int32_t((int64_t(t) * 7919) % V);
  std::vector<float> lse(T);
  int64_t valid = 0;
  for (auto _ : st)
    benchmark::DoNotOptimize(
        gsa::cpu::lm_head_xent_forward(lse.data(), h.data(), w.data(), y.data(), T, C, V, &valid));
  st.counters["tokens/s"] = benchmark::Counter(T, benchmark::Counter::kIsIterationInvariantRate);
  set_flops(st, 2.0 * T * C * V);
}
BENCHMARK(BM_xent_forward)->Apply(xent_shapes);

void BM_xent_backward(benchmark::State& st) {
  const int T = int(st.range(0)), C = int(st.range(1)), V = int(st.range(2));
  auto h = random_vec(size_t(T) * C, 1), w = random_vec(size_t(V) * C, 2, 0.02f);
  std::vector<int32_t> y(T);
  for (int t = 0; t < T; t++) y[t] = int32_t((int64_t(t) * 7919) % V);
  std::vector<float> lse(T), dh(h.size()), dw(w.size());
  int64_t valid = 0;
  gsa::cpu::lm_head_xent_forward(lse.data(), h.data(), w.data(), y.data(), T, C, V, &valid);
  for (auto _ : st) {
    gsa::cpu::lm_head_xent_backward(dh.data(), dw.data(), h.data(), w.data(), y.data(), lse.data(), T, C, V,
                                    1.0f / T);
    benchmark::DoNotOptimize(dw.data());
  }
  st.counters["tokens/s"] = benchmark::Counter(T, benchmark::Counter::kIsIterationInvariantRate);
  set_flops(st, 6.0 * T * C * V);  // logits recomputed + two gradient products
}
BENCHMARK(BM_xent_backward)->Apply(xent_shapes);

}  // namespace

BENCHMARK_MAIN();
