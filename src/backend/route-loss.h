// Routing distillation (gist::gsa_config::route_loss): a training loss that teaches each selecting layer's gist
// scores where the detail is. The next-token loss never does this directly: the top-k over gist scores is not
// differentiable, so a gist learns to be selected only as far as attending to it helps. Here, for sampled rows t
// of one sequence and every query head h (KV head hk = h / G, scale = 1 / sqrt(D)):
//   teacher   x_i  = scale q_t,h . k_i,hk over the raw keys i of the row's candidate chunks u < n_cand (sink
//                    tokens left out: they are always visible), p_u = sum over i in u of softmax(x)_i
//   student   s_u  = scale max_j q_t,h . k_(gist_begin[u] + j),hk over the chunk's g gists (j*_u: the argmax, the
//                    lowest j on ties), the selection's own score (gist::score_units)
//   loss      KL(p || softmax(s)) = sum_u p_u (log p_u - log softmax(s)_u)   (p_u = 0 terms: 0)
// The teacher is not differentiated; with ds_u = grad_scale (softmax(s)_u - p_u):
//   dq_t,h += scale sum_u ds_u k_(gist(u) + j*_u),hk        dk_(gist(u) + j*_u),hk += scale sum ds_u q_t,h
// over every row and head that scores chunk u. A candidate may span several consecutive level-0 chunks (span: a
// level-l unit of a hierarchy, whose gists the top-down walk scores): its teacher keys are those chunks' raw keys,
// its student the unit's own g gists. route_loss adds to dq, dk (a layer's rotated projections'
// gradients, after the attention backward) and adds the layer's mean KL over the R x Hq (row, head) pairs into
// loss[layer] (f32 on the backend's device).
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace gsa {

struct route_spec {
  int g = 1;                            // gists per candidate
  int span = 1;                         // level-0 chunks per candidate (a level-l unit: gist::chunks_per_unit)
  int level = 0;                        // the hierarchy level whose gists are the student (for the log)
  std::vector<int32_t> rows;            // the R stream rows that distil, ascending
  std::vector<int32_t> n_cand;          // per row: its candidates are 0 .. n_cand - 1 (>= 2)
  // Per level-0 chunk < max_cand() span: the teacher's keys [raw_begin, raw_end); per candidate: its first gist row.
  std::vector<int32_t> raw_begin, raw_end, gist_begin;
  std::vector<uint8_t> layers;          // per layer: 1 where the layer selects (and so distils)
  float weight = 0;                     // gist::gsa_config::route_loss
  // On the model's device (backend::route_prepare): rows, n_cand, raw_begin, raw_end, gist_begin as one i32
  // table; and the per-layer mean KL (f32, layers.size()): zeros made there, or the caller's accumulator.
  Tensor table, kl;

  int R() const { return int(rows.size()); }
  int max_cand() const { return int(gist_begin.size()); }
  int layers_on() const;
  // The table's layout: offsets of the five arrays.
  int64_t off_rows() const { return 0; }
  int64_t off_n_cand() const { return R(); }
  int64_t off_raw_begin() const { return 2 * int64_t(R()); }
  int64_t off_raw_end() const { return off_raw_begin() + int64_t(max_cand()) * span; }
  int64_t off_gist_begin() const { return off_raw_end() + int64_t(max_cand()) * span; }
  std::vector<int32_t> host_table() const;
  // Checks the spec against a sequence of T rows (gsa::error naming what is wrong).
  void check(int T) const;
};

// The host reference (f32 tensors as plain arrays): q (T, Hq, D), k (T, Hkv, D) rotated; dq, dk accumulate (+=);
// *kl += the mean KL of this layer. Row by row, head by head, chunks in order.
void route_loss_host(float* dq, float* dk, float* kl, const float* q, const float* k, int T, int Hq, int Hkv, int D,
                     const route_spec& s, float grad_scale);

}  // namespace gsa
