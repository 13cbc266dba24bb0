#include "model/gsa-plans.h"

#include <algorithm>

#include "backend/row-unfold.h"
#include "core/error.h"
#include "gist/plan.h"
#include "gist/select.h"

namespace gsa {

namespace {

bool is_dense_layer(const gist::gsa_config& cfg, int layer) {
  return std::find(cfg.dense_layers.begin(), cfg.dense_layers.end(), layer) != cfg.dense_layers.end();
}

// Selection for the blocks [b_begin, b_end) of base (b_end < 0: to the end): per (block, KV head) the chosen chunk
// ids, and whether the block unfolds at all (level-0 blocks with at least one candidate). qk.q holds stream rows
// [q_row0, q_row0 + its rows), qk.k the keys [0, its rows).
void select_for_blocks(const llama_model& m, const gist::gsa_config& cfg, const gist::stream& s,
                       const cpu::attn_plan& base, int b_begin, const layer_qk& qk,
                       std::vector<std::vector<int32_t>>& selected, std::vector<uint8_t>& unfolds, int b_end = -1,
                       int q_row0 = 0) {
  const int nb = b_end < 0 ? base.n_blocks() : b_end;
  // On a device with selection kernels q and k stay where they are.
  if (m.ops().select_chunks(qk.q, qk.k, q_row0, base, b_begin, nb, s, cfg, selected, unfolds)) return;
  const float* q = qk.host_q();
  const float* k = qk.host_k();
  const int Hq = int(m.config.num_attention_heads), Hkv = int(m.config.num_key_value_heads);
  const int D = int(m.config.head_dim), Tk = int(qk.k.dim(0));
  const int n_complete = gist::complete_chunk_count(s);
  const std::vector<std::vector<int32_t>> gist_begin = gist::unit_gist_tables(s, cfg);
  // Every block scores the same gist keys: transposed once into score tiles, per level that its selection reads,
  // for the units whose gists are among the keys (a prefill pass holds the keys before its end only).
  gist::level_tiles tiles(size_t(gist::walks(cfg) ? cfg.levels() : 1));
  for (size_t l = 0; l < tiles.size(); l++) {
    const auto& gb = gist_begin[l];
    const int n = int(std::partition_point(gb.begin(), gb.end(),
                                           [&](int32_t p) { return p + cfg.gists_per_chunk <= Tk; }) -
                      gb.begin());
    tiles[l] = gist::gist_key_tiles(k, Tk, Hkv, D, gb.data(), n, cfg.gists_per_chunk);
  }
  selected.assign(size_t(nb - b_begin) * Hkv, {});
  unfolds.assign(nb, 0);
#pragma omp parallel for schedule(dynamic)
  for (int b = b_begin; b < nb; b++) {
    const int r0 = base.block_q[b], r1 = base.block_q[b + 1];
    if (s.level[r0] > 0) continue;  // higher-level gist blocks keep the gist mask
    const int chunk = s.chunk[r0];
    const int n_cand = gist::candidate_count(chunk, n_complete, cfg.local_chunks);
    if (n_cand <= 0) continue;
    auto sel = gist::select_block(q + size_t(r0 - q_row0) * Hq * D, r1 - r0, k, Tk, Hq, Hkv, D, gist_begin, chunk,
                                  n_cand, cfg, nullptr, &tiles);
    for (int h = 0; h < Hkv; h++) selected[size_t(b - b_begin) * Hkv + h] = std::move(sel[h]);
    unfolds[b] = 1;
  }
}

// Per-row selection on a device that keeps it there (backend::select_rows): a row unfold to put on the gist mask
// (backend/row-unfold.h) instead of a per-row plan built on the host; null when the backend cannot.
// reuse: the backend's tables kept from the previous layer of this provider (the rows, s and cfg do not change).
std::shared_ptr<const row_unfold> device_rows(const llama_model& m, const gist::gsa_config& cfg,
                                              const gist::stream& s, const cpu::attn_plan& rows,
                                              gist::train_mode mode, int ctx_end, const layer_qk& qk,
                                              std::shared_ptr<void>* reuse) {
  const int b0 = mode == gist::train_mode::suffix_unfold ? gist::first_block_at(rows, ctx_end) : 0;
  return m.ops().select_rows(qk.q, qk.k, rows, b0, s, cfg, reuse);
}

}  // namespace

plan_provider make_gsa_plans(const llama_model& m, const gist::gsa_config& cfg, const gist::stream& s,
                             gist::train_mode mode, int ctx_end, gsa_plan_stats* stats) {
  const int Hkv = int(m.config.num_key_value_heads);
  if (mode == gist::train_mode::suffix_unfold && (ctx_end <= 0 || ctx_end > s.size()))
    fail("suffix-unfold needs the context end inside the stream (got {} for a stream of {})", ctx_end, s.size());
  auto base = std::make_shared<cpu::attn_plan>(
      gist::plan_compress(s, cfg, mode == gist::train_mode::suffix_unfold ? ctx_end : -1));
  // The blocks that select: whole query chunks, or single rows (select_per_token) from the first unfolding row,
  // split from the base a row unfold goes on (with "gists": "all", one that lists every gist for them).
  auto sel_base = base, row_base = base;
  if (cfg.select_per_token && mode != gist::train_mode::compress) {
    const int first = mode == gist::train_mode::suffix_unfold ? ctx_end : 0;
    if (cfg.gists_all) row_base = std::make_shared<cpu::attn_plan>(gist::plan_unfold_base(s, cfg, *base, first));
    sel_base = std::make_shared<cpu::attn_plan>(gist::plan_split_rows(*row_base, first));
  }
  auto reuse = std::make_shared<std::shared_ptr<void>>();  // select_rows' tables, shared by the layers
  return [&m, &cfg, &s, mode, ctx_end, stats, base, sel_base, row_base, Hkv, reuse](int layer, const layer_qk& qk) {
    cpu::attn_plan plan;
    if (mode == gist::train_mode::compress || is_dense_layer(cfg, layer)) {
      plan = *base;
    } else if (auto u = sel_base != base ? device_rows(m, cfg, s, *sel_base, mode, ctx_end, qk, reuse.get()) : nullptr) {
      plan = *row_base;  // the gist mask (every gist with gists all) plus the selection kept on the device
      plan.unfold = u;
      if (stats) {  // a device -> host copy: only when asked (the base's pairs are added below)
        const unfold_total t = unfold_totals(*u);
        stats->unfolded_chunks += t.chunks;
        stats->attended_pairs += t.keys;
      }
    } else if (mode == gist::train_mode::unfold) {
      std::vector<std::vector<int32_t>> selected;
      std::vector<uint8_t> unfolds;
      select_for_blocks(m, cfg, s, *sel_base, 0, qk, selected, unfolds);
      if (stats)
        for (auto& v : selected) stats->unfolded_chunks += int64_t(v.size());
      plan = gist::plan_unfold(s, cfg, *sel_base, selected, Hkv, unfolds);
    } else {
      const int b0 = gist::first_block_at(*sel_base, ctx_end);
      std::vector<std::vector<int32_t>> selected;
      std::vector<uint8_t> unfolds;
      select_for_blocks(m, cfg, s, *sel_base, b0, qk, selected, unfolds);
      if (stats)
        for (auto& v : selected) stats->unfolded_chunks += int64_t(v.size());
      plan = gist::plan_suffix(s, cfg, *sel_base, ctx_end, selected, Hkv);
    }
    if (stats) stats->attended_pairs += cpu::attended_pairs(plan, Hkv);
    return plan;
  };
}

unfold_pass_plans::unfold_pass_plans(const llama_model& m, const gist::gsa_config& cfg, const gist::stream& s)
    : m_(m), cfg_(cfg), s_(s), base_(std::make_shared<cpu::attn_plan>(gist::plan_compress(s, cfg))) {
  row_base_ = cfg.select_per_token && cfg.gists_all
                  ? std::make_shared<cpu::attn_plan>(gist::plan_unfold_base(s, cfg, *base_))
                  : base_;
  sel_base_ = cfg.select_per_token ? std::make_shared<cpu::attn_plan>(gist::plan_split_rows(*row_base_, 0)) : base_;
}

plan_provider unfold_pass_plans::pass(int r0, int r1) const {
  auto at = [r0, r1](const cpu::attn_plan& p) {
    const int b0 = gist::first_block_at(p, r0), b1 = gist::first_block_at(p, r1);
    GSA_ASSERT(0 <= r0 && r0 < r1 && p.block_q[size_t(b0)] == r0 && p.block_q[size_t(b1)] == r1,
               "an unfolding prefill pass over rows [{}, {}) that are not block boundaries", r0, r1);
    return std::pair<int, int>(b0, b1);
  };
  const std::pair<int, int> d = at(*base_), sel = at(*sel_base_);
  const int d0 = d.first, d1 = d.second, b0 = sel.first, b1 = sel.second;  // (clang 14 cannot capture bindings)
  // Dense layers keep the gist mask: one cut, shared.
  auto dense = std::make_shared<const cpu::attn_plan>(cpu::plan_blocks(*base_, d0, d1));
  // The row unfolds' base: the same cut of the gist mask, or of the one listing every gist (gists all).
  auto row_base = row_base_ == base_
                      ? dense
                      : std::make_shared<const cpu::attn_plan>(cpu::plan_blocks(*row_base_, d0, d1));
  // Per-row selection kept on the device (backend::select_rows at row0 = r0): the pass's per-row blocks, rebased,
  // and the backend's tables shared by the pass's layers.
  std::shared_ptr<const cpu::attn_plan> rows;
  if (sel_base_ != base_) rows = std::make_shared<const cpu::attn_plan>(cpu::plan_blocks(*sel_base_, b0, b1));
  auto reuse = std::make_shared<std::shared_ptr<void>>();
  const int Hkv = int(m_.config.num_key_value_heads);
  return [this, dense, row_base, rows, reuse, b0, b1, r0, Hkv](int layer, const layer_qk& qk) {
    if (is_dense_layer(cfg_, layer)) return *dense;
    if (rows)
      if (auto u = m_.ops().select_rows(qk.q, qk.k, *rows, 0, s_, cfg_, reuse.get(), r0)) {
        cpu::attn_plan plan = *row_base;  // the pass's gist mask plus the selection kept on the device
        plan.unfold = u;
        return plan;
      }
    std::vector<std::vector<int32_t>> selected;
    std::vector<uint8_t> unfolds;
    select_for_blocks(m_, cfg_, s_, *sel_base_, b0, qk, selected, unfolds, b1, r0);
    return gist::plan_unfold(s_, cfg_, *sel_base_, selected, Hkv, unfolds, b0, b1);
  };
}

plan_provider frozen_plans(std::vector<cpu::attn_plan> plans) {
  auto p = std::make_shared<std::vector<cpu::attn_plan>>(std::move(plans));
  return [p](int layer, const layer_qk&) { return (*p)[size_t(layer)]; };
}

}  // namespace gsa
