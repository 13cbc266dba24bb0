// One training sample -> the model's inputs: with GSA the gist stream (DESIGN 1.1: positions, labels with gist
// targets ignored) and the mode's attention plans; without (the full-attention baseline) the raw tokens with
// positions 0..n-1 and causal attention. Targets before the sample's loss_begin (a task's context and question)
// are ignored, so tasks train on their answer.
#pragma once
#include <vector>

#include "gist/config.h"
#include "gist/stream.h"
#include "model/llama.h"
#include "train/mix.h"

namespace gsa {

struct train_sequence {
  gist::stream s;                            // the gist stream (empty without GSA)
  std::vector<int32_t> ids, pos, targets;    // the model's inputs; targets already shifted, -100 = ignore
  int ctx_end = -1;                          // stream position where unfolding starts (suffix-unfold), else -1
  int answer_begin = -1;                     // first stream position whose target is an answer token, or -1
};

// cfg == nullptr: full attention. suffix_tokens: for suffix-unfold samples without a ctx_end (text), the last
// suffix_tokens raw tokens unfold.
train_sequence make_sequence(const train_sample& x, const gist::gsa_config* cfg, int suffix_tokens);

// The routing distillation's specs for a sequence (backend/route-loss.h, cfg.route_loss): one per level the run's
// selection scores: level 0 (chunks), and with the top-down walk (gist::walks) every higher level too (its whole
// units, the candidates the walk scores; a level without an eligible row is left out). Each takes raw rows with at
// least two candidates at its level (gist::candidate_count / the unit's chunks), at most cfg.route_rows of them:
// the first answer rows (up to a quarter, where the sequence has an answer), then rows evenly spaced over the
// rest; every layer outside cfg.dense_layers distils. Deterministic (a resumed run replays it).
std::vector<route_spec> make_route_specs(const train_sequence& seq, const gist::gsa_config& cfg, int n_layers);
// How many levels make_route_specs can distil for cfg (its specs' levels are below this): the hierarchy's levels
// with the top-down walk, else 1.
int route_levels(const gist::gsa_config& cfg);
// cfg.route_loss > 0: st.route = make_route_specs, each spec prepared on m's backend, level l's KL into row l of
// route_kl when given (see forward_sequence); otherwise nothing.
void prepare_route_specs(const llama_model& m, forward_state& st, const train_sequence& seq,
                         const gist::gsa_config& cfg, Tensor* route_kl = nullptr);

// Forward with the run's attention (plans built from seq.s and cfg; nullptr = causal), and with cfg->route_loss
// > 0 the routing specs prepared on the model's backend in st.route (backward adds the loss; level l's per-layer
// KL into row l of route_kl when given, an f32 (levels, layers) accumulator on the model's device, so a step reads
// it once).
void forward_sequence(const llama_model& m, forward_state& st, const train_sequence& seq,
                      const gist::gsa_config* cfg, Tensor* route_kl = nullptr);

}  // namespace gsa
