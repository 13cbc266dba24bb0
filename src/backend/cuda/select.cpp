// Host side of the GPU chunk selection (contract: select.h): argument checks, the per-block table (candidates, k,
// offsets) built with the gist rules themselves (candidate_count, select_k), batching so the score scratch stays
// bounded, the launches and the copy back into per-(block, KV head) vectors.
#include "backend/cuda/select.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <string>

#include "backend/cuda/ops-internal.h"
#include "backend/cuda/runtime.h"
#include "core/error.h"
#include "core/profile.h"
#include "gist/select.h"
#include "gist/stream.h"

namespace gsa::cuda {

// The selecting blocks of a (block table, per-block k and caps, batches whose scores fit the budget), built with
// the gist rules themselves. Blocks keep global row numbers; score and id offsets are relative to their batch.
struct selection_plan {
  std::vector<select_detail::block_desc> blocks;
  // The training walk (gist::walks(cfg)): per level l >= 1 (at [l - 1]) the blocks' tables over the whole level-l
  // units (n_cand = level-0 n_cand / P_l, score_off into that level's scores) and the units' gist positions.
  std::vector<std::vector<select_detail::block_desc>> upper;
  std::vector<std::vector<int32_t>> upper_gist;
  std::vector<int64_t> upper_max_scores;
  std::vector<int> which;                // block id of each selecting block
  std::vector<size_t> batch_begin{0};    // batches [batch_begin[i], batch_begin[i + 1])
  int max_cand = 0, max_rows = 0, max_cap = 0;
  int64_t max_scores = 0, max_ids = 0, max_batch = 0;
  // The walk scores level 0 itself (walk_args::score0: one-row blocks, its shared memory within bounds), so level
  // 0 has no score scratch; walk_m_max bounds a block's allowed level-0 units.
  bool walk_score0 = false;
  int walk_m_max = 0;
};

namespace {

using select_detail::block_desc;

// floats: 1 GiB. A batch is one launch of each kernel: per-token selection at 128k has 8192 candidates per row and
// 32 heads, so 128 MiB held only 128 rows (64 score CTAs on 132 SMs); 1 GiB holds 1024 (the 128k unfolding
// prefill 2.3x faster, docs/decode.md). Only what the largest batch needs is allocated.
constexpr int64_t default_score_budget = int64_t(256) << 20;

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

bool env_on(const char* name) {
  const char* e = std::getenv(name);
  return e && *e && std::string(e) != "0";
}
// GSA_SELECT_EXACT=1: every selection scores with the exact kernel (select_args::exact_scores).
bool exact_env() {
  static const bool on = env_on("GSA_SELECT_EXACT");
  return on;
}
// GSA_SELECT_WALK_PRESCORED=1: the walk reads level 0's scores from a score launch over every unit, as before
// walk_args::score0 (an A/B switch for the benchmarks).
bool walk_prescored_env() {
  static const bool on = env_on("GSA_SELECT_WALK_PRESCORED");
  return on;
}
// GSA_SELECT_WALK_SCALAR=1: the walk scores level 0 with the exact scalar kernel even where tensor-core scores are
// on (walk_args::mma off; an A/B switch for the benchmarks).
bool walk_scalar_env() {
  static const bool on = env_on("GSA_SELECT_WALK_SCALAR");
  return on;
}

void check_args(const select_args& a) {
  if (!a.cfg) fail("GPU chunk selection: cfg is null");
  const gist::gsa_config& cfg = *a.cfg;
  if (cfg.select == gist::select_rule::top_p)
    fail("GPU chunk selection does not support select = top_p yet; use fixed or adaptive k, or the CPU selection");
  if (cfg.chunk.empty() || cfg.chunk[0] <= 0 || cfg.gists_per_chunk <= 0)
    fail("GPU chunk selection: the gsa config needs chunk[0] > 0 and gists_per_chunk > 0");
  if (a.type != dtype::f32 && a.type != dtype::bf16)
    fail("GPU chunk selection: q and k must be f32 or bf16, got {}", dtype_name(a.type));
  if (a.T <= 0 || a.Hq <= 0 || a.Hkv <= 0 || a.D <= 0)
    fail("GPU chunk selection: T {}, Hq {}, Hkv {}, D {} must all be > 0", a.T, a.Hq, a.Hkv, a.D);
  if (a.q_row0 < 0 || a.Tk < 0 || int64_t(a.q_row0) + a.T > (a.Tk > 0 ? a.Tk : a.T))
    fail("GPU chunk selection: q rows [{}, {}) are not inside the {} keys", a.q_row0, int64_t(a.q_row0) + a.T,
         a.Tk > 0 ? a.Tk : a.T);
  if (a.q_stride_t < 0 || a.k_stride_t < 0 || (a.q_stride_t > 0 && a.q_stride_t < int64_t(a.Hq) * a.D) ||
      (a.k_stride_t > 0 && a.k_stride_t < int64_t(a.Hkv) * a.D))
    fail("GPU chunk selection: row strides q {} / k {} must be 0 (dense) or at least Hq * D / Hkv * D", a.q_stride_t,
         a.k_stride_t);
  if (a.Hq % a.Hkv != 0) fail("GPU chunk selection: Hq {} is not a multiple of Hkv {}", a.Hq, a.Hkv);
  if (size_t(a.D) * sizeof(float) > 32 * 1024)
    fail("GPU chunk selection: head_dim {} is too large (at most 8192)", a.D);
  if (!a.q || !a.k) fail("GPU chunk selection: q and k (device pointers) must be set");
  if (!a.block_q || !a.row_level || !a.row_chunk || (a.n_chunks > 0 && !a.chunk_gist_begin))
    fail("GPU chunk selection: block_q, row_level, row_chunk and chunk_gist_begin (host tables) must be set");
  if (a.n_blocks < 0 || a.b_begin < 0 || a.b_begin > a.n_blocks)
    fail("GPU chunk selection: b_begin {} outside the {} blocks", a.b_begin, a.n_blocks);
  if (a.n_complete < 0 || a.n_complete > a.n_chunks)
    fail("GPU chunk selection: n_complete {} outside [0, {}] chunks", a.n_complete, a.n_chunks);
}

template <class T>
size_t bytes_of(const std::vector<T>& v) {
  return std::max<size_t>(1, v.size()) * sizeof(T);
}

selection_plan plan_selection(const select_args& a, std::vector<uint8_t>* unfolds) {
  check_args(a);
  const gist::gsa_config& cfg = *a.cfg;
  const int G = a.Hq / a.Hkv, g = cfg.gists_per_chunk, c0 = cfg.chunk[0];
  const int64_t score_budget = a.max_scratch_scores > 0 ? a.max_scratch_scores : default_score_budget;
  if (unfolds) unfolds->assign(size_t(a.n_blocks), 0);
  selection_plan p;
  const int Tk = a.Tk > 0 ? a.Tk : a.T;
  for (int b = a.b_begin; b < a.n_blocks; b++) {
    const int r0 = a.block_q[b], r1 = a.block_q[b + 1];
    if (r0 < a.q_row0 || r1 <= r0 || r1 > a.q_row0 + a.T)
      fail("GPU chunk selection: block {} has rows [{}, {}), outside q's rows [{}, {}) or empty", b, r0, r1,
           a.q_row0, a.q_row0 + a.T);
    if (a.row_level[r0] > 0) continue;  // higher-level gist blocks keep the gist mask
    const int chunk = a.row_chunk[r0];
    const int n_cand = gist::candidate_count(chunk, a.n_complete, cfg.local_chunks);
    if (n_cand <= 0) continue;
    block_desc d;
    d.row0 = r0 - a.q_row0;
    d.rows = r1 - r0;
    d.n_cand = n_cand;
    d.k = std::max(0, gist::select_k(cfg, int64_t(chunk) * c0, G, n_cand));
    d.cap = int32_t(std::min<int64_t>(n_cand, int64_t(d.k) * (cfg.group_scoring ? 1 : G)));
    p.blocks.push_back(d);
    p.which.push_back(b);
    if (unfolds) (*unfolds)[size_t(b)] = 1;
    p.max_cand = std::max(p.max_cand, n_cand);
    p.max_rows = std::max(p.max_rows, d.rows);
    p.max_cap = std::max(p.max_cap, int(d.cap));
  }
  if (p.blocks.empty()) {
    p.batch_begin.push_back(0);
    return p;
  }
  if (p.max_cand > select_detail::max_candidates)
    fail("GPU chunk selection: {} candidate chunks, at most {} supported; use a larger chunk or the CPU selection",
         p.max_cand, select_detail::max_candidates);
  for (int u = 0; u < p.max_cand; u++) {
    const int pos = a.chunk_gist_begin[u];
    if (pos < 0 || pos + g > Tk)
      fail("GPU chunk selection: gists of candidate chunk {} at [{}, {}) outside the {} keys", u, pos, pos + g, Tk);
  }
  const int up_levels = gist::walks(cfg) ? cfg.levels() - 1 : 0;
  if (up_levels > 0) {
    if (cfg.levels() > select_detail::walk_args::max_levels)
      fail("GPU chunk selection: the walk handles at most {} levels, the config has {}",
           select_detail::walk_args::max_levels, cfg.levels());
    if (p.max_cand > select_detail::walk_max_candidates)
      fail("GPU chunk selection: the hierarchical walk handles at most {} candidate chunks per row, this plan has {}; "
           "use a larger chunk[0], gsa.unfold_select \"flat\", or the CPU selection",
           select_detail::walk_max_candidates, p.max_cand);
    p.upper.assign(size_t(up_levels), p.blocks);
    p.upper_gist.assign(size_t(up_levels), {});
    p.upper_max_scores.assign(size_t(up_levels), 0);
    for (int l = 1; l <= up_levels; l++) {
      const int P = gist::chunks_per_unit(cfg, l);
      for (auto& d : p.upper[size_t(l - 1)]) d.n_cand = d.n_cand / P;
      auto& gb = p.upper_gist[size_t(l - 1)];
      gb.resize(size_t(p.max_cand / P));
      for (int u = 0; u < int(gb.size()); u++) {
        const int pos = gist::unit_gist_position(a.chunk_gist_begin, cfg, l, u);
        if (pos < 0 || pos + g > Tk)
          fail("GPU chunk selection: gists of level-{} unit {} at [{}, {}) outside the {} keys", l, u, pos, pos + g,
               Tk);
        gb[size_t(u)] = pos;
      }
    }
  }
  if (up_levels > 0 && p.max_rows == 1 && !walk_prescored_env()) {
    const int64_t heads = cfg.group_scoring ? 1 : G;
    int64_t m_max = 1;
    for (size_t i = 0; i < p.blocks.size(); i++)
      m_max = std::max(m_max, select_detail::walk_level0_bound(p.blocks[i].n_cand, p.upper[0][i].n_cand, heads,
                                                               p.blocks[i].k, cfg.chunk[1]));
    p.walk_m_max = int(m_max);
    p.walk_score0 = select_detail::walk_warp_smem(p.max_cand, true, p.walk_m_max, G, a.D) <=
                    select_detail::walk_smem_max;
  }
  int64_t s_off = 0, i_off = 0;
  std::vector<int64_t> up_off(size_t(up_levels), 0);
  for (size_t i = 0; i < p.blocks.size(); i++) {
    int64_t ns = p.walk_score0 ? 0 : int64_t(a.Hq) * p.blocks[i].n_cand;
    const int64_t ni = int64_t(a.Hkv) * p.blocks[i].cap;
    for (int l = 0; l < up_levels; l++) ns += int64_t(a.Hq) * p.upper[size_t(l)][i].n_cand;
    if (i > p.batch_begin.back() && s_off + ns > score_budget) {
      p.batch_begin.push_back(i);
      s_off = i_off = 0;
      std::fill(up_off.begin(), up_off.end(), 0);
    }
    p.blocks[i].score_off = s_off;
    p.blocks[i].id_off = i_off;
    s_off += ns;
    i_off += ni;
    for (int l = 0; l < up_levels; l++) {
      select_detail::block_desc& d = p.upper[size_t(l)][i];
      d.score_off = up_off[size_t(l)];
      up_off[size_t(l)] += int64_t(a.Hq) * d.n_cand;
      p.upper_max_scores[size_t(l)] = std::max(p.upper_max_scores[size_t(l)], up_off[size_t(l)]);
    }
    p.max_scores = std::max(p.max_scores, s_off);
    p.max_ids = std::max(p.max_ids, i_off);
    p.max_batch = std::max(p.max_batch, int64_t(i + 1 - p.batch_begin.back()));
  }
  p.batch_begin.push_back(p.blocks.size());
  return p;
}

// Uploads the plan's tables, then per batch: scores, top-k, and `each(batch index, first block, blocks, device
// block table of the batch, device ids, device counts)`.
template <class F>
void run_selection(const select_args& a, const selection_plan& p, F&& each) {
  const gist::gsa_config& cfg = *a.cfg;
  const int g = cfg.gists_per_chunk;
  const bool prof = profile_on();
  const double t0 = prof ? profile_clock_ms() : 0;
  const std::vector<int32_t> gist_begin(a.chunk_gist_begin, a.chunk_gist_begin + p.max_cand);
  detail::scratch d_blocks(bytes_of(p.blocks)), d_gist(bytes_of(gist_begin));
  copy_h2d(d_blocks.as<void>(), p.blocks.data(), p.blocks.size() * sizeof(block_desc));
  copy_h2d(d_gist.as<void>(), gist_begin.data(), gist_begin.size() * sizeof(int32_t));
  detail::scratch d_scores(size_t(std::max<int64_t>(1, p.max_scores)) * sizeof(float));
  detail::scratch d_ids(size_t(std::max<int64_t>(1, p.max_ids)) * sizeof(int32_t));
  detail::scratch d_counts(size_t(p.max_batch) * a.Hkv * sizeof(int32_t));
  // The walk's upper levels: block tables, gist positions and scores per level.
  const int up_levels = int(p.upper.size());
  std::deque<detail::scratch> up_blocks, up_gist, up_scores;  // (scratch does not move)
  for (int l = 0; l < up_levels; l++) {
    up_blocks.emplace_back(bytes_of(p.upper[size_t(l)]));
    up_gist.emplace_back(bytes_of(p.upper_gist[size_t(l)]));
    up_scores.emplace_back(size_t(std::max<int64_t>(1, p.upper_max_scores[size_t(l)])) * sizeof(float));
    copy_h2d(up_blocks.back().as<void>(), p.upper[size_t(l)].data(), p.upper[size_t(l)].size() * sizeof(block_desc));
    if (!p.upper_gist[size_t(l)].empty())
      copy_h2d(up_gist.back().as<void>(), p.upper_gist[size_t(l)].data(),
               p.upper_gist[size_t(l)].size() * sizeof(int32_t));
  }
  if (prof) {
    synchronize();
    profile_add("select.upload", profile_clock_ms() - t0);
  }

  const size_t rows_by_smem = size_t(32 * 1024) / (size_t(a.D) * sizeof(float));
  const int rows_tile = int(std::min<size_t>(size_t(p.max_rows), rows_by_smem));
  const int64_t q_st = a.q_stride_t > 0 ? a.q_stride_t : int64_t(a.Hq) * a.D;
  const int64_t k_st = a.k_stride_t > 0 ? a.k_stride_t : int64_t(a.Hkv) * a.D;
  const int64_t V = int64_t(16 / dtype_size(a.type));  // elements per 16-byte load
  const bool vec = aligned16(a.q) && aligned16(a.k) && q_st % V == 0 && k_st % V == 0 && a.D % V == 0;
  const float scale = 1.0f / std::sqrt(float(a.D));  // as gist::score_units
  // Per-token selection on bf16 scores on tensor cores unless asked to be exact (select.h, "Arithmetic").
  const bool mma = a.type == dtype::bf16 && p.max_rows == 1 && vec && !a.exact_scores && !exact_env() &&
                   select_detail::scores_mma_supported(a.D, a.Hq, a.Hkv);
  void* stream = ctx().stream;
  for (size_t bi = 0; bi + 1 < p.batch_begin.size(); bi++) {
    const size_t i0 = p.batch_begin[bi], i1 = p.batch_begin[bi + 1];
    const int nb = int(i1 - i0);
    const block_desc* db = d_blocks.as<block_desc>() + i0;
    timed("select.scores", profile_on(), [&] {
      auto score = [&](const block_desc* blocks, const int32_t* gist, float* out) {
        if (mma)
          select_detail::launch_scores_mma(blocks, nb, a.q, a.k, a.Hq, a.Hkv, a.D, q_st, k_st, scale, gist, g, out,
                                           stream);
        else
          select_detail::launch_scores(blocks, nb, a.q, a.k, a.type == dtype::bf16, a.Hq, a.Hkv, a.D, q_st, k_st,
                                       scale, gist, g, out, rows_tile, vec, p.max_rows == 1, stream);
      };
      if (!p.walk_score0) score(db, d_gist.as<int32_t>(), d_scores.as<float>());
      for (int l = 0; l < up_levels; l++)
        score(up_blocks[size_t(l)].as<block_desc>() + i0, up_gist[size_t(l)].as<int32_t>(),
              up_scores[size_t(l)].as<float>());
    });
    timed("select.topk", profile_on(), [&] {
      if (up_levels == 0) {
        select_detail::launch_topk(db, nb, d_scores.as<float>(), a.Hq, a.Hkv, cfg.group_scoring, d_ids.as<int32_t>(),
                                   d_counts.as<int32_t>(), p.max_cand, p.max_rows == 1, stream);
        return;
      }
      select_detail::walk_args w;
      w.levels = up_levels + 1;
      w.level[0] = db;
      w.scores[0] = d_scores.as<float>();
      for (int l = 1; l <= up_levels; l++) {
        w.level[l] = up_blocks[size_t(l - 1)].as<block_desc>() + i0;
        w.scores[l] = up_scores[size_t(l - 1)].as<float>();
        w.fan[l] = cfg.chunk[size_t(l)];
      }
      if (p.walk_score0) {  // level 0 scored inside the walk (gist::score_units' arithmetic unless mma)
        w.score0 = true;
        w.q = a.q;
        w.k = a.k;
        w.bf16 = a.type == dtype::bf16;
        w.vec = vec;
        w.mma = mma && !walk_scalar_env();
        w.D = a.D;
        w.g = g;
        w.m_max = p.walk_m_max;
        w.q_st = q_st;
        w.k_st = k_st;
        w.scale = scale;
        w.gist0 = d_gist.as<int32_t>();
      }
      select_detail::launch_walk(w, nb, a.Hq, a.Hkv, cfg.group_scoring, d_ids.as<int32_t>(), d_counts.as<int32_t>(),
                                 p.max_cand, stream);
    });
    timed("select.out", profile_on(), [&] { each(i0, nb, db, d_ids.as<int32_t>(), d_counts.as<int32_t>()); });
  }
}

}  // namespace

int64_t select_blocks(const select_args& a, std::vector<std::vector<int32_t>>& selected,
                      std::vector<uint8_t>& unfolds) {
  const selection_plan p = plan_selection(a, &unfolds);
  selected.assign(size_t(a.n_blocks - a.b_begin) * a.Hkv, {});
  if (p.blocks.empty()) return 0;
  std::vector<int32_t> ids, counts;
  int64_t total = 0;
  run_selection(a, p, [&](size_t i0, int nb, const block_desc*, const int32_t* d_ids, const int32_t* d_counts) {
    const block_desc& last = p.blocks[i0 + nb - 1];
    const int64_t n_ids = last.id_off + int64_t(a.Hkv) * last.cap;
    ids.resize(size_t(n_ids));
    counts.resize(size_t(nb) * a.Hkv);
    copy_d2h(counts.data(), d_counts, counts.size() * sizeof(int32_t));
    copy_d2h(ids.data(), d_ids, ids.size() * sizeof(int32_t));
    for (int i = 0; i < nb; i++) {
      const block_desc& d = p.blocks[i0 + i];
      const size_t out0 = size_t(p.which[i0 + i] - a.b_begin) * a.Hkv;
      for (int h = 0; h < a.Hkv; h++) {
        const int n = counts[size_t(i) * a.Hkv + h];
        GSA_ASSERT(n >= 0 && n <= d.cap, "GPU selection count {} outside [0, {}]", n, d.cap);
        const int32_t* src = ids.data() + d.id_off + int64_t(h) * d.cap;
        selected[out0 + h].assign(src, src + n);
        total += n;
      }
    }
  });
  return total;
}

namespace {
const select_args& whole_sequence(const select_args& a) {  // rows of the tables = q's rows = block_q's
  if (a.q_row0 != 0)
    fail("GPU row selection: q_row0 must be 0 (got {}); for a pass, rebase the blocks and offset the row tables",
         a.q_row0);
  return a;
}
}  // namespace

row_selection::row_selection(const select_args& a)
    : a_(a), plan_(std::make_shared<const selection_plan>(plan_selection(whole_sequence(a), nullptr))) {}

row_selection row_selection::rebound(const select_args& b) const {
  const select_args& a = a_;
  const bool same = a.type == b.type && a.T == b.T && a.q_row0 == b.q_row0 && a.Tk == b.Tk && a.Hq == b.Hq &&
                    a.Hkv == b.Hkv && a.D == b.D &&
                    a.q_stride_t == b.q_stride_t && a.k_stride_t == b.k_stride_t && a.block_q == b.block_q &&
                    a.n_blocks == b.n_blocks && a.b_begin == b.b_begin && a.row_level == b.row_level &&
                    a.row_chunk == b.row_chunk && a.chunk_gist_begin == b.chunk_gist_begin &&
                    a.n_chunks == b.n_chunks && a.n_complete == b.n_complete && a.cfg == b.cfg &&
                    a.max_scratch_scores == b.max_scratch_scores && a.exact_scores == b.exact_scores;
  if (!same) fail("GPU row selection: reused for different sizes or tables; build a new row_selection");
  if (!b.q || !b.k) fail("GPU chunk selection: q and k (device pointers) must be set");
  return row_selection(b, plan_);
}

int row_selection::cap() const { return plan_->max_cap; }

void row_selection::run(int32_t* t_count, int32_t* t_ids, int cap, const int32_t* key_begin, const int32_t* key_end,
                        const int32_t* gist_end, const int32_t* listed, unsigned long long* totals) const {
  const selection_plan& p = *plan_;
  if (p.blocks.empty()) return;
  if (cap < p.max_cap) fail("GPU row selection: the id table holds {} per row and head, {} needed", cap, p.max_cap);
  run_selection(a_, p, [&](size_t, int nb, const block_desc* db, const int32_t* d_ids, const int32_t* d_counts) {
    select_detail::launch_scatter_rows(db, nb, d_ids, d_counts, a_.Hkv, cap, key_begin, key_end, gist_end, listed,
                                       t_count, t_ids, totals, ctx().stream);
  });
}

}  // namespace gsa::cuda
