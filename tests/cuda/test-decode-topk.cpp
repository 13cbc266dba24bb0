// The decode rows' top-k (launch_decode_rows: gist scores, then each head's top k ORed into its KV head's mask)
// against a host reference computed from the scores the device wrote, through both top-k kernels: one CTA per
// head, and the cluster of CTAs per head that takes launches from set_topk_cluster_min's candidate count on.
// Rows with many exact ties (gist keys drawn from a few distinct vectors), k from 0 to past n, union, group
// scoring and a page router's per-KV-head rows, candidate counts on both sides of the single CTA's shared-memory
// staging (48 Ki) up to a cluster's limit (128 Ki).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "backend/cuda/decode-lists.h"
#include "backend/cuda/select.h"
#include "cuda/cuda-test-util.h"

namespace gsa::cuda {
namespace {

void ok(cudaError_t e) { ASSERT_EQ(e, cudaSuccess) << cudaGetErrorString(e); }

template <class T>
T* upload(const std::vector<T>& v) {
  T* p = nullptr;
  if (cudaMalloc(&p, std::max<size_t>(1, v.size()) * sizeof(T)) != cudaSuccess) return nullptr;
  cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice);
  return p;
}
template <class T>
std::vector<T> download(const T* p, size_t n) {
  std::vector<T> v(n);
  cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost);
  return v;
}

uint32_t order_key(float x) {  // select_row_keys' key: NaN lowest, -0 equal to +0, then descending
  if (std::isnan(x)) x = -INFINITY;
  if (x == 0.0f) x = 0.0f;
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Bits of the top k of keys (key descending, then index ascending) ORed into mask.
void reference_top(const float* s, int n, int k, uint32_t* mask) {
  std::vector<int> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return order_key(s[a]) > order_key(s[b]); });
  for (int j = 0; j < std::min(k, n); j++) mask[idx[size_t(j)] >> 5] |= 1u << (idx[size_t(j)] & 31);
}

struct topk_row {
  int n, k;
  int group;
  int distinct;  // distinct gist keys (0: every key its own random vector)
};

void check_rows(const std::vector<topk_row>& spec, uint64_t seed) {
  const int Hq = 8, Hkv = 2, G = Hq / Hkv, D = 64;
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  int max_cand = 0;
  std::vector<lists_row> rows;
  std::vector<void*> owned;
  for (const auto& t : spec) {
    max_cand = std::max(max_cand, t.n);
    std::vector<float> q(size_t(Hq) * D), pool(size_t(t.n) * Hkv * D), base(size_t(std::max(1, t.distinct)) * Hkv * D);
    for (auto& x : q) x = nd(gen);
    for (auto& x : base) x = nd(gen);
    std::uniform_int_distribution<int> pick(0, std::max(1, t.distinct) - 1);
    for (int u = 0; u < t.n; u++)
      for (int e = 0; e < Hkv * D; e++)
        pool[size_t(u) * Hkv * D + e] = t.distinct ? base[size_t(pick(gen)) * Hkv * D + e] : nd(gen);
    std::vector<int32_t> gist_row(size_t(t.n));
    std::iota(gist_row.begin(), gist_row.end(), 0);
    lists_row r;
    r.q = upload(q);
    r.pool_k = upload(pool);
    r.gist_row = upload(gist_row);
    r.scores = upload(std::vector<float>(size_t(Hq) * t.n, NAN));
    r.mask = upload(std::vector<uint32_t>(size_t(Hkv) * ((t.n + 31) / 32), ~0u));
    ASSERT_TRUE(r.q && r.pool_k && r.gist_row && r.scores && r.mask);
    for (const void* p : {r.q, r.pool_k, static_cast<const void*>(r.gist_row), static_cast<const void*>(r.scores),
                          static_cast<const void*>(r.mask)})
      owned.push_back(const_cast<void*>(p));
    r.n_cand = t.n;
    r.k = t.k;
    r.g = 1;
    r.group = t.group;
    rows.push_back(r);
  }
  lists_row* d_rows = upload(rows);
  ASSERT_NE(d_rows, nullptr);
  owned.push_back(d_rows);

  std::vector<std::vector<uint32_t>> masks[2];
  for (int path = 0; path < 2; path++) {  // 0: clusters for every row, 1: one CTA per head
    SCOPED_TRACE(path == 0 ? "cluster of CTAs per head" : "one CTA per head");
    const int before = select_detail::set_topk_cluster_min(path == 0 ? 1 : INT_MAX);
    select_detail::launch_decode_rows(d_rows, int(rows.size()), max_cand, false, Hq, Hkv, D, nullptr);
    select_detail::set_topk_cluster_min(before);
    ok(cudaDeviceSynchronize());
    for (size_t i = 0; i < rows.size(); i++) {
      const auto& t = spec[i];
      SCOPED_TRACE(::testing::Message() << "row " << i << " n " << t.n << " k " << t.k << " group " << t.group
                                        << " distinct " << t.distinct);
      const int words = (t.n + 31) / 32;
      const auto sc = download(rows[i].scores, size_t(Hq) * t.n);
      auto got = download(rows[i].mask, size_t(Hkv) * words);
      std::vector<uint32_t> want(got.size(), 0u);
      for (int h = 0; h < (t.group ? Hkv : Hq); h++) {
        // With group scoring the group's sum is in row hk G (both kernels write it back there).
        const float* s = sc.data() + size_t(t.group ? h * G : h) * t.n;
        reference_top(s, t.n, t.k, want.data() + size_t(t.group ? h : h / G) * words);
      }
      EXPECT_EQ(got, want) << "selection masks";
      int set = 0;
      for (uint32_t w : got) set += __builtin_popcount(w);
      EXPECT_GE(set, std::min(t.k, t.n)) << "at least k chunks per KV head";
      masks[path].push_back(std::move(got));
    }
  }
  EXPECT_EQ(masks[0], masks[1]) << "the two kernels select the same chunks";
  for (void* p : owned) cudaFree(p);
}

TEST(CudaDecodeTopK, ClusterAndSingleCtaEqualTheReference) {
  REQUIRE_GPU();
  // n past the single CTA's 48 Ki staging (it reads global memory there) and at a cluster's 128 Ki limit; k at
  // the edges; rows of a few distinct keys, so that the k-th key is a long run of ties across the slices.
  check_rows({{70000, 4375, 0, 0}, {20000, 1250, 0, 12}, {5000, 1, 0, 3}, {3000, 2999, 0, 0}, {777, 900, 0, 0}}, 1);
  check_rows({{131072, 8192, 1, 0}, {40000, 2500, 1, 40}, {9000, 8999, 1, 5}, {33, 7, 1, 2}}, 2);
  check_rows({{50000, 0, 0, 0}, {64, 16, 0, 1}, {100000, 50000, 0, 7}}, 3);
  // group 2 (a page router's per-KV-head scores, already in row hk G): taken as they are, no sum.
  check_rows({{30000, 1875, 2, 0}, {12000, 3000, 2, 9}}, 4);
}

}  // namespace
}  // namespace gsa::cuda
