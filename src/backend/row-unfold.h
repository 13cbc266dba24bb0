// Per-row unfolding on top of a plan: the form a per-token selection (gsa_config::select_per_token) takes when it
// is made where q and k live. A per-row unfold plan (gist::plan_unfold over gist::plan_split_rows) lists every
// row's keys on the host: O(T k) segments, rebuilt each layer from a selection copied back from the device. A
// row_unfold keeps the base plan (the gist mask, whose structure the fast kernels exploit) and adds, per row and
// KV head, a short table of chunk ids whose keys the row also sees:
//
//   row r (q row r, 0 <= r < Tq) sees, for KV head h, its base list's keys and the keys
//   [chunk_begin[m], chunk_end[m]) of every chunk m in ids[(r Hkv + h) cap + i], i < count[r Hkv + h].
//
// Contract the builder keeps (and the kernels rely on): per (row, head) the ids are strictly ascending, every
// listed key precedes the row (q_offset + r), and no listed key is in the row's base list (so a backend may attend
// the base and the overlay separately and merge the two softmaxes). For a single-level gist stream this is the
// visibility of gist::plan_unfold: the base gist mask already lists every earlier chunk's gists, so an unfolded
// chunk adds its raw tokens, minus those of the sink (already listed): unfold_ranges below. With several gist
// levels (H-GSA) a row's base list holds the level-0 gists of its own group only (earlier groups through their
// higher-level gists), so an unfolded chunk outside that group also adds its level-0 gists, which follow its raw
// tokens: the row sees [chunk_begin[m], gist_end[m]) instead of [chunk_begin[m], chunk_end[m]) unless
// listed[2 r] <= m < listed[2 r + 1] (the level-0 units row r's base list holds): unfold_key_end.
//
// The tables are tensors on the device of the backend that runs the plan (i32). Any backend can expand a
// row_unfold into a plain plan (expand_row_unfold: the semantics above, per-row blocks): the CPU backend and the
// CUDA f32 kernels run that; the CUDA bf16 kernels attend the overlay directly.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "backend/attn-plan.h"
#include "core/tensor.h"

namespace gsa {

namespace gist {
struct gsa_config;
struct stream;
}  // namespace gist

struct row_unfold {
  int Tq = 0, Hkv = 0, cap = 0, n_chunks = 0;
  Tensor count;                    // (Tq, Hkv) i32: chunks per (row, KV head), 0 <= count <= cap
  Tensor ids;                      // (Tq, Hkv, max(cap, 1)) i32: ascending chunk ids, count of them used
  Tensor chunk_begin, chunk_end;   // (n_chunks) i32: the keys an unfolded chunk adds
  // Several gist levels only (numel 0 for one): (n_chunks) i32, the end of chunk m's level-0 gists (chunk_end[m]
  // + g); (Tq, 2) i32, the level-0 units each row's base list holds.
  Tensor gist_end, listed;
  // (2) i64 on the tables' device: selected (row, head, chunk) triples and the keys they add. Read through
  // unfold_totals (a device -> host copy: the trainer asks only when it keeps statistics).
  Tensor totals;
};

struct unfold_total {
  int64_t chunks = 0, keys = 0;
};
unfold_total unfold_totals(const row_unfold& u);

// The keys an unfolded level-0 chunk adds to a gist row's list: its raw tokens, minus the sink's (raw index <
// cfg.sink), and (gist_end, several levels) the end of its level-0 gists where the row's list lacks them.
// begin/end/gist_end overwritten, one entry per chunk of s.
void unfold_ranges(const gist::stream& s, const gist::gsa_config& cfg, std::vector<int32_t>& begin,
                   std::vector<int32_t>& end, std::vector<int32_t>* gist_end = nullptr);

// Per row of a compress-shaped plan (one list per block): the level-0 gist units [out[2 r], out[2 r + 1]) its list
// holds ([0, 0) for none). Checks that each list holds at most one such segment (gsa::error).
std::vector<int32_t> row_listed_units(const attn_plan& base);

// The end of the keys chunk m adds to row r (host tables; gist_end / listed null for one level).
inline int32_t unfold_key_end(const int32_t* chunk_end, const int32_t* gist_end, const int32_t* listed, int r,
                              int32_t m) {
  if (!gist_end || (m >= listed[2 * r] && m < listed[2 * r + 1])) return chunk_end[m];
  return gist_end[m];
}

// Whether a row_unfold expresses cfg's per-row unfolding of stream s exactly (with several levels, every complete
// chunk's level-0 gists right after its raw tokens): otherwise the caller builds gist::plan_unfold. With
// cfg.gists_all the base must be gist::plan_unfold_base's (every gist listed for the rows that unfold), on which
// an unfolded chunk adds its raw tokens only.
bool row_unfold_applies(const gist::stream& s, const gist::gsa_config& cfg);

// With cfg.gists_all and several levels: checks (gsa::error) that each row from first_row on that can unfold
// (a level-0 row of a chunk with a candidate) lists the level-0 gists from the first chunk on, as
// gist::plan_unfold_base makes it; listed as row_listed_units gives it, its row r being stream row row0 + r.
void check_gists_all_base(const gist::stream& s, const gist::gsa_config& cfg, const std::vector<int32_t>& listed,
                          int first_row, int row0 = 0);

// A host row_unfold for stream s: selected[(r - row_begin) * Hkv + h] = chunk ids (any order, no duplicates) of
// row r >= row_begin (rows before row_begin select nothing). base: the rows' gist mask (gist::plan_compress of s),
// needed with several levels (row_listed_units). Checks the contract (gsa::error).
row_unfold host_row_unfold(const gist::stream& s, const gist::gsa_config& cfg, int Hkv, int row_begin,
                           const std::vector<std::vector<int32_t>>& selected, const attn_plan* base = nullptr);

// The plain plan with the same visibility as base + u for queries at q_offset (base.unfold itself is ignored: u
// is the one applied; the result has none): a block none of whose rows unfolds keeps its lists (copied per KV head); a block with an unfolding row is
// cut into one block per row, each list = the base list + the row's chunks' ranges. Reads u's tables through
// host() (any device). Checks the tables against base and the contract (gsa::error).
attn_plan expand_row_unfold(const attn_plan& base, const row_unfold& u, int q_offset);

}  // namespace gsa
