// matmul and embedding vs naive double-precision references, finite differences, accumulate semantics.
#include <gtest/gtest.h>

#include "backend/cpu/ops.h"
#include "test-ops-util.h"

using namespace gsa;
using namespace gsa::test;

namespace {

struct shape {
  int M, K, N;
};

std::vector<float> ref_matmul(const std::vector<float>& x, const std::vector<float>& w, const float* bias, int M,
                              int K, int N) {
  std::vector<float> y(size_t(M) * N);
  for (int m = 0; m < M; m++)
    for (int n = 0; n < N; n++) {
      double s = bias ? bias[n] : 0.0;
      for (int k = 0; k < K; k++) s += double(x[size_t(m) * K + k]) * w[size_t(n) * K + k];
      y[size_t(m) * N + n] = float(s);
    }
  return y;
}

}  // namespace

TEST(ops_matmul, forward_matches_naive) {
  rng r(1);
  // M == 1 covers the own matvec kernel (serial and OpenMP sizes); the rest go to sgemm. Odd sizes throughout.
  const shape shapes[] = {{1, 1, 1}, {1, 37, 19}, {1, 300, 203}, {1, 1024, 97}, {2, 3, 5},
                          {7, 13, 5}, {33, 65, 17}, {64, 96, 80}};
  for (auto [M, K, N] : shapes) {
    for (int with_bias = 0; with_bias < 2; with_bias++) {
      auto x = randn(size_t(M) * K, r), w = randn(size_t(N) * K, r), b = randn(N, r);
      std::vector<float> y(size_t(M) * N, 123.0f);  // garbage: forward must overwrite
      cpu::matmul_forward(y.data(), x.data(), w.data(), with_bias ? b.data() : nullptr, M, K, N);
      auto ref = ref_matmul(x, w, with_bias ? b.data() : nullptr, M, K, N);
      EXPECT_LT(max_rel_err(y, ref), 2e-5) << M << "x" << K << "x" << N << " bias " << with_bias;
    }
  }
}

TEST(ops_matmul, backward_matches_naive_and_accumulates) {
  rng r(2);
  const shape shapes[] = {{1, 37, 19}, {7, 13, 5}, {33, 65, 17}};
  for (auto [M, K, N] : shapes) {
    auto x = randn(size_t(M) * K, r), w = randn(size_t(N) * K, r), dy = randn(size_t(M) * N, r);
    // references
    std::vector<float> rdx(size_t(M) * K), rdw(size_t(N) * K), rdb(N);
    for (int m = 0; m < M; m++)
      for (int k = 0; k < K; k++) {
        double s = 0;
        for (int n = 0; n < N; n++) s += double(dy[size_t(m) * N + n]) * w[size_t(n) * K + k];
        rdx[size_t(m) * K + k] = float(s);
      }
    for (int n = 0; n < N; n++) {
      double sb = 0;
      for (int m = 0; m < M; m++) sb += dy[size_t(m) * N + n];
      rdb[n] = float(sb);
      for (int k = 0; k < K; k++) {
        double s = 0;
        for (int m = 0; m < M; m++) s += double(dy[size_t(m) * N + n]) * x[size_t(m) * K + k];
        rdw[size_t(n) * K + k] = float(s);
      }
    }
    // start from non-zero buffers: backward must add, not overwrite
    auto dx0 = randn(rdx.size(), r), dw0 = randn(rdw.size(), r), db0 = randn(rdb.size(), r);
    auto dx = dx0, dw = dw0, db = db0;
    cpu::matmul_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), M, K, N);
    EXPECT_LT(max_rel_err(added(dx, dx0), rdx), 1e-4);
    EXPECT_LT(max_rel_err(added(dw, dw0), rdw), 1e-4);
    EXPECT_LT(max_rel_err(added(db, db0), rdb), 1e-4);
    // twice from zero = doubled
    std::vector<float> dx2(rdx.size()), dw2(rdw.size()), db2(rdb.size());
    for (int rep = 0; rep < 2; rep++)
      cpu::matmul_backward(dx2.data(), dw2.data(), db2.data(), dy.data(), x.data(), w.data(), M, K, N);
    for (auto* v : {&rdx, &rdw, &rdb})
      for (auto& e : *v) e *= 2;
    EXPECT_LT(max_rel_err(dx2, rdx), 1e-4);
    EXPECT_LT(max_rel_err(dw2, rdw), 1e-4);
    EXPECT_LT(max_rel_err(db2, rdb), 1e-4);
    // nullptr outputs are skipped
    std::vector<float> dx3(rdx.size());
    cpu::matmul_backward(dx3.data(), nullptr, nullptr, dy.data(), x.data(), w.data(), M, K, N);
    for (auto& e : rdx) e *= 0.5f;
    EXPECT_LT(max_rel_err(dx3, rdx), 1e-4);
  }
}

TEST(ops_matmul, backward_matches_finite_differences) {
  rng r(3);
  for (auto [M0, K0, N0] : {shape{1, 9, 7}, shape{5, 11, 6}}) {
    const auto M = M0, K = K0, N = N0;  // plain copies: clang 14 cannot capture structured bindings in lambdas
    auto x = randn(size_t(M) * K, r), w = randn(size_t(N) * K, r), b = randn(N, r), rr = randn(size_t(M) * N, r);
    std::vector<float> y(size_t(M) * N);
    auto loss = [&] {
      cpu::matmul_forward(y.data(), x.data(), w.data(), b.data(), M, K, N);
      return dot(y, rr);
    };
    std::vector<float> dx(x.size()), dw(w.size()), db(b.size());
    cpu::matmul_backward(dx.data(), dw.data(), db.data(), rr.data(), x.data(), w.data(), M, K, N);
    check_grad_fd(x, dx, loss, r, "dx");
    check_grad_fd(w, dw, loss, r, "dw");
    check_grad_fd(b, db, loss, r, "dbias");
  }
}

TEST(ops_embedding, forward_backward) {
  rng r(4);
  const int V = 11, C = 70, T = 29;  // C > one column block of the backward
  auto table = randn(size_t(V) * C, r);
  std::vector<int32_t> ids(T);
  for (auto& id : ids) id = int32_t(r.below(4));  // few distinct ids: many repeats collide in dtable
  ids[5] = V - 1;
  std::vector<float> y(size_t(T) * C, 7.0f);
  cpu::embedding_forward(y.data(), ids.data(), table.data(), T, C);
  for (int t = 0; t < T; t++)
    for (int c = 0; c < C; c++) ASSERT_EQ(y[size_t(t) * C + c], table[size_t(ids[t]) * C + c]);

  auto dy = randn(size_t(T) * C, r);
  std::vector<double> ref(size_t(V) * C, 0.0);
  for (int t = 0; t < T; t++)
    for (int c = 0; c < C; c++) ref[size_t(ids[t]) * C + c] += dy[size_t(t) * C + c];
  auto d0 = randn(size_t(V) * C, r);
  auto d = d0;
  cpu::embedding_backward(d.data(), dy.data(), ids.data(), T, C);
  cpu::embedding_backward(d.data(), dy.data(), ids.data(), T, C);
  for (size_t i = 0; i < d.size(); i++) EXPECT_NEAR(d[i] - d0[i], 2 * ref[i], 1e-4) << i;

  // finite differences of L = sum(y * dy) w.r.t. the table
  auto loss = [&] {
    cpu::embedding_forward(y.data(), ids.data(), table.data(), T, C);
    return dot(y, dy);
  };
  std::vector<float> dt(table.size());
  cpu::embedding_backward(dt.data(), dy.data(), ids.data(), T, C);
  check_grad_fd(table, dt, loss, r, "dtable", 40);
}
