// Dense masked attention: the yardstick for the plan-driven kernels, O(Tq * Tk * Hq * D).
// Layouts as in attention.h; mask (Tq, Tk), 1 = visible, shared by all heads. Written plainly on purpose:
// one (query, head) row at a time, double accumulators, no blocking, no threads.
// Forward overwrites out and lse; backward accumulates (+=) into dq, dk, dv (nullptr = not needed).
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/attention.h"
#include "core/error.h"

namespace gsa::cpu {

namespace {
void check_dense_shapes(int Tq, int Tk, int Hq, int Hkv, int D) {
  if (Tq < 0 || Tk < 0 || Hq <= 0 || Hkv <= 0 || D <= 0 || Hq % Hkv != 0)
    fail("dense attention: bad shape Tq={} Tk={} Hq={} Hkv={} D={} (Hq must be a multiple of Hkv)", Tq, Tk, Hq, Hkv,
         D);
}
}  // namespace

void attention_dense_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                             const uint8_t* mask, int Tq, int Tk, int Hq, int Hkv, int D) {
  check_dense_shapes(Tq, Tk, Hq, Hkv, D);
  const int G = Hq / Hkv;
  const double scale = 1.0 / std::sqrt(double(D));
  std::vector<double> s(Tk), o(D);
  for (int i = 0; i < Tq; i++) {
    for (int h = 0; h < Hq; h++) {
      const int hk = h / G;
      const float* qi = q + (size_t(i) * Hq + h) * D;
      double m = -std::numeric_limits<double>::infinity();
      for (int j = 0; j < Tk; j++) {
        if (!mask[size_t(i) * Tk + j]) continue;
        const float* kj = k + (size_t(j) * Hkv + hk) * D;
        double dot = 0;
        for (int d = 0; d < D; d++) dot += double(qi[d]) * kj[d];
        s[j] = dot * scale;
        m = std::max(m, s[j]);
      }
      float* oi = out + (size_t(i) * Hq + h) * D;
      if (m == -std::numeric_limits<double>::infinity()) {  // nothing visible
        for (int d = 0; d < D; d++) oi[d] = 0;
        lse[size_t(i) * Hq + h] = -std::numeric_limits<float>::infinity();
        continue;
      }
      double sum = 0;
      for (int d = 0; d < D; d++) o[d] = 0;
      for (int j = 0; j < Tk; j++) {
        if (!mask[size_t(i) * Tk + j]) continue;
        const double p = std::exp(s[j] - m);
        sum += p;
        const float* vj = v + (size_t(j) * Hkv + hk) * D;
        for (int d = 0; d < D; d++) o[d] += p * vj[d];
      }
      for (int d = 0; d < D; d++) oi[d] = float(o[d] / sum);
      lse[size_t(i) * Hq + h] = float(m + std::log(sum));
    }
  }
}

void attention_dense_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                              const float* v, const float* out, const float* lse, const uint8_t* mask, int Tq, int Tk,
                              int Hq, int Hkv, int D) {
  check_dense_shapes(Tq, Tk, Hq, Hkv, D);
  const int G = Hq / Hkv;
  const double scale = 1.0 / std::sqrt(double(D));
  // dk, dv gather terms from every query: sum them in double, add to the caller's buffers once.
  std::vector<double> dqi(D), dk_acc(dk ? size_t(Tk) * Hkv * D : 0), dv_acc(dv ? size_t(Tk) * Hkv * D : 0);
  for (int i = 0; i < Tq; i++) {
    for (int h = 0; h < Hq; h++) {
      const int hk = h / G;
      const size_t row = size_t(i) * Hq + h;
      if (std::isinf(lse[row])) continue;  // no visible key: the output is a constant 0
      const float* qi = q + row * D;
      const float* doi = dout + row * D;
      const float* oi = out + row * D;
      double di = 0;  // rowsum(dO * O) = sum_j P_ij dP_ij
      for (int d = 0; d < D; d++) di += double(doi[d]) * oi[d];
      for (int d = 0; d < D; d++) dqi[d] = 0;
      for (int j = 0; j < Tk; j++) {
        if (!mask[size_t(i) * Tk + j]) continue;
        const float* kj = k + (size_t(j) * Hkv + hk) * D;
        const float* vj = v + (size_t(j) * Hkv + hk) * D;
        double sdot = 0, pdot = 0;
        for (int d = 0; d < D; d++) {
          sdot += double(qi[d]) * kj[d];
          pdot += double(doi[d]) * vj[d];
        }
        const double pij = std::exp(sdot * scale - double(lse[row]));
        const double ds = pij * (pdot - di) * scale;  // gradient w.r.t. the unscaled dot q.k
        for (int d = 0; d < D; d++) dqi[d] += ds * kj[d];
        const size_t kv_row = (size_t(j) * Hkv + hk) * D;
        if (dk)
          for (int d = 0; d < D; d++) dk_acc[kv_row + d] += ds * qi[d];
        if (dv)
          for (int d = 0; d < D; d++) dv_acc[kv_row + d] += pij * doi[d];
      }
      if (dq)
        for (int d = 0; d < D; d++) dq[row * D + d] += float(dqi[d]);
    }
  }
  for (size_t e = 0; e < dk_acc.size(); e++) dk[e] += float(dk_acc[e]);
  for (size_t e = 0; e < dv_acc.size(); e++) dv[e] += float(dv_acc[e]);
}

}  // namespace gsa::cpu
