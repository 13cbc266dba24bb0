// matmul on CUDA through cuBLASLt (contract: cuda/ops.h, layouts of cpu/ops.h); a forward of at most
// detail::gemv_max_rows rows (a decode step) through gemv.cu's matrix-vector kernel instead.
//   forward  y (M, N) = x (M, K) @ w (N, K)^T + bias     overwrite, type t, bias in the epilogue
//   backward dx (M, K) += dy @ w                          type t (C = D = dx, beta 1: one rounding per element)
//            dw (N, K) += dy^T @ x                        f32 C/D, beta 1, bf16 or f32 inputs
//            dbias (N) += colsum(dy)                      own deterministic kernel (elementwise.cu)
// Every GEMM runs with f32 compute (CUBLAS_COMPUTE_32F: no TF32 for f32 inputs) and f32 scale factors.
//
// Row-major to cuBLASLt's column-major: a row-major (R, C) matrix is a column-major (C, R) one with ld = C, so
// y = x w^T becomes y^T (N, M) = w (stored col-major (K, N), transposed) @ x^T (stored (K, M), not transposed):
// the "TN" case cuBLASLt serves best. The backward GEMMs are mapped the same way (see each helper).
//
// Plans: a matmul descriptor, its layouts and the heuristic's algorithm are cached per (shape, types, pointer
// alignments), so a training step pays the heuristic once per shape. The heuristic is told each pointer's real
// alignment (its default assumes 256 bytes, which offsets into a buffer such as a vocabulary chunk do not meet).
#include <cublasLt.h>

#include <cstring>
#include <mutex>
#include <tuple>
#include <unordered_map>

#include "backend/cuda/ops-internal.h"
#include "backend/cuda/ops.h"
#include "core/error.h"

namespace gsa::cuda {

namespace detail {

void check_activation_type(dtype t, const char* op) {
  if (t != dtype::f32 && t != dtype::bf16)
    fail("cuda {}: activation type {} is not supported (use bf16 or f32)", op, dtype_name(t));
}

namespace {

cudaDataType_t cuda_type(dtype t) {
  switch (t) {
    case dtype::f32:
      return CUDA_R_32F;
    case dtype::bf16:
      return CUDA_R_16BF;
    default:
      fail("cuda gemm: type {} is not supported (use bf16 or f32)", dtype_name(t));
  }
}

uint32_t alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && (a % al) != 0) al >>= 1;
  return al;
}

// Column-major D (m, n) = alpha op(A) (m, k) op(B) (k, n) + beta D [+ bias (m)].
struct gemm_call {
  bool trans_a = false, trans_b = false;
  int m = 0, n = 0, k = 0;
  const void* a = nullptr;
  int64_t lda = 0;
  const void* b = nullptr;
  int64_t ldb = 0;
  dtype ab_type = dtype::f32;
  void* d = nullptr;
  int64_t ldd = 0;
  dtype d_type = dtype::f32;
  float alpha = 1.0f, beta = 0.0f;
  const void* bias = nullptr;
};

using plan_key = std::tuple<bool, bool, int, int, int, int64_t, int64_t, int64_t, int, int, bool, uint32_t, uint32_t,
                            uint32_t, uint32_t>;

struct plan_key_hash {
  size_t operator()(const plan_key& k) const {
    size_t h = 1469598103934665603ull;
    auto mix = [&h](uint64_t v) { h = (h ^ v) * 1099511628211ull; };
    std::apply([&](const auto&... f) { (mix(uint64_t(f)), ...); }, k);
    return h;
  }
};

struct plan {
  bool ok = false;  // false: the heuristic found no algorithm
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

std::mutex plans_mu;
// Never freed: plans live as long as the context (see runtime.cpp on why nothing is torn down at exit).
std::unordered_map<plan_key, plan, plan_key_hash>& plans() {
  static auto* p = new std::unordered_map<plan_key, plan, plan_key_hash>();
  return *p;
}

plan make_plan(const gemm_call& g) {
  context& c = ctx();
  plan p;
  GSA_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  GSA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  GSA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  if (g.bias) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    GSA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    GSA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias, sizeof(g.bias)));
  }
  const cudaDataType_t ab = cuda_type(g.ab_type), dt = cuda_type(g.d_type);
  // Stored shapes (before op): A is (k, m) when transposed, else (m, k); likewise B.
  GSA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, ab, g.trans_a ? g.k : g.m, g.trans_a ? g.m : g.k, g.lda));
  GSA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, ab, g.trans_b ? g.n : g.k, g.trans_b ? g.k : g.n, g.ldb));
  GSA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.d, dt, g.m, g.n, g.ldd));

  cublasLtMatmulPreference_t pref = nullptr;
  GSA_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const size_t ws = c.lt_workspace_bytes;
  GSA_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  const uint32_t al_a = alignment(g.a), al_b = alignment(g.b), al_d = alignment(g.d);
  GSA_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof(al_a)));
  GSA_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof(al_b)));
  GSA_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d, sizeof(al_d)));
  GSA_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d, sizeof(al_d)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t s =
      cublasLtMatmulAlgoGetHeuristic(c.lt, p.op, p.a, p.b, p.d, p.d, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (s != CUBLAS_STATUS_NOT_SUPPORTED) GSA_CUBLAS_CHECK(s);
  p.ok = s == CUBLAS_STATUS_SUCCESS && found > 0 && result.state == CUBLAS_STATUS_SUCCESS;
  if (p.ok) p.algo = result.algo;
  return p;
}

// Runs the GEMM; returns false (doing nothing) when cuBLASLt has no algorithm for it.
bool try_gemm(const gemm_call& g) {
  const plan_key key{g.trans_a, g.trans_b, g.m, g.n, g.k, g.lda, g.ldb, g.ldd, int(g.ab_type), int(g.d_type),
                     g.bias != nullptr, alignment(g.a), alignment(g.b), alignment(g.d),
                     g.bias ? alignment(g.bias) : 0u};
  std::lock_guard<std::mutex> lock(plans_mu);
  auto it = plans().find(key);
  if (it == plans().end()) it = plans().emplace(key, make_plan(g)).first;
  plan& p = it->second;
  if (!p.ok) return false;
  if (g.bias)  // the cached descriptor holds the pointer of the call that created it
    GSA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias, sizeof(g.bias)));
  context& c = ctx();
  GSA_CUBLAS_CHECK(cublasLtMatmul(c.lt, p.op, &g.alpha, g.a, p.a, g.b, p.b, &g.beta, g.d, p.d, g.d, p.d, &p.algo,
                                  c.lt_workspace, c.lt_workspace_bytes, c.stream));
  return true;
}

void gemm(const gemm_call& g, const char* what) {
  if (g.m <= 0 || g.n <= 0 || g.k <= 0) return;
  if (try_gemm(g)) return;
  fail("cuda {}: cuBLASLt has no algorithm for this GEMM (m {}, n {}, k {}, {} inputs, {} output, transa {}, "
       "transb {}); this is a bug: report the shape, or use --device cpu",
       what, g.m, g.n, g.k, dtype_name(g.ab_type), dtype_name(g.d_type), g.trans_a, g.trans_b);
}

}  // namespace

namespace {
env_switch g_gemv("GSA_CUDA_GEMV");
}  // namespace

bool gemv_enabled() { return g_gemv.on(); }
void set_gemv_enabled(bool on) { g_gemv.set(on); }

void gemm_xwT(void* y, dtype y_type, const void* x, const void* w, dtype a_type, int M, int K, int N, float beta,
              const void* bias, int64_t ldw) {
  // y^T (N, M) = op(w) (N, K) @ x^T (K, M); w stored column-major as (K, N) with ld ldw, x as (K, M).
  GSA_ASSERT(ldw == 0 || ldw >= K, "gemm_xwT: row stride {} of w below K {}", ldw, K);
  gemm_call g;
  g.trans_a = true;
  g.m = N, g.n = M, g.k = K;
  g.a = w, g.lda = ldw > 0 ? ldw : K;
  g.b = x, g.ldb = K;
  g.ab_type = a_type;
  g.d = y, g.ldd = N, g.d_type = y_type;
  g.beta = beta;
  if (M <= 0 || N <= 0 || K <= 0) return;
  if (bias) {
    GSA_ASSERT(beta == 0.0f, "gemm_xwT: a bias needs beta 0");
    g.bias = bias;
    if (try_gemm(g)) return;
    g.bias = nullptr;  // no epilogue algorithm for this case: plain GEMM, then the bias by a kernel
    gemm(g, "matmul_forward");
    add_bias_rows(y, bias, M, N, y_type);
    return;
  }
  gemm(g, "matmul");
}

void gemm_dyw(void* dx, dtype dx_type, const void* dy, const void* w, dtype a_type, int M, int K, int N,
              float beta) {
  // dx^T (K, M) = w^T (K, N) @ dy^T (N, M); w stored column-major as (K, N), dy as (N, M).
  gemm_call g;
  g.m = K, g.n = M, g.k = N;
  g.a = w, g.lda = K;
  g.b = dy, g.ldb = N;
  g.ab_type = a_type;
  g.d = dx, g.ldd = K, g.d_type = dx_type;
  g.beta = beta;
  gemm(g, "matmul_backward (dx)");
}

void gemm_dyTx(void* dw, dtype dw_type, const void* dy, const void* x, dtype a_type, int M, int K, int N,
               float beta) {
  // dw^T (K, N) = x^T (K, M) @ dy (M, N); x stored column-major as (K, M), dy as (N, M), transposed.
  gemm_call g;
  g.trans_b = true;
  g.m = K, g.n = N, g.k = M;
  g.a = x, g.lda = K;
  g.b = dy, g.ldb = N;
  g.ab_type = a_type;
  g.d = dw, g.ldd = K, g.d_type = dw_type;
  g.beta = beta;
  gemm(g, "matmul_backward (dw)");
}

}  // namespace detail

void matmul_forward(void* y, const void* x, const void* w, const void* bias, int M, int K, int N, dtype t) {
  detail::check_activation_type(t, "matmul_forward");
  if (M < 0 || K < 0 || N < 0) fail("cuda matmul_forward: negative shape (M {}, K {}, N {})", M, K, N);
  if (M == 0 || N == 0) return;
  if (!y || (K > 0 && (!x || !w))) fail("cuda matmul_forward: null y, x or w");
  if (K == 0) {  // an empty sum: y = bias (or 0)
    memset0(y, size_t(M) * N * dtype_size(t));
    if (bias) detail::add_bias_rows(y, bias, M, N, t);
    return;
  }
  if (detail::gemv_rows(y, x, w, bias, M, K, N, t)) return;  // a few rows: the decode step
  detail::gemm_xwT(y, t, x, w, t, M, K, N, 0.0f, bias);
}

void matmul_backward(void* dx, float* dw, float* dbias, const void* dy, const void* x, const void* w, int M, int K,
                     int N, dtype t) {
  detail::check_activation_type(t, "matmul_backward");
  if (M < 0 || K < 0 || N < 0) fail("cuda matmul_backward: negative shape (M {}, K {}, N {})", M, K, N);
  if (M == 0 || N == 0) return;
  if (!dy) fail("cuda matmul_backward: null dy");
  if (dx && K > 0) {
    if (!w) fail("cuda matmul_backward: dx needs w");
    detail::gemm_dyw(dx, t, dy, w, t, M, K, N, 1.0f);
  }
  if (dw && K > 0) {
    if (!x) fail("cuda matmul_backward: dw needs x");
    detail::gemm_dyTx(dw, dtype::f32, dy, x, t, M, K, N, 1.0f);
  }
  if (dbias) detail::column_sum_accumulate(dbias, dy, M, N, t);
}

}  // namespace gsa::cuda
