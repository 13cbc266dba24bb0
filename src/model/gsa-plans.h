// Attention plans per layer for the three training modes (DESIGN 1.5), as plan providers for forward():
//  * compress: the gist mask (plan_compress) in every layer;
//  * unfold: layers outside cfg.dense_layers additionally let each level-0 query block (a chunk's raw tokens and
//    gists) unfold the top-k earlier chunks chosen by gist score — max over the block's queries, union over the
//    GQA group (or group scoring) — from that layer's rotated q and k. Selection uses the flat level-0 chunks
//    also in a hierarchy (training sees every gist level through the compress lists);
//  * suffix_unfold: rows from ctx_end on (question, answer) unfold; the context keeps the gist mask.
// The selection is not differentiable: gradients flow through the attention over what was kept. A provider
// records the plan it gave each layer (frozen_plans) so tests can replay exactly the same visibility.
#pragma once
#include <memory>
#include <vector>

#include "gist/config.h"
#include "gist/stream.h"
#include "model/llama.h"

namespace gsa {

struct gsa_plan_stats {
  int64_t unfolded_chunks = 0;  // summed over layers, blocks and KV heads
  int64_t attended_pairs = 0;   // (query, key) pairs over layers and KV heads
};

// The provider keeps references to s and cfg: they must outlive it.
plan_provider make_gsa_plans(const llama_model& m, const gist::gsa_config& cfg, const gist::stream& s,
                             gist::train_mode mode, int ctx_end = -1, gsa_plan_stats* stats = nullptr);

// The unfold mode's plans for an inference prefill in passes (chunked: activations bounded by the pass). pass(r0,
// r1) is the provider of the pass over stream rows [r0, r1), block boundaries of base(): its plans are for those
// rows at q_offset r0 over keys [0, r1) (rows rebased, keys stream positions, the gist table cut at r1), and it
// expects qk to hold the pass's q and the keys [0, r1) (forward() with a kv_prefix). Each pass lists, block by
// block, what make_gsa_plans(unfold) lists for the same rows given the same q and k: selection reads only the
// gists before a block, so the passes together are the one-pass prefill. Per-row selection (select_per_token)
// stays on a device that keeps it there (a row unfold over the pass's rows on its gist mask), else builds the
// pass's per-row plan on the host. The object must outlive its providers; m, cfg and s must outlive it.
class unfold_pass_plans {
 public:
  unfold_pass_plans(const llama_model& m, const gist::gsa_config& cfg, const gist::stream& s);
  const cpu::attn_plan& base() const { return *base_; }  // the gist mask (pass boundaries are its blocks')
  plan_provider pass(int r0, int r1) const;

 private:
  const llama_model& m_;
  const gist::gsa_config& cfg_;
  const gist::stream& s_;
  std::shared_ptr<const cpu::attn_plan> base_, row_base_, sel_base_;  // row_base_: gist::plan_unfold_base
};

// A provider that replays fixed plans, one per layer.
plan_provider frozen_plans(std::vector<cpu::attn_plan> plans);

}  // namespace gsa
