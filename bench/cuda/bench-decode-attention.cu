// Standalone device program for the gathered-key decode attention (needs only CUDA and the gsa sources, not
// GoogleTest, so it runs on a bare GPU machine):
//   --check        the correctness matrix of tests/cuda/decode-checks.h; exit code 1 on any failure
//   --bench        per-token decode latency, full attention (list = all L raw keys) vs GSA-shaped lists
//                  (sink 4 + L/16 raw keys in 64-key chunks + L/16 gists + 256-key window), bf16 K/V, D 128
//   --dump DIR     writes one full-attention case (inputs and our output) for scripts/sdpa-reference.py
// Timing: each measurement replays a CUDA graph of `iters` launches that rotate over copies of the K/V pool
// (>= 512 MiB in all, so L2 (60 MB) does not serve repeats); median of 7 replays, per launch.
// Bytes counted: gathered K and V rows only (list entries x Hkv x D x 2 bytes x 2), against the ~4.3 TB/s
// device copy rate measured on this workplace's H200s (.library/device/KINDS.md).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/decode-attention.h"
#include "cuda/decode-checks.h"

using namespace gsa::cuda;
using gsa::cuda::test::detail::cuda_ok;

namespace {

constexpr double kCopyCeilingGBs = 4300.0;

__global__ void fill_random(__nv_bfloat16* x, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint64_t h = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 29;
    const float u1 = float(h & 0xffffff) / 16777216.f, u2 = float((h >> 24) & 0xffffff) / 16777216.f;
    x[i] = __float2bfloat16_rn((u1 + u2 - 1.f) * 2.4f);  // mean 0, std ~1
  }
}

void fill(__nv_bfloat16* x, size_t n, uint64_t seed) {
  fill_random<<<1024, 256>>>(x, n, seed);
  cuda_ok(cudaGetLastError(), "fill");
}

// Key lists of one sequence and KV head. Cache rows: [0, L) raw tokens, [L, L + L/16) gists.
std::vector<int32_t> gsa_list(int64_t L, std::mt19937_64& gen) {
  const int64_t sink = 4, window = std::min<int64_t>(256, L), chunk = 64;
  std::vector<char> take(size_t(L + L / 16), 0);
  for (int64_t i = 0; i < std::min(sink, L); i++) take[i] = 1;
  for (int64_t i = L - window; i < L; i++) take[i] = 1;
  const int64_t n_chunks = (L - window) / chunk, want = (L / 16) / chunk;
  std::vector<int64_t> ids(n_chunks);
  for (int64_t i = 0; i < n_chunks; i++) ids[i] = i;
  std::shuffle(ids.begin(), ids.end(), gen);
  for (int64_t c = 0; c < std::min(want, n_chunks); c++)
    for (int64_t i = 0; i < chunk; i++) take[ids[c] * chunk + i] = 1;
  for (int64_t i = L; i < L + L / 16; i++) take[i] = 1;
  std::vector<int32_t> out;
  for (size_t i = 0; i < take.size(); i++)
    if (take[i]) out.push_back(int32_t(i));
  return out;
}

struct bench_result {
  double us = 0, gbs = 0;
  int64_t keys = 0;  // list entries per (b, h), mean
  int splits = 0;
};

// Split kernel of a timing: the plan's default (tensor cores for these bf16 shapes), or the CUDA-core kernel with
// its cp.async ring or its register loads.
enum class kernel_path { standard, ring, regs };

bench_result time_decode(int B, int Hq, int Hkv, int D, int64_t L, bool full, kernel_path path, uint64_t seed) {
  const int64_t T = L + L / 16;  // rows per sequence
  std::mt19937_64 gen(seed);
  std::vector<int64_t> indptr(size_t(B) * Hkv + 1, 0);
  std::vector<int32_t> indices;
  int64_t max_len = 0;
  for (int li = 0; li < B * Hkv; li++) {
    if (full) {
      for (int64_t i = 0; i < L; i++) indices.push_back(int32_t(i));
    } else {
      auto l = gsa_list(L, gen);
      indices.insert(indices.end(), l.begin(), l.end());
    }
    indptr[li + 1] = int64_t(indices.size());
    max_len = std::max(max_len, indptr[li + 1] - indptr[li]);
  }
  const size_t seq_elems = size_t(T) * Hkv * D;
  const size_t copy_bytes = size_t(B) * seq_elems * 2 * 2;
  const int copies = int(std::clamp<size_t>((size_t(512) << 20) / copy_bytes + 1, 1, 64));
  const size_t pool = size_t(copies) * B * seq_elems;

  __nv_bfloat16 *k, *v, *q;
  float *out, *lse;
  int64_t *dptr, *doff;
  int32_t* didx;
  cuda_ok(cudaMalloc(&k, pool * 2), "alloc k");
  cuda_ok(cudaMalloc(&v, pool * 2), "alloc v");
  cuda_ok(cudaMalloc(&q, size_t(B) * Hq * D * 2), "alloc q");
  cuda_ok(cudaMalloc(&out, size_t(B) * Hq * D * 4), "alloc out");
  cuda_ok(cudaMalloc(&lse, size_t(B) * Hq * 4), "alloc lse");
  cuda_ok(cudaMalloc(&dptr, indptr.size() * 8), "alloc indptr");
  cuda_ok(cudaMalloc(&didx, indices.size() * 4), "alloc indices");
  cuda_ok(cudaMalloc(&doff, size_t(copies) * B * 8), "alloc offsets");
  fill(k, pool, seed * 3 + 1);
  fill(v, pool, seed * 3 + 2);
  fill(q, size_t(B) * Hq * D, seed * 3 + 3);
  std::vector<int64_t> offs(size_t(copies) * B);
  for (int c = 0; c < copies; c++)
    for (int b = 0; b < B; b++) offs[size_t(c) * B + b] = (int64_t(c) * B + b) * T;
  cuda_ok(cudaMemcpy(dptr, indptr.data(), indptr.size() * 8, cudaMemcpyHostToDevice), "copy");
  cuda_ok(cudaMemcpy(didx, indices.data(), indices.size() * 4, cudaMemcpyHostToDevice), "copy");
  cuda_ok(cudaMemcpy(doff, offs.data(), offs.size() * 8, cudaMemcpyHostToDevice), "copy");

  decode_params p;
  p.batch = B;
  p.n_q_heads = Hq;
  p.n_kv_heads = Hkv;
  p.head_dim = D;
  p.kv_dtype = decode_dtype::bf16;
  p.out_dtype = decode_dtype::f32;
  p.scale = 1.f / std::sqrt(float(D));
  p.q = q;
  p.q_stride_b = int64_t(Hq) * D;
  p.q_stride_h = D;
  p.k = k;
  p.v = v;
  p.kv_stride_t = int64_t(Hkv) * D;
  p.kv_stride_h = D;
  p.indptr = dptr;
  p.indices = didx;
  p.out = out;
  p.o_stride_b = int64_t(Hq) * D;
  p.o_stride_h = D;
  p.lse = lse;
  p.lse_stride_b = Hq;
  decode_plan_options opt;
  opt.num_sms = current_device_sms();
  opt.async_copy = path != kernel_path::regs;
  opt.tensor_cores = path == kernel_path::standard;
  const decode_plan plan = plan_decode(p, max_len, opt);
  void* ws = nullptr;
  if (plan.workspace_bytes) cuda_ok(cudaMalloc(&ws, plan.workspace_bytes), "alloc workspace");

  cudaStream_t st;
  cuda_ok(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), "stream");
  const int iters = std::max(copies, 20);
  for (int i = 0; i < 3; i++) {  // warm-up outside the graph
    p.kv_row_offset = doff + size_t(i % copies) * B;
    run_decode(p, plan, ws, st);
  }
  cuda_ok(cudaStreamSynchronize(st), "warm-up");
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  cuda_ok(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal), "capture");
  for (int i = 0; i < iters; i++) {
    p.kv_row_offset = doff + size_t(i % copies) * B;
    run_decode(p, plan, ws, st);
  }
  cuda_ok(cudaStreamEndCapture(st, &graph), "end capture");
  cuda_ok(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
  cuda_ok(cudaGraphLaunch(exec, st), "graph warm-up");
  cudaEvent_t e0, e1;
  cuda_ok(cudaEventCreate(&e0), "event");
  cuda_ok(cudaEventCreate(&e1), "event");
  std::vector<float> ms;
  for (int r = 0; r < 7; r++) {
    cuda_ok(cudaEventRecord(e0, st), "record");
    cuda_ok(cudaGraphLaunch(exec, st), "graph");
    cuda_ok(cudaEventRecord(e1, st), "record");
    cuda_ok(cudaEventSynchronize(e1), "sync");
    float t;
    cuda_ok(cudaEventElapsedTime(&t, e0, e1), "elapsed");
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  bench_result r;
  r.us = ms[ms.size() / 2] * 1000.0 / iters;
  r.keys = int64_t(indices.size()) / (int64_t(B) * Hkv);
  r.gbs = double(indices.size()) * D * 2 * 2 / (r.us * 1e-6) / 1e9;
  r.splits = plan.num_splits;

  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(st);
  cudaFree(ws);
  for (void* x : {(void*)k, (void*)v, (void*)q, (void*)out, (void*)lse, (void*)dptr, (void*)didx, (void*)doff})
    cudaFree(x);
  return r;
}

int do_check() {
  int fails = 0;
  for (const auto& c : test::standard_cases()) {
    const auto r = test::run_check(c);
    std::printf("%-4s %-62s splits %3d  err %.2e  naive-f32 %.2e  bf16-round %.2e  lse %.1e/%.1e %s\n",
                r.ok ? "ok" : "FAIL", test::describe(c).c_str(), r.num_splits, r.err, r.err_naive, r.err_round,
                r.lse_err, r.lse_err_naive, r.msg.c_str());
    fails += !r.ok;
  }
  std::printf("checks: %d failed of %zu\n", fails, test::standard_cases().size());
  return fails;
}

void do_bench() {
  struct shape {
    const char* name;
    int B, Hq, Hkv, D;
  };
  const shape shapes[] = {{"8q/2kv B1", 1, 8, 2, 128}, {"llama3-8b B1", 1, 32, 8, 128}, {"llama3-8b B8", 8, 32, 8, 128}};
  std::printf("\n%-14s %7s | %8s %9s %7s %5s | %8s %9s %8s %5s | %6s | %9s %9s\n", "shape", "L", "full us", "GB/s",
              "%ceil", "spl", "gsa us", "GB/s", "keys", "spl", "ratio", "full-ring", "gsa-ring");
  uint64_t seed = 7;
  for (const auto& s : shapes)
    for (int64_t L : {4096, 16384, 65536, 131072}) {
      const auto f = time_decode(s.B, s.Hq, s.Hkv, s.D, L, true, kernel_path::standard, seed);
      const auto g = time_decode(s.B, s.Hq, s.Hkv, s.D, L, false, kernel_path::standard, seed + 1);
      const auto fr = time_decode(s.B, s.Hq, s.Hkv, s.D, L, true, kernel_path::ring, seed);
      const auto gr = time_decode(s.B, s.Hq, s.Hkv, s.D, L, false, kernel_path::ring, seed + 1);
      seed += 2;
      std::printf("%-14s %7lld | %8.2f %9.1f %6.1f%% %5d | %8.2f %9.1f %8lld %5d | %6.2f | %9.2f %9.2f\n", s.name,
                  (long long)L, f.us, f.gbs, 100.0 * f.gbs / kCopyCeilingGBs, f.splits, g.us, g.gbs,
                  (long long)g.keys, g.splits, f.us / g.us, fr.us, gr.us);
      std::fflush(stdout);
    }
  std::printf("(us per decode step, median of 7 graph replays; GB/s = gathered K+V bytes / time; %%ceil vs %.0f GB/s;"
              " *-ring = the CUDA-core kernel, cp.async ring)\n", kCopyCeilingGBs);
}

// Issue 14's decode-layer shapes, batch 1, to 1M keys: the Llama-3.2-1B layer (32/8 heads of 64) and the Qwen2-7B
// layer (28/4 heads of 128), full attention and a GSA list of about L/8 keys, through the plan's kernel (tensor
// cores) and the CUDA-core kernel's cp.async ring (*-ring) (scripts/sdpa-reference.py --long times torch SDPA on
// the same cells).
void do_bench_long() {
  struct shape {
    const char* name;
    int Hq, Hkv, D;
  };
  const shape shapes[] = {{"llama3.2-1b", 32, 8, 64}, {"qwen2-7b", 28, 4, 128}};
  std::printf("\n%-12s %8s | %9s %9s %7s %5s | %8s %9s %8s %5s | %6s | %9s %9s\n", "shape", "L", "full us", "GB/s",
              "%ceil", "spl", "gsa us", "GB/s", "keys", "spl", "ratio", "full-ring", "gsa-ring");
  uint64_t seed = 11;
  for (const auto& s : shapes)
    for (int64_t L : {int64_t(4096), int64_t(32768), int64_t(131072), int64_t(524288), int64_t(1048576)}) {
      const auto f = time_decode(1, s.Hq, s.Hkv, s.D, L, true, kernel_path::standard, seed);
      const auto g = time_decode(1, s.Hq, s.Hkv, s.D, L, false, kernel_path::standard, seed + 1);
      const auto fr = time_decode(1, s.Hq, s.Hkv, s.D, L, true, kernel_path::ring, seed);
      const auto gr = time_decode(1, s.Hq, s.Hkv, s.D, L, false, kernel_path::ring, seed + 1);
      seed += 2;
      std::printf("%-12s %8lld | %9.2f %9.1f %6.1f%% %5d | %8.2f %9.1f %8lld %5d | %6.2f | %9.2f %9.2f\n", s.name,
                  (long long)L, f.us, f.gbs, 100.0 * f.gbs / kCopyCeilingGBs, f.splits, g.us, g.gbs, (long long)g.keys,
                  g.splits, f.us / g.us, fr.us, gr.us);
      std::fflush(stdout);
    }
  std::printf("(us per decode step of one layer, batch 1, median of 7 graph replays; GB/s = gathered K+V bytes / "
              "time; %%ceil vs %.0f GB/s)\n", kCopyCeilingGBs);
}

// Full attention, B 2, Hq 32, Hkv 8, D 128, L 4096, bf16 in, f32 out; raw little-endian files.
void do_dump(const std::string& dir) {
  const int B = 2, Hq = 32, Hkv = 8, D = 128;
  const int64_t L = 4096;
  const size_t kv_n = size_t(B) * L * Hkv * D, q_n = size_t(B) * Hq * D;
  __nv_bfloat16 *k, *v, *q;
  float *out, *lse;
  int64_t* dptr;
  int32_t* didx;
  cuda_ok(cudaMalloc(&k, kv_n * 2), "alloc");
  cuda_ok(cudaMalloc(&v, kv_n * 2), "alloc");
  cuda_ok(cudaMalloc(&q, q_n * 2), "alloc");
  cuda_ok(cudaMalloc(&out, q_n * 4), "alloc");
  cuda_ok(cudaMalloc(&lse, size_t(B) * Hq * 4), "alloc");
  fill(k, kv_n, 11);
  fill(v, kv_n, 12);
  fill(q, q_n, 13);
  std::vector<int64_t> indptr(B * Hkv + 1);
  std::vector<int32_t> indices;
  for (int li = 0; li < B * Hkv; li++) {
    for (int64_t i = 0; i < L; i++) indices.push_back(int32_t(i));
    indptr[li + 1] = int64_t(indices.size());
  }
  cuda_ok(cudaMalloc(&dptr, indptr.size() * 8), "alloc");
  cuda_ok(cudaMalloc(&didx, indices.size() * 4), "alloc");
  cuda_ok(cudaMemcpy(dptr, indptr.data(), indptr.size() * 8, cudaMemcpyHostToDevice), "copy");
  cuda_ok(cudaMemcpy(didx, indices.data(), indices.size() * 4, cudaMemcpyHostToDevice), "copy");
  std::vector<int64_t> offs = {0, L};
  int64_t* doff;
  cuda_ok(cudaMalloc(&doff, 16), "alloc");
  cuda_ok(cudaMemcpy(doff, offs.data(), 16, cudaMemcpyHostToDevice), "copy");
  decode_params p;
  p.batch = B;
  p.n_q_heads = Hq;
  p.n_kv_heads = Hkv;
  p.head_dim = D;
  p.scale = 1.f / std::sqrt(float(D));
  p.q = q;
  p.q_stride_b = int64_t(Hq) * D;
  p.q_stride_h = D;
  p.k = k;
  p.v = v;
  p.kv_stride_t = int64_t(Hkv) * D;
  p.kv_stride_h = D;
  p.kv_row_offset = doff;
  p.indptr = dptr;
  p.indices = didx;
  p.out = out;
  p.o_stride_b = int64_t(Hq) * D;
  p.o_stride_h = D;
  p.lse = lse;
  p.lse_stride_b = Hq;
  decode_plan_options opt;
  opt.num_sms = current_device_sms();
  const auto plan = plan_decode(p, L, opt);
  void* ws = nullptr;
  if (plan.workspace_bytes) cuda_ok(cudaMalloc(&ws, plan.workspace_bytes), "alloc");
  run_decode(p, plan, ws);
  cuda_ok(cudaDeviceSynchronize(), "run");
  auto save = [&](const char* name, const void* dev, size_t bytes) {
    std::vector<char> h(bytes);
    cuda_ok(cudaMemcpy(h.data(), dev, bytes, cudaMemcpyDeviceToHost), "copy back");
    std::ofstream(dir + "/" + name, std::ios::binary).write(h.data(), std::streamsize(bytes));
  };
  save("q.bin", q, q_n * 2);
  save("k.bin", k, kv_n * 2);
  save("v.bin", v, kv_n * 2);
  save("out.bin", out, q_n * 4);
  save("lse.bin", lse, size_t(B) * Hq * 4);
  std::printf("dumped B=%d Hq=%d Hkv=%d D=%d L=%lld (splits %d) to %s\n", B, Hq, Hkv, D, (long long)L,
              plan.num_splits, dir.c_str());
  for (void* x : {(void*)k, (void*)v, (void*)q, (void*)out, (void*)lse, (void*)dptr, (void*)didx, (void*)doff, ws})
    cudaFree(x);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    cudaDeviceProp prop;
    cuda_ok(cudaGetDeviceProperties(&prop, 0), "device");
    std::printf("device: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
    int rc = 0;
    for (int i = 1; i < argc; i++) {
      const std::string a = argv[i];
      if (a == "--check")
        rc |= do_check() ? 1 : 0;
      else if (a == "--bench")
        do_bench();
      else if (a == "--bench-long")
        do_bench_long();
      else if (a == "--dump" && i + 1 < argc)
        do_dump(argv[++i]);
      else {
        std::fprintf(stderr, "usage: %s [--check] [--bench] [--bench-long] [--dump DIR]\n", argv[0]);
        return 2;
      }
    }
    return rc;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
