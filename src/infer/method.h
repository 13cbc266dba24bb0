// Decode methods (DESIGN 1.3, 1.4, 1.6) and the options of a session. One budget applies to every method:
// attended raw KV tokens per decode step per KV head (default L / r, L = raw tokens when decoding starts).
//   full       every earlier key (no gists in the stream)
//   gist       compression only: the gist mask, k = 0 (GSA model)
//   gsa        the gist mask plus the top-k chunks per query head, unioned over the GQA group (GSA model)
//   hgsa       gsa with top-down hierarchical selection over the gist levels (GSA model)
//   streaming  sink + the most recent tokens (StreamingLLM)
//   quest      pages ranked by the upper bound sum_d max(q_d kmin_d, q_d kmax_d) (Quest)
//   moba       pages ranked by q . mean key (MoBA-style router)
//   h2o        heavy hitters by accumulated attention + a recent window, the rest evicted (H2O)
// Baselines (full, streaming, quest, moba, h2o) run the model on the plain raw stream, without gists.
#pragma once
#include <cstdint>
#include <string>

#include "kv/kv-cache.h"

namespace gsa::infer {

enum class method : uint8_t { full, gist, gsa, hgsa, streaming, quest, moba, h2o };

// How gsa / hgsa prefill the context (gist and the baselines always prefill under their own mask):
//   gist_mask  the gist mask of DESIGN 1.2 in every layer: no context row unfolds;
//   unfold     every context row also unfolds its top-k chunks by gist score, exactly as the model's unfold
//              training computed the context (model/gsa-plans.h with the model's own gsa config: its k rule,
//              per-token or per-chunk selection);
//   automatic  unfold for a model whose gsa.train_mode is "unfold" (it never saw its context computed any
//              other way), else the gist mask. Plans are segments (backend/attn-plan.h), so this holds at
//              every context length.
enum class prefill_mode : uint8_t { automatic, gist_mask, unfold };

const char* method_name(method m);
method method_from_name(const std::string& s);  // throws gsa::error listing the methods
bool uses_gists(method m);                      // gist, gsa, hgsa
const char* prefill_mode_name(prefill_mode p);  // "auto", "gist-mask", "unfold"
prefill_mode prefill_mode_from_name(const std::string& s);  // throws gsa::error listing the modes

struct session_options {
  method meth = method::gsa;
  int64_t budget = -1;   // raw KV tokens per step per KV head; -1: L / ratio when decoding starts
  int topk = -1;         // gsa / hgsa: chunks per query head (per level for hgsa); -1: from the budget or config
  float ratio = 0;       // r for the default budget; 0: the model's ratio() (c_0 ... c_{L-1} / g), or 16 for a plain model
                         // 1 with a budget: gsa / hgsa may unfold budget / c_0 chunks per query head (all of them)
  int page_size = 0;     // baselines' page (quest, moba; the cache's page); 0: the model's c_0, or 16
  int sink = -1;         // streaming's sink tokens; -1: the model's gsa sink, or 4
  kv::page_tier tier = kv::page_tier::memory;
  std::string kv_file;   // tier file: backing file ("" = temporary)
  bool record = false;   // keep every row's key lists and logits (tests, --show-unfolded)
  bool track_unfolded = true;  // step_stats::unfolded (session::track_unfolded)
  // K/V rows in pools on the model's backend (kv-cache.h pool mode). Always so for a model on a device; on the
  // CPU it runs the device path through the CPU backend (tests).
  bool kv_pool = false;
  // Bytes of device memory the KV cache may hold (0: no cap). Set: the gists, the window and the sink stay on
  // the device and the other raw pages move to pinned host memory that the kernels read in place
  // (kv-cache.h tier host).
  int64_t gpu_kv_budget = 0;
  prefill_mode prefill = prefill_mode::automatic;
  // Stream rows per forward pass of a prefill (every method and prefill mode): longer contexts run in passes that
  // read the earlier passes' keys and values, so the activations are bounded by the pass; the unfolding prefill
  // selects each pass's chunks from its queries and the keys before its end. 0: default_prefill_pass.
  int prefill_pass = 0;
};
inline constexpr int default_prefill_pass = 65536;

}  // namespace gsa::infer
