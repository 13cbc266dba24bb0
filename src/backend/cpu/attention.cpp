// Plan-driven attention on the CPU (the Run half of Plan/Run; plans come from attention-plan.cpp or gist/).
// Layouts and the masking rule: see attention.h. Forward overwrites out (Tq,Hq,D) and lse (Tq,Hq); backward
// accumulates (+=) into dq (Tq,Hq,D), dk and dv (Tk,Hkv,D), any of which may be nullptr.
//
// Work unit ("task"): one query block b and one KV head hk. The task gathers the listed K/V rows into
// contiguous scratch once and serves every query head of the GQA group from it. Because lists are ascending,
// the causal rule leaves each query row a prefix of the list, so the cost is the number of visible
// (query, key) pairs times D, never Tq * Tk.
//
// Inner loops are written so that the compiler vectorises them without reassociating sums: scores use a
// transposed copy of K (D, n) and accumulate s[0..c) += q[d] * Kt[d][0..c); outputs accumulate rows of V.
// (OpenBLAS is not used here: its pthread build would start its own threads inside our OpenMP tasks, and the
// per-task matrices, ~(G * rows) x n x D, are too small to amortise that.)
//
// Backward parallelism without races on dk/dv: if the OpenMP thread count divides Hkv, each thread owns whole
// KV heads and scatters directly; otherwise, per KV head, each thread scatters into its own buffer covering
// the key range the plan touches, and the buffers are summed afterwards (key rows split across threads).
#include <omp.h>

#include <algorithm>
#include <cmath>
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

// dst (D, n) = the same rows, transposed.
void gather_cols(float* dst, const float* src, const int32_t* idx, int n, int hk, int Hkv, int D) {
  for (int j = 0; j < n; j++) {
    const float* row = src + (size_t(idx[j]) * Hkv + hk) * D;
    for (int d = 0; d < D; d++) dst[size_t(d) * n + j] = row[d];
  }
}

// s[j] = scale * sum_d x[d] * t[d * ld + j] for j < c (t: a transposed gather with leading dimension ld).
void dot_cols(float* s, const float* x, const float* t, int ld, int c, int D, float scale) {
  std::fill_n(s, c, 0.0f);
  for (int d = 0; d < D; d++) {
    const float xd = x[d] * scale;
    const float* td = t + size_t(d) * ld;
    for (int j = 0; j < c; j++) s[j] += xd * td[j];
  }
}

// y[0..D) += sum_{j < c} w[j] * rows[j][0..D).
void axpy_rows(float* y, const float* w, const float* rows, int c, int D) {
  for (int j = 0; j < c; j++) {
    const float wj = w[j];
    const float* r = rows + size_t(j) * D;
    for (int d = 0; d < D; d++) y[d] += wj * r[d];
  }
}

// Number of list entries at or before position pos: the prefix a query at pos may see.
int visible_count(const int32_t* idx, int n, int64_t pos) {
  return int(std::upper_bound(idx, idx + n, pos) - idx);
}

struct task_ctx {
  const attn_plan& plan;
  int Tq, Tk, q_offset, Hq, Hkv, D, G;
  float scale;
};

// Per-thread scratch, grown on demand.
struct scratch {
  std::vector<float> kt, kr, vr, vt, s, dp, dkg, dvg, dqi;
  static void fit(std::vector<float>& v, size_t n) {
    if (v.size() < n) v.resize(n);
  }
};

void forward_task(const task_ctx& c, int b, int hk, float* out, float* lse, const float* q, const float* k,
                  const float* v, scratch& w) {
  const attn_plan& plan = c.plan;
  const int D = c.D, Hq = c.Hq;
  const int32_t* idx = plan.indices.data() + plan.list_begin(b, hk);
  const int n = int(plan.list_end(b, hk) - plan.list_begin(b, hk));
  scratch::fit(w.kt, size_t(n) * D);
  scratch::fit(w.vr, size_t(n) * D);
  scratch::fit(w.s, n);
  gather_cols(w.kt.data(), k, idx, n, hk, c.Hkv, D);
  gather_rows(w.vr.data(), v, idx, n, hk, c.Hkv, D);
  float* s = w.s.data();
  for (int i = plan.block_q[b]; i < plan.block_q[b + 1]; i++) {
    const int cnt = visible_count(idx, n, int64_t(c.q_offset) + i);
    for (int h = hk * c.G; h < (hk + 1) * c.G; h++) {
      const size_t row = size_t(i) * Hq + h;
      float* o = out + row * D;
      std::fill_n(o, D, 0.0f);
      if (cnt == 0) {
        lse[row] = -std::numeric_limits<float>::infinity();
        continue;
      }
      dot_cols(s, q + row * D, w.kt.data(), n, cnt, D, c.scale);
      const float m = *std::max_element(s, s + cnt);
      float sum = 0;
      for (int j = 0; j < cnt; j++) {
        s[j] = std::exp(s[j] - m);
        sum += s[j];
      }
      axpy_rows(o, s, w.vr.data(), cnt, D);
      const float inv = 1.0f / sum;
      for (int d = 0; d < D; d++) o[d] *= inv;
      lse[row] = m + std::log(sum);
    }
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
  const int D = c.D, Hq = c.Hq;
  const int32_t* idx = plan.indices.data() + plan.list_begin(b, hk);
  const int n = int(plan.list_end(b, hk) - plan.list_begin(b, hk));
  if (n == 0) return;
  const bool want_kv = dst.dk || dst.dv;
  scratch::fit(w.kt, size_t(n) * D);
  scratch::fit(w.kr, size_t(n) * D);
  scratch::fit(w.vt, size_t(n) * D);
  scratch::fit(w.s, n);
  scratch::fit(w.dp, n);
  scratch::fit(w.dqi, D);
  gather_cols(w.kt.data(), k, idx, n, hk, c.Hkv, D);
  gather_rows(w.kr.data(), k, idx, n, hk, c.Hkv, D);
  gather_cols(w.vt.data(), v, idx, n, hk, c.Hkv, D);
  if (want_kv) {
    scratch::fit(w.dkg, size_t(n) * D);
    scratch::fit(w.dvg, size_t(n) * D);
    std::fill_n(w.dkg.data(), size_t(n) * D, 0.0f);
    std::fill_n(w.dvg.data(), size_t(n) * D, 0.0f);
  }
  float *p = w.s.data(), *ds = w.dp.data();
  for (int i = plan.block_q[b]; i < plan.block_q[b + 1]; i++) {
    const int cnt = visible_count(idx, n, int64_t(c.q_offset) + i);
    if (cnt == 0) continue;  // output was the constant 0: no gradient flows
    for (int h = hk * c.G; h < (hk + 1) * c.G; h++) {
      const size_t row = size_t(i) * Hq + h;
      const float* qi = q + row * D;
      const float* doi = dout + row * D;
      const float* oi = out + row * D;
      // P = exp(S - lse), recomputed; dP = dO V^T; Di = rowsum(dO * O); dS = P (dP - Di).
      dot_cols(p, qi, w.kt.data(), n, cnt, D, c.scale);
      const float l = lse[row];
      for (int j = 0; j < cnt; j++) p[j] = std::exp(p[j] - l);
      dot_cols(ds, doi, w.vt.data(), n, cnt, D, 1.0f);
      float di = 0;
      for (int d = 0; d < D; d++) di += doi[d] * oi[d];
      // Fold 1/sqrt(D) into dS once: both dQ and dK need it.
      for (int j = 0; j < cnt; j++) ds[j] = p[j] * (ds[j] - di) * c.scale;
      if (dq) {
        float* dqi = w.dqi.data();
        std::fill_n(dqi, D, 0.0f);
        axpy_rows(dqi, ds, w.kr.data(), cnt, D);
        float* dqr = dq + row * D;
        for (int d = 0; d < D; d++) dqr[d] += dqi[d];
      }
      if (want_kv) {
        for (int j = 0; j < cnt; j++) {
          float* dkj = w.dkg.data() + size_t(j) * D;
          float* dvj = w.dvg.data() + size_t(j) * D;
          const float dsj = ds[j], pj = p[j];
          for (int d = 0; d < D; d++) {
            dkj[d] += dsj * qi[d];
            dvj[d] += pj * doi[d];
          }
        }
      }
    }
  }
  if (!want_kv) return;
  for (int j = 0; j < n; j++) {
    const size_t at = size_t(idx[j] - dst.key0) * dst.ld;
    if (dst.dk)
      for (int d = 0; d < D; d++) dst.dk[at + d] += w.dkg[size_t(j) * D + d];
    if (dst.dv)
      for (int d = 0; d < D; d++) dst.dv[at + d] += w.dvg[size_t(j) * D + d];
  }
}

}  // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, const attn_plan& plan,
                       int Tq, int Tk, int q_offset, int Hq, int Hkv, int D) {
  check_shapes("attention_forward", Tq, Tk, q_offset, Hq, Hkv, D);
  validate_plan(plan, Tq, Tk, q_offset, Hkv);
  const task_ctx c{plan, Tq, Tk, q_offset, Hq, Hkv, D, Hq / Hkv, 1.0f / std::sqrt(float(D))};
  const int64_t n_tasks = int64_t(plan.n_blocks()) * Hkv;
#pragma omp parallel
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
  const int n_threads = omp_get_max_threads();
  const size_t kv_ld = size_t(Hkv) * D;

  if (!dk && !dv) {  // only dq: every (row, head) belongs to one task, no races at all
    const int64_t n_tasks = int64_t(nb) * Hkv;
    const kv_sink none{nullptr, nullptr, 0, 0};
#pragma omp parallel
    {
      scratch w;
#pragma omp for schedule(dynamic)
      for (int64_t t = 0; t < n_tasks; t++)
        backward_task(c, int(t / Hkv), int(t % Hkv), dq, none, dout, q, k, v, out, lse, w);
    }
    return;
  }

  if (Hkv % n_threads == 0) {  // each thread owns whole KV heads: scatter straight into dk/dv
#pragma omp parallel
    {
      scratch w;
#pragma omp for schedule(static)
      for (int hk = 0; hk < Hkv; hk++) {
        const kv_sink sink{dk ? dk + size_t(hk) * D : nullptr, dv ? dv + size_t(hk) * D : nullptr, kv_ld, 0};
        for (int b = 0; b < nb; b++) backward_task(c, b, hk, dq, sink, dout, q, k, v, out, lse, w);
      }
    }
    return;
  }

  // Per-thread buffers over the touched key range [key0, key1], one KV head at a time.
  if (plan.indices.empty()) {  // nothing attended: only the (empty) dq work remains
    return;
  }
  const auto [lo, hi] = std::minmax_element(plan.indices.begin(), plan.indices.end());
  const int32_t key0 = *lo;
  const size_t range = size_t(*hi - key0 + 1);
  const size_t per_thread = range * D;
  std::vector<float> buf(size_t(n_threads) * per_thread * 2);
  for (int hk = 0; hk < Hkv; hk++) {
#pragma omp parallel num_threads(n_threads)
    {
      const int tid = omp_get_thread_num(), team = omp_get_num_threads();
      float* bk = buf.data() + size_t(tid) * per_thread * 2;
      float* bv = bk + per_thread;
      std::fill_n(bk, per_thread * 2, 0.0f);
      scratch w;
      const kv_sink sink{dk ? bk : nullptr, dv ? bv : nullptr, size_t(D), key0};
#pragma omp for schedule(dynamic)
      for (int b = 0; b < nb; b++) backward_task(c, b, hk, dq, sink, dout, q, k, v, out, lse, w);
      // (implicit barrier) then sum the team's buffers, key rows split across threads.
#pragma omp for schedule(static)
      for (int64_t r = 0; r < int64_t(range); r++) {
        const size_t at = (size_t(key0 + r) * Hkv + hk) * D;
        for (int t = 0; t < team; t++) {
          const float* tk = buf.data() + size_t(t) * per_thread * 2 + size_t(r) * D;
          const float* tv = tk + per_thread;
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
