// Attention plans: the causal plan builder, the plan validator and the work measure (see attention.h).
// A plan is plain data (block boundaries + CSR key lists); everything here is O(plan size), never O(Tq * Tk).
#include <algorithm>

#include "backend/cpu/attention.h"
#include "core/error.h"

namespace gsa::cpu {

int64_t attn_plan::attended_pairs(int n_kv_heads) const {
  int64_t pairs = 0;
  for (int b = 0; b < n_blocks(); b++) {
    const int64_t rows = block_q[b + 1] - block_q[b];
    for (int h = 0; h < (heads == 1 ? 1 : heads); h++) pairs += rows * (list_end(b, h) - list_begin(b, h));
  }
  return heads == 1 ? pairs * n_kv_heads : pairs;
}

int64_t attn_plan::attended_pairs(int n_kv_heads, int q_offset) const {
  int64_t pairs = 0;
  for (int b = 0; b < n_blocks(); b++) {
    for (int h = 0; h < (heads == 1 ? 1 : heads); h++) {
      const int32_t* first = indices.data() + list_begin(b, h);
      const int32_t* last = indices.data() + list_end(b, h);
      // Lists are ascending, so each row sees a prefix of its list.
      for (int i = block_q[b]; i < block_q[b + 1]; i++)
        pairs += std::upper_bound(first, last, int64_t(q_offset) + i) - first;
    }
  }
  return heads == 1 ? pairs * n_kv_heads : pairs;
}

attn_plan plan_causal(int Tq, int q_offset, int block) {
  if (block <= 0) fail("plan_causal: block size must be positive (got {})", block);
  if (Tq < 0 || q_offset < 0) fail("plan_causal: Tq ({}) and q_offset ({}) must be >= 0", Tq, q_offset);
  attn_plan plan;
  plan.heads = 1;
  plan.block_q.push_back(0);
  plan.indptr.push_back(0);
  for (int r0 = 0; r0 < Tq; r0 += block) {
    const int r1 = std::min(Tq, r0 + block);
    plan.block_q.push_back(r1);
    // Every key up to the block's last query; the causal rule cuts the rest row by row.
    for (int j = 0; j < q_offset + r1; j++) plan.indices.push_back(j);
    plan.indptr.push_back(int64_t(plan.indices.size()));
  }
  return plan;
}

void validate_plan(const attn_plan& plan, int Tq, int Tk, int q_offset, int Hkv) {
  if (Tq < 0 || Tk < 0 || q_offset < 0)
    fail("attention plan: sizes must be >= 0 (Tq={}, Tk={}, q_offset={})", Tq, Tk, q_offset);
  if (Hkv <= 0) fail("attention plan: Hkv must be positive (got {})", Hkv);
  if (plan.heads != 1 && plan.heads != Hkv)
    fail("attention plan: heads is {}, must be 1 (shared lists) or Hkv = {} (one list per KV head)", plan.heads,
         Hkv);
  if (plan.block_q.empty()) fail("attention plan: block_q is empty; it needs n_blocks + 1 boundaries (at least [0])");
  const int nb = plan.n_blocks();
  if (plan.block_q[0] != 0) fail("attention plan: block_q[0] is {}, must be 0", plan.block_q[0]);
  if (plan.block_q[nb] != Tq)
    fail("attention plan: block_q ends at {} but there are Tq = {} query rows", plan.block_q[nb], Tq);
  for (int b = 0; b < nb; b++)
    if (plan.block_q[b + 1] < plan.block_q[b])
      fail("attention plan: block {} has rows [{}, {}): block_q must be non-decreasing", b, plan.block_q[b],
           plan.block_q[b + 1]);

  const size_t n_lists = size_t(nb) * plan.heads;
  if (plan.indptr.size() != n_lists + 1)
    fail("attention plan: indptr has {} entries, expected n_blocks * heads + 1 = {}", plan.indptr.size(),
         n_lists + 1);
  if (plan.indptr[0] != 0) fail("attention plan: indptr[0] is {}, must be 0", plan.indptr[0]);
  if (plan.indptr[n_lists] != int64_t(plan.indices.size()))
    fail("attention plan: indptr ends at {} but indices has {} entries", plan.indptr[n_lists], plan.indices.size());
  // All offsets first, so that reading any list below stays inside indices.
  for (size_t l = 0; l < n_lists; l++)
    if (plan.indptr[l + 1] < plan.indptr[l])
      fail("attention plan: list of block {} head {} has indptr [{}, {}): indptr must be non-decreasing",
           l / plan.heads, l % plan.heads, plan.indptr[l], plan.indptr[l + 1]);

  for (int b = 0; b < nb; b++) {
    // A key after the block's last query can never be seen: listing it signals a bug in the plan builder.
    const int64_t last_pos = int64_t(q_offset) + plan.block_q[b + 1] - 1;
    for (int h = 0; h < plan.heads; h++) {
      const size_t l = size_t(b) * plan.heads + h;
      const int64_t begin = plan.indptr[l], end = plan.indptr[l + 1];
      for (int64_t e = begin; e < end; e++) {
        const int32_t j = plan.indices[e];
        if (j < 0 || j >= Tk)
          fail("attention plan: block {} head {} lists key {} outside [0, Tk = {})", b, h, j, Tk);
        if (e > begin && j <= plan.indices[e - 1])
          fail("attention plan: block {} head {} lists key {} after key {}: lists must be strictly ascending", b, h,
               j, plan.indices[e - 1]);
        if (j > last_pos)
          fail("attention plan: block {} head {} lists key {} after its last query position {} (q_offset {} + row "
               "{}); such a key is never visible",
               b, h, j, last_pos, q_offset, plan.block_q[b + 1] - 1);
      }
    }
  }
}

}  // namespace gsa::cpu
