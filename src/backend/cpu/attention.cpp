// Plan-driven attention on the CPU (the Run half of Plan/Run; plans come from attention-plan.cpp or gist/).
// Layouts and the masking rule: see attention.h. Forward overwrites out (Tq,Hq,D) and lse (Tq,Hq); backward
// accumulates (+=) into dq (Tq,Hq,D), dk and dv (Tk,Hkv,D), any of which may be nullptr.
//
// Work unit ("task"): one query block b and one KV head hk. The task expands its list's segments into
// ascending keys (expand_list: O(list), a merge of the few ascending runs the segments give), gathers those K/V
// rows into contiguous scratch once and serves every query head of the GQA group from it. Because the expanded
// keys ascend, the causal rule leaves each query row a prefix of them, so the cost is the number of visible
// (query, key) pairs times D, never Tq * Tk.
//
// All products go through one register-tiled small GEMM (gemm_rows, 16-float vector tiles, sums never
// reassociated); scores read a transposed, zero-padded copy of K (D, n). The G query heads of a
// KV head are processed together (they share the row's visible prefix), so each K/V load serves G rows.
// (OpenBLAS is not used here: its pthread build would start its own threads inside our OpenMP tasks, and the
// per-row matrices, G x n x D, are too small to amortise a call.)
//
// Backward parallelism without races on dk/dv: if the OpenMP thread count divides Hkv, each thread owns whole
// KV heads and scatters directly; otherwise, per KV head, each thread scatters into its own buffer covering
// the key range the plan touches, and the buffers are summed afterwards (key rows split across threads).
// That costs 2 * threads * range * D floats of memory and a pass over them per KV head: linear in the keys.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "backend/cpu/attention.h"
#include "core/error.h"

namespace gsa::cpu {

namespace {

void check_shapes(const char* who, int Tq, int Tk, int q_offset, int Hq, int Hkv, int D) {
  if (Tq < 0 || Tk < 0 || q_offset < 0 || Hq <= 0 || Hkv <= 0 || D <= 0)
    fail("{}: bad shape Tq={} Tk={} q_offset={} Hq={} Hkv={} D={}", who, Tq, Tk, q_offset, Hq, Hkv, D);
  if (Hq % Hkv != 0) fail("{}: Hq = {} is not a multiple of Hkv = {} (GQA groups must be equal)", who, Hq, Hkv);
}

// dst (n, D) = rows idx[0..n) of head hk of src (Tk, Hkv, D).
void gather_rows(float* dst, const float* src, const int32_t* idx, int n, int hk, int Hkv, int D) {
  for (int j = 0; j < n; j++) std::copy_n(src + (size_t(idx[j]) * Hkv + hk) * D, D, dst + size_t(j) * D);
}

// dst (D, ld) = the same rows, transposed; columns [n, ld) are zero so that tiles may run past n. Sixteen rows at
// a time (they stay in L1), so that each output row gets 64 contiguous bytes per visit instead of one float.
void gather_cols(float* dst, int ld, const float* src, const int32_t* idx, int n, int hk, int Hkv, int D) {
  for (int d = 0; d < D; d++) std::fill(dst + size_t(d) * ld + n, dst + size_t(d + 1) * ld, 0.0f);
  constexpr int B = 16;
  const float* rows[B];
  for (int j0 = 0; j0 < n; j0 += B) {
    const int nb = std::min(B, n - j0);
    for (int j = 0; j < nb; j++) rows[j] = src + (size_t(idx[j0 + j]) * Hkv + hk) * D;
    for (int d = 0; d < D; d++) {
      float* o = dst + size_t(d) * ld + j0;
      for (int j = 0; j < nb; j++) o[j] = rows[j][d];
    }
  }
}

constexpr int kTile = 16;  // output columns per register tile
int round_up(int n) { return (n + kTile - 1) / kTile * kTile; }

// A tile of kTile floats as one GCC/Clang vector value: keeps the accumulators of a tile in registers (plain
// float arrays get spilled to the stack). Loads and stores go through memcpy: rows are not 64-byte aligned.
typedef float vtile __attribute__((vector_size(kTile * sizeof(float))));
inline vtile load_tile(const float* p) {
  vtile v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store_tile(float* p, vtile v) { std::memcpy(p, &v, sizeof v); }

// The one small GEMM every pass uses: C (R, N) (+)= A (R, K) @ B (K, N), with A addressed by a row and a
// column stride (so A may be a transposed view). R rows share each load of B.
template <int R>
void gemm_tile_rows(float* C, size_t ldc, const float* A, size_t a_row, size_t a_col, const float* B, size_t ldb,
                    int K, int N, bool accumulate) {
  int n0 = 0;
  for (; n0 + kTile <= N; n0 += kTile) {
    vtile acc[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) acc[r] = accumulate ? load_tile(C + r * ldc + n0) : vtile{};
    for (int k = 0; k < K; k++) {
      const vtile b = load_tile(B + size_t(k) * ldb + n0);
#pragma GCC unroll 4
      for (int r = 0; r < R; r++) acc[r] += A[r * a_row + k * a_col] * b;
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) store_tile(C + r * ldc + n0, acc[r]);
  }
  if (n0 == N) return;
  const int w = N - n0;  // ragged last tile (N not a multiple of kTile: D = 8, or a dQ/dK row of odd width)
  for (int r = 0; r < R; r++)
    for (int t = 0; t < w; t++) {
      float sum = accumulate ? C[r * ldc + n0 + t] : 0.0f;
      for (int k = 0; k < K; k++) sum += A[r * a_row + k * a_col] * B[size_t(k) * ldb + n0 + t];
      C[r * ldc + n0 + t] = sum;
    }
}

// Any number of rows, four at a time.
void gemm_rows(float* C, size_t ldc, const float* A, size_t a_row, size_t a_col, const float* B, size_t ldb, int M,
               int K, int N, bool accumulate) {
  int r = 0;
  for (; r + 4 <= M; r += 4) gemm_tile_rows<4>(C + r * ldc, ldc, A + r * a_row, a_row, a_col, B, ldb, K, N, accumulate);
  switch (M - r) {
    case 3: gemm_tile_rows<3>(C + r * ldc, ldc, A + r * a_row, a_row, a_col, B, ldb, K, N, accumulate); break;
    case 2: gemm_tile_rows<2>(C + r * ldc, ldc, A + r * a_row, a_row, a_col, B, ldb, K, N, accumulate); break;
    case 1: gemm_tile_rows<1>(C + r * ldc, ldc, A + r * a_row, a_row, a_col, B, ldb, K, N, accumulate); break;
    default: break;
  }
}

// Below this many multiply-adds per pass a call runs on one thread: waking a team costs more than it saves,
// and on a loaded machine a descheduled team member stalls everybody at the barrier.
constexpr double kMinParallelWork = 1 << 18;

int team_size(const attn_plan& plan, int Hq, int Hkv, int D) {
  const double work = double(attended_pairs(plan, Hkv)) * (Hq / Hkv) * D;
  return work < kMinParallelWork ? 1 : omp_get_max_threads();
}

// Number of list entries at or before position pos: the prefix a query at pos may see.
int visible_count(const int32_t* idx, int n, int64_t pos) {
  return int(std::upper_bound(idx, idx + n, pos) - idx);
}

// Smallest and largest key of a valid plan, from segment bounds (gist positions ascend per level): O(segments).
// {0, -1} when the plan lists no key.
std::pair<int32_t, int32_t> key_bounds(const attn_plan& plan) {
  int32_t lo = std::numeric_limits<int32_t>::max(), hi = -1;
  for (const key_seg& s : plan.segs) {
    if (s.end <= s.begin) continue;
    if (s.level < 0) {
      lo = std::min(lo, s.begin);
      hi = std::max(hi, s.end - 1);
    } else {
      const int32_t* pos = plan.gist_pos.data() + plan.gist_ptr[size_t(s.level)];
      lo = std::min(lo, pos[s.begin]);
      hi = std::max(hi, pos[s.end - 1] + plan.gists_per_unit - 1);
    }
  }
  return hi < 0 ? std::pair<int32_t, int32_t>{0, -1} : std::pair<int32_t, int32_t>{lo, hi};
}

struct task_ctx {
  const attn_plan& plan;
  int Tq, Tk, q_offset, Hq, Hkv, D, G;
  float scale;
};

// Per-thread scratch, grown on demand.
struct scratch {
  std::vector<float> kt, kr, vr, vt, s, dp, dkg, dvg;
  std::vector<int32_t> keys, tmp;  // the task's expanded list
  static float* fit(std::vector<float>& v, size_t n) {
    if (v.size() < n) v.resize(n);
    return v.data();
  }
};

// One query row i: the G heads of KV head hk sit in consecutive rows of q/out/dout and see the same cnt keys,
// so they are processed together as a (G, ...) matrix.
void forward_task(const task_ctx& c, int b, int hk, float* out, float* lse, const float* q, const float* k,
                  const float* v, scratch& w) {
  const attn_plan& plan = c.plan;
  const int D = c.D, G = c.G;
  expand_list(plan, b, hk, w.keys, w.tmp);
  const int32_t* idx = w.keys.data();
  const int n = int(w.keys.size());
  const int ld = round_up(n);
  float* kt = scratch::fit(w.kt, size_t(D) * ld);
  float* vr = scratch::fit(w.vr, size_t(n) * D);
  float* s = scratch::fit(w.s, size_t(G) * ld);
  gather_cols(kt, ld, k, idx, n, hk, c.Hkv, D);
  gather_rows(vr, v, idx, n, hk, c.Hkv, D);
  for (int i = plan.block_q[b]; i < plan.block_q[b + 1]; i++) {
    const int cnt = visible_count(idx, n, int64_t(c.q_offset) + i);
    const size_t row0 = size_t(i) * c.Hq + size_t(hk) * G;  // first (row, head) of the group
    float* o = out + row0 * D;
    if (cnt == 0) {
      std::fill_n(o, size_t(G) * D, 0.0f);
      std::fill_n(lse + row0, G, -std::numeric_limits<float>::infinity());
      continue;
    }
    // S = Q K^T (scaled below), P = exp(S - max), O = P V / sum(P).
    gemm_rows(s, ld, q + row0 * D, D, 1, kt, ld, G, D, round_up(cnt), false);
    for (int g = 0; g < G; g++) {
      float* sg = s + size_t(g) * ld;
      float m = -std::numeric_limits<float>::infinity();
      for (int j = 0; j < cnt; j++) m = std::max(m, sg[j] *= c.scale);
      float sum = 0;
      for (int j = 0; j < cnt; j++) sum += sg[j] = std::exp(sg[j] - m);
      const float inv = 1.0f / sum;
      for (int j = 0; j < cnt; j++) sg[j] *= inv;
      lse[row0 + g] = m + std::log(sum);
    }
    gemm_rows(o, D, s, ld, 1, vr, D, G, cnt, D, false);
  }
}

// Where a task scatters dk/dv rows: row for key j is base + (j - key0) * ld.
struct kv_sink {
  float* dk;
  float* dv;
  size_t ld;
  int32_t key0;
};

void backward_task(const task_ctx& c, int b, int hk, float* dq, const kv_sink& dst, const float* dout,
                   const float* q, const float* k, const float* v, const float* out, const float* lse, scratch& w) {
  const attn_plan& plan = c.plan;
  const int D = c.D, G = c.G;
  expand_list(plan, b, hk, w.keys, w.tmp);
  const int32_t* idx = w.keys.data();
  const int n = int(w.keys.size());
  if (n == 0) return;
  const int ld = round_up(n);
  const bool want_kv = dst.dk || dst.dv;
  float* kt = scratch::fit(w.kt, size_t(D) * ld);
  float* vt = scratch::fit(w.vt, size_t(D) * ld);
  float* kr = scratch::fit(w.kr, size_t(n) * D);
  float* p = scratch::fit(w.s, size_t(G) * ld);
  float* ds = scratch::fit(w.dp, size_t(G) * ld);
  gather_cols(kt, ld, k, idx, n, hk, c.Hkv, D);
  gather_cols(vt, ld, v, idx, n, hk, c.Hkv, D);
  gather_rows(kr, k, idx, n, hk, c.Hkv, D);
  // A one-row block (per-token selection) writes its dK / dV partials once, for its cnt visible keys: the GEMMs
  // overwrite them and only those rows are added to the sink, so the staging needs no zeroing (n x D x 2 floats
  // per row and head, most of a per-row unfold backward's memory traffic otherwise).
  const bool one_row = plan.block_q[b + 1] - plan.block_q[b] == 1;
  int staged = one_row ? 0 : n;  // staging rows the sink gets
  float *dkg = nullptr, *dvg = nullptr;
  if (want_kv) {
    dkg = scratch::fit(w.dkg, size_t(n) * D);
    dvg = scratch::fit(w.dvg, size_t(n) * D);
    if (!one_row) {
      std::fill_n(dkg, size_t(n) * D, 0.0f);
      std::fill_n(dvg, size_t(n) * D, 0.0f);
    }
  }
  for (int i = plan.block_q[b]; i < plan.block_q[b + 1]; i++) {
    const int cnt = visible_count(idx, n, int64_t(c.q_offset) + i);
    if (cnt == 0) continue;  // output was the constant 0: no gradient flows
    const size_t row0 = size_t(i) * c.Hq + size_t(hk) * G;
    const float* qi = q + row0 * D;
    const float* doi = dout + row0 * D;
    const float* oi = out + row0 * D;
    // P = exp(S - lse), recomputed; dP = dO V^T; Di = rowsum(dO * O); dS = P (dP - Di) / sqrt(D).
    gemm_rows(p, ld, qi, D, 1, kt, ld, G, D, round_up(cnt), false);
    gemm_rows(ds, ld, doi, D, 1, vt, ld, G, D, round_up(cnt), false);
    for (int g = 0; g < G; g++) {
      float* pg = p + size_t(g) * ld;
      float* dsg = ds + size_t(g) * ld;
      const float l = lse[row0 + g];
      float di = 0;
      for (int d = 0; d < D; d++) di += doi[size_t(g) * D + d] * oi[size_t(g) * D + d];
      for (int j = 0; j < cnt; j++) {
        pg[j] = std::exp(pg[j] * c.scale - l);
        dsg[j] = pg[j] * (dsg[j] - di) * c.scale;  // 1/sqrt(D) folded in once: dQ and dK both need it
      }
    }
    if (dq) gemm_rows(dq + row0 * D, D, ds, ld, 1, kr, D, G, cnt, D, true);  // dQ += dS K
    if (want_kv) {
      // dK[j] += sum_g dS[g][j] Q[g]; dV[j] += sum_g P[g][j] dO[g]: A is dS^T / P^T (row stride 1).
      gemm_rows(dkg, D, ds, 1, ld, qi, D, cnt, G, D, !one_row);
      gemm_rows(dvg, D, p, 1, ld, doi, D, cnt, G, D, !one_row);
      if (one_row) staged = cnt;
    }
  }
  if (!want_kv) return;
  for (int j = 0; j < staged; j++) {
    const size_t at = size_t(idx[j] - dst.key0) * dst.ld;
    if (dst.dk)
      for (int d = 0; d < D; d++) dst.dk[at + d] += dkg[size_t(j) * D + d];
    if (dst.dv)
      for (int d = 0; d < D; d++) dst.dv[at + d] += dvg[size_t(j) * D + d];
  }
}

}  // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, const attn_plan& plan,
                       int Tq, int Tk, int q_offset, int Hq, int Hkv, int D) {
  check_shapes("attention_forward", Tq, Tk, q_offset, Hq, Hkv, D);
  validate_plan(plan, Tq, Tk, q_offset, Hkv);
  const task_ctx c{plan, Tq, Tk, q_offset, Hq, Hkv, D, Hq / Hkv, 1.0f / std::sqrt(float(D))};
  const int64_t n_tasks = int64_t(plan.n_blocks()) * Hkv;
#pragma omp parallel num_threads(team_size(plan, Hq, Hkv, D))
  {
    scratch w;
#pragma omp for schedule(dynamic)
    for (int64_t t = 0; t < n_tasks; t++)
      forward_task(c, int(t / Hkv), int(t % Hkv), out, lse, q, k, v, w);
  }
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, const attn_plan& plan, int Tq, int Tk,
                        int q_offset, int Hq, int Hkv, int D) {
  check_shapes("attention_backward", Tq, Tk, q_offset, Hq, Hkv, D);
  validate_plan(plan, Tq, Tk, q_offset, Hkv);
  if (!dq && !dk && !dv) return;
  const task_ctx c{plan, Tq, Tk, q_offset, Hq, Hkv, D, Hq / Hkv, 1.0f / std::sqrt(float(D))};
  const int nb = plan.n_blocks();
  const int n_threads = team_size(plan, Hq, Hkv, D);

  if (!dk && !dv) {  // only dq: every (row, head) belongs to one task, no races at all
    const int64_t n_tasks = int64_t(nb) * Hkv;
    const kv_sink none{nullptr, nullptr, 0, 0};
#pragma omp parallel num_threads(n_threads)
    {
      scratch w;
#pragma omp for schedule(dynamic)
      for (int64_t t = 0; t < n_tasks; t++)
        backward_task(c, int(t / Hkv), int(t % Hkv), dq, none, dout, q, k, v, out, lse, w);
    }
    return;
  }

  // dk / dv: blocks share keys, so their contributions must be summed, and in an order that does not depend on the
  // thread count (a run resumed with another number of threads is then bit-exact; issue 12). The blocks are cut
  // into NG consecutive groups, NG from the sizes alone; each group adds its blocks in order into its own buffer over
  // the touched key range [key0, key1], and the buffers are added to dk / dv in group order. Threads take groups.
  // Plain variables, not a structured binding: clang 14 (the sanitizer and fuzz builds) cannot capture those in
  // the OpenMP region below.
  const auto bounds = key_bounds(plan);
  const auto key0 = bounds.first, key1 = bounds.second;
  if (key1 < key0) return;  // nothing attended: only the (empty) dq work remains
  const size_t range = size_t(key1 - key0 + 1);
  const size_t per_group = range * D;
  constexpr size_t kMaxGroups = 16, kBufferBytes = size_t(256) << 20;
  const int n_groups = int(std::clamp<size_t>(std::min(kMaxGroups, kBufferBytes / (per_group * 2 * sizeof(float))),
                                              1, std::max(1, nb)));
  // Kept between calls (it only grows, at most kBufferBytes): a fresh buffer this large is mapped anew by every
  // call and every layer, and its first touch then page-faults (5-6% of a CPU unfold training step).
  static thread_local std::vector<float> kept;
  if (kept.size() < size_t(n_groups) * per_group * 2) kept.resize(size_t(n_groups) * per_group * 2);
  std::vector<float>& buf = kept;
  for (int hk = 0; hk < Hkv; hk++) {
#pragma omp parallel num_threads(std::min(n_threads, n_groups))
    {
      scratch w;
#pragma omp for schedule(dynamic)
      for (int gi = 0; gi < n_groups; gi++) {
        float* bk = buf.data() + size_t(gi) * per_group * 2;
        float* bv = bk + per_group;
        std::fill_n(bk, per_group * 2, 0.0f);
        const kv_sink sink{dk ? bk : nullptr, dv ? bv : nullptr, size_t(D), key0};
        const int b0 = int(int64_t(nb) * gi / n_groups), b1 = int(int64_t(nb) * (gi + 1) / n_groups);
        for (int b = b0; b < b1; b++) backward_task(c, b, hk, dq, sink, dout, q, k, v, out, lse, w);
      }
      // (implicit barrier) then add the groups' buffers in group order, key rows split across threads.
#pragma omp for schedule(static)
      for (int64_t r = 0; r < int64_t(range); r++) {
        const size_t at = (size_t(key0 + r) * Hkv + hk) * D;
        for (int gi = 0; gi < n_groups; gi++) {
          const float* tk = buf.data() + size_t(gi) * per_group * 2 + size_t(r) * D;
          const float* tv = tk + per_group;
          if (dk)
            for (int d = 0; d < D; d++) dk[at + d] += tk[d];
          if (dv)
            for (int d = 0; d < D; d++) dv[at + d] += tv[d];
        }
      }
    }
  }
}

}  // namespace gsa::cpu
