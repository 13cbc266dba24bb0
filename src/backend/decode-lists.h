// The description of one decode row's key lists that a backend selects and builds where the KV pool is
// (backend.h prepare_decode_lists / decode_attention_lists; issue 14 item 2). A decode step fills it once per
// row from the session's page tables; it is the same in every layer (the pool's frames are allocated in the
// same order in every layer), so each layer needs no host work: no q to the host, no list upload.
//
// The list of KV head h, as a set of pool K rows (kv/kv-cache.h pool mode), is
//     base  ∪  over the chunks u selected for h: raw rows [raw_row[u], raw_row[u] + raw_len[u])
//                                                ∪ (add_gists[u] ? gist rows [gist_row[u], gist_row[u] + g) : ∅)
// and the selection (only when the layer selects, decode_attention_lists' `select`) is gist::select_top's
// over gist::score_units' scores of the candidates u < n_cand:
//     s_h(u) = max over r < g of (q_h . K[gist_row[u] + r]) / sqrt(D)   (f32, d in order, no FMA)
// with k = `k` and cfg's union / group_scoring / select rule; ties to the lower index, NaN as -inf.
// Hierarchical selection (hgsa: unit_row non-empty, levels = unit_row.size() + 1 > 1) replaces select_top by
// gist::select_hierarchical's top-down walk with k_per_level, scoring a level-l unit (l >= 1) u at the g
// consecutive rows from unit_row[l - 1][u] (u < whole[l] = n_cand / chunks_per_unit(l)) and chunks as above;
// children per level-l unit: chunk[l].
// add_gists[u] is set by the caller where the chunk's gists are not already in base (so nothing counts twice).
// Models whose selecting rows see every gist (gist::gsa_config::gists_all) give, besides base, sel_base: base and
// every gist row before the row, ascending; a layer that selects reads it in base's place (add_gists is then
// relative to it), a layer that does not (dense_layers) reads base.
// Page routers (router quest / moba: the session's baselines, session.h page_select): the candidates are
// complete raw pages (raw rows only, add_gists 0) and each layer's page summaries (kv-cache.h page_summary:
// (pages, 3, Hkv, D) f32, planes min / max / mean key) replace the gist keys:
//     quest: s_h(u) = max over the G query heads i of h of  sum_d max(q_i[d] mn_u[d], q_i[d] mx_u[d])
//     moba:  s_h(u) = max over i of  sum_d q_i[d] me_u[d]                    (f32, d in order, no FMA, no scale)
// and the k highest per KV head are kept (ties to the lower index): cfg is null, cap() = min(n_cand, k).
// Keys are attended in ascending stream position (base_pos, raw_pos, gist_pos give it): the CPU reference
// merges in that order, so its result equals the host engine's bit for bit; the CUDA backend may attend in
// any order (split-K), which changes only the rounding.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace gsa {

// Pool rows at or past this name rows of the pool's off-device part (kv-cache.h tier host: raw pages moved to
// host memory that the kernels read in place): row r is row r - kv_host_row0 there. Lists hold int32 rows.
constexpr int32_t kv_host_row0 = int32_t(1) << 30;

namespace gist {
struct gsa_config;
}

enum class lists_router : uint8_t { none, quest, moba };

struct decode_lists {
  // The rows every KV head attends, ascending stream positions, and their pool rows.
  std::vector<int32_t> base_pos, base_row;
  // How many leading base_row entries equal those of the session's previous description (a hint: a backend
  // may upload only the rest; backend.h prepare_decode_lists' `previous`).
  int64_t base_same = 0;
  // The base of the layers that select when it differs from base (gists_all, above); empty: base. sel_base_same as
  // base_same.
  std::vector<int32_t> sel_base_pos, sel_base_row;
  int64_t sel_base_same = 0;
  // Candidate chunks u < n_cand (empty: the layer never selects).
  std::vector<int32_t> gist_row, raw_row, raw_len, gist_pos, raw_pos;
  std::vector<uint8_t> add_gists;
  std::vector<std::vector<int32_t>> unit_row;  // hgsa: per level 1.. L-1, first gist row of each whole unit
  std::vector<int> chunk;                   // hgsa: the config's chunk sizes (chunk[l]: children per unit)
  std::vector<int> k_per_level;             // hgsa: gist::hierarchy_k's (or the fixed top-k per level)
  int g = 1;                                // gists per chunk (rows gist_row[u] .. + g - 1 are consecutive)
  int k = 0;                                // gist::select_k's count per head (or per group)
  const gist::gsa_config* cfg = nullptr;    // union / group_scoring / select rule; null when n_cand == 0
  lists_router router = lists_router::none;  // quest / moba: page summaries instead of gist keys (above)
  int n_q_heads = 0, n_kv_heads = 0, head_dim = 0;

  int n_cand() const { return int(gist_row.size()); }
  // Rows candidate u adds to its head's list when selected: its raw rows, and its gists where not in the base.
  int32_t chunk_rows(int u) const { return raw_len[size_t(u)] + (add_gists[size_t(u)] ? g : 0); }
  void clear_candidates() {  // the per-candidate tables (not hgsa's unit rows)
    gist_row.clear(), raw_row.clear(), raw_len.clear(), gist_pos.clear(), raw_pos.clear(), add_gists.clear();
  }
  int levels() const { return int(unit_row.size()) + 1; }
  // Id slots per KV head in `selected`: at most this many chunks are unfolded per head (union of G heads' k).
  int cap() const;
  // `selected` of one layer: count (Hkv), ids (Hkv x cap), gist units scored (Hkv; written for hierarchical
  // selection, where the count depends on the walk).
  int64_t selected_size() const { return int64_t(n_kv_heads) * (2 + cap()); }
  // `stats` of one layer, what a session counts without the ids: per KV head the chunks selected (Hkv), the gist
  // units (or pages) scored (Hkv), and the rows the selected chunks add to the list past its shared base (Hkv).
  int64_t stats_size() const { return int64_t(n_kv_heads) * 3; }
};

// The list of one KV head in a layer that selects (`selects`: sel_base when there is one) or not (base), given its
// selected chunks sel[0..n_sel) (ascending): ascending stream positions to *pos and / or their pool rows to *rows
// (appended; either may be null).
void decode_lists_merge(const decode_lists& d, bool selects, const int32_t* sel, int n_sel, std::vector<int32_t>* pos,
                        std::vector<int32_t>* rows);

}  // namespace gsa
