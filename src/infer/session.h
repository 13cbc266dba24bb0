// A decoding session: one sequence's stream, KV cache and method state (DESIGN 2.1 infer/).
//
// Life of a session: prefill(context) runs the context in one forward pass under the gist mask, or for gsa / hgsa
// with every row unfolding as in unfold training (options.prefill; plain causal attention for the baselines),
// and fills the cache; append(tokens) queues raw tokens (the question, then each
// generated token); run_pending(batch) computes the queued rows of several sessions together, one row per
// session per batched step (the matmuls see M = number of sessions); run_step(batch, max_rows) lets a session
// compute several queued rows in one step (extend(tokens): the rest of a prompt on top of the held KV in one
// forward pass, with the key lists of decoding it row by row). For the gist methods every c_0 raw
// tokens the session queues the chunk's g gist tokens (and a higher level's after a complete group), exactly
// the stream layout of gist/stream.h, so a conversation grows without bound while the attended set stays small.
//
// A row attends, per layer and KV head, to a key list chosen by the method (method.h):
//  * gist rows of level >= 1, dense layers and method gist: the gist mask (gist::compress_keys);
//  * gsa / hgsa: the gist mask plus the raw tokens and level-0 gists of the chunks selected by gist score
//    (gist::select_chunks, or gist::select_hierarchical top-down over the gist stores for hgsa; computed by the
//    bit-identical fast path of gist/fast-select.h);
//  * baselines: see method.h.
// Logits are computed for a row only when it is the last queued one (or with options.record).
// The prefill and the decode step run on the model's backend: for a model on the GPU (to_backend) the activations,
// the K/V rows (pools in GPU memory, kv-cache.h pool mode) and the attention stay there; for full, gist,
// streaming, gsa and hgsa the key selection above runs there too (backend/decode-lists.h, described once per
// row by prepare_lists), for the other methods on the host from each layer's q (docs/decode.md, "Sessions on
// the GPU").
#pragma once
#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include "backend/cpu/attention.h"
#include "backend/decode-lists.h"
#include "gist/config.h"
#include "gist/stream.h"
#include "infer/method.h"
#include "kv/kv-cache.h"
#include "model/llama.h"

namespace gsa::infer {

// Statistics accumulated over the rows computed since the last take_stats().
struct step_stats {
  int rows = 0;                    // stream rows computed (tokens and inserted gists)
  double attended_tokens = 0;      // keys per layer and KV head, mean over the rows' layers and heads
  // K/V rows attended + gist keys scored + page summaries read, all layers, in the bytes they are stored in: f32 on
  // the CPU, the pool's type (bf16 by default) in pool mode; page summaries are f32 everywhere.
  int64_t bytes_read = 0;
  double ms = 0;                   // wall time of the batched steps that computed these rows
  // Of the last row: chunk ids (gsa, hgsa) or page ids (quest, moba) selected, per layer and KV head
  // (index layer * Hkv + head; empty for layers that do not select).
  std::vector<std::vector<int32_t>> unfolded;
  kv::cache_bytes kv;              // after the last row
};

// What a recording session keeps for every row computed after the prefill (tests, --show-unfolded).
struct row_record {
  int pos = 0;                                // stream position
  std::vector<std::vector<int32_t>> keys;     // (layers * Hkv) ascending stream positions attended
  std::vector<float> logits;                  // (V)
};

class session {
 public:
  // Keeps a reference to m (must outlive the session). Throws gsa::error for a method the model cannot run
  // (a gist method on a model without a "gsa" config) or options out of range.
  session(const llama_model& m, const session_options& opts);
  ~session();

  // The context, in one forward pass; only on an empty session. Its last row's logits become available.
  void prefill(const std::vector<int32_t>& raw);
  // Speed measurement: as if n_raw random tokens had been prefilled, with random keys and values in the cache.
  void fill_random(int n_raw, uint64_t seed);
  // Queue raw tokens (gist tokens follow automatically after each complete chunk).
  void append(const std::vector<int32_t>& raw);
  bool has_pending() const { return !pending_.empty(); }
  int pending_rows() const { return int(pending_.size()); }  // queued stream rows (tokens and their gists)
  // Prefill on top of the held KV: appends raw and computes every queued row in one batched forward pass
  // (run_step without a row limit: M-row matmuls), each row attending to and selecting from the cache exactly as
  // it would decoded one row per step (the same key lists; the logits up to the last bit of the GEMMs). On an
  // empty session this is prefill(raw). The last row's logits become available.
  void extend(const std::vector<int32_t>& raw);
  // Whether decoding the context row by row computes what prefill computes (the same key lists): full; gist
  // (the gist mask both ways); gsa when the prefill unfolds with per-token selection under the model's own
  // selection rule (no --topk / --budget override). Not hgsa (its decode walks the hierarchy, its prefill
  // selects flat level-0 chunks), not a gist-mask prefill of gsa, not the page / window / eviction baselines
  // (their decoded rows attend a budget, their prefill everything). Where it holds, a prompt may be prefilled in
  // pieces (prefill of the first, extend for the rest) and equal the one-piece prefill up to rounding.
  bool decode_matches_prefill() const;

  // Cuts the session back to its first n_raw raw tokens (and the gists inserted after their chunks), as if it had
  // never computed the rest: stream, KV cache (kv_cache::truncate), selection state. A cut inside the prefilled
  // context leaves what prefilling those tokens gives (the budget resolves again at the next decoded row; the
  // recorded prefill plans are cleared). The logits are cleared (append at least one token before reading
  // them); n_raw == raw_count() changes nothing. Throws gsa::error with queued rows, for h2o, for n_raw outside
  // 0 .. raw_count(), off a chunk boundary of a gist method, or where the cache cannot cut (cut_point says).
  void truncate(int n_raw);
  // The largest n <= want (and <= raw_count()) where truncate can cut, or 0: for gsa / hgsa / gist a chunk
  // boundary (the gists after a chunk summarise all of it, so a chunk is kept whole or not at all), any token
  // for the baselines (a page boundary in pool mode with page summaries); 0 for h2o (its kept set was chosen by
  // the attention of the rows that would be cut) and where a page the window needs was dropped (--kv-tier drop).
  // A spilled session answers for after restore_kv (truncate needs it restored).
  int cut_point(int want) const;
  // An idle session's KV to its file and back (kv_cache::spill / restore; host sessions only). A spilled session
  // must be restored before it computes rows.
  void spill_kv() { cache_->spill(); }
  void restore_kv() { cache_->restore(); }
  bool kv_spilled() const { return cache_->spilled(); }

  const std::vector<float>& logits() const { return logits_; }  // of the last computed row
  const gist::stream& stream() const { return s_; }
  int raw_count() const { return raw_done_; }
  int64_t budget() const { return budget_; }  // resolved at the first decoded row (-1 before)
  // Bytes of one stored K or V element: the pool's type in pool mode, f32 in a host cache.
  int64_t kv_elem_bytes() const;
  // Raw tokens per id of step_stats::unfolded: c_0 for gsa / hgsa (chunk m holds raw tokens [m c_0, (m+1) c_0)),
  // the page size for quest / moba.
  int unit_tokens() const { return chunk_; }
  const kv::kv_cache& cache() const { return *cache_; }
  const session_options& options() const { return opts_; }
  const llama_model& model() const { return m_; }
  step_stats take_stats();

  // Whether the prefill unfolded (options.prefill resolved; false before the prefill and for non-gist methods).
  bool prefill_unfolded() const { return prefill_unfolded_; }
  // Recording (options.record): the plan the prefill used in each layer (they differ only when it unfolded)
  // and every later row.
  const std::vector<cpu::attn_plan>& prefill_plans() const { return prefill_plans_; }
  int prefill_rows() const { return prefill_rows_; }
  // Forward passes the prefill took (options.prefill_pass).
  int prefill_passes() const { return prefill_passes_; }
  // Pool mode: room in every layer's KV pool for `more` raw tokens past those computed or queued, and their gists,
  // so that decoding them never grows a pool (generate() reserves max_tokens). Nothing off pool mode.
  void reserve_tokens(int64_t more);
  // Whether step_stats::unfolded lists the chunks / pages every layer and KV head selected (default on; from
  // options.track_unfolded). Off, a step on the GPU copies back a few counts per layer instead of every id
  // (megabytes a step at 1M tokens), and unfolded stays empty for the rows the backend selects.
  void track_unfolded(bool on) { track_unfolded_ = on; }
  // Decode rows whose key lists the backend selected and built where the pool is (decode lists), since the start.
  int64_t listed_rows() const { return listed_rows_; }
  const std::vector<row_record>& records() const { return records_; }

 private:
  void run_prefill();
  // Pool frames (per layer) for `raw` raw tokens and their gists.
  int64_t pool_frames(int64_t raw) const;
  // Rethrows an allocation failure with what a context of `raw` tokens needs and what to change.
  [[noreturn]] void out_of_memory_for(const out_of_memory& e, int64_t raw) const;
  friend void run_step(const std::vector<session*>& batch, const std::vector<int>& max_rows);
  struct pending_token {
    int32_t id;
    int8_t level;
  };
  int push_row(int32_t id, int8_t level);  // extends the stream, returns the position
  void queue_raw(int32_t id);
  void resolve_budget();
  void store_kv(int layer, int pos, const float* k, const float* v);
  // Logits of one row h (1, C) of the model's backend into logits_.
  void row_logits(const Tensor& h);
  // Key lists (Hkv) for row pos of layer l; q (Hq, D) rotated. Adds the selection cost to stats_.
  void select_keys(int layer, int pos, const float* q, std::vector<std::vector<int32_t>>& keys);
  void gsa_select(int layer, int pos, const float* q, std::vector<std::vector<int32_t>>& keys);
  void update_base(int pos);  // base_keys_ for row pos (the gist mask)
  // Device-side lists (backend/decode-lists.h, decode-lists-session.cpp): the row's lists prepared on the
  // model's backend, or null where the row takes the host path (selection on the host, decode_attention).
  std::shared_ptr<const void> prepare_lists(int pos);
  bool lists_select(int layer) const;  // whether layer selects on the lists path (after prepare_lists)
  // After the step: what the backend selected into stats_ and, when recording, the keys of records_.back().
  // stats: every layer's decode_lists stats ((L, 3 Hkv) on the host; null when no layer selected); selected:
  // every layer's `selected` (L, selected_size()), null unless wants_ids() (the counts come from stats).
  void lists_done(const int32_t* stats, const int32_t* selected);
  // Whether the step brings this row's selected ids back (records, step_stats::unfolded).
  bool wants_ids() const { return opts_.record || track_unfolded_; }
  void page_select(int layer, int pos, const float* q, std::vector<std::vector<int32_t>>& keys);
  std::shared_ptr<const void> prepare_pages(int pos);  // prepare_lists of quest / moba
  bool base_rows();  // prepare_lists' pool rows of the base; whether pages moved off the device since
  // prepare_lists' pool rows of dl_.sel_base_pos (gists_all: the base and every gist before pos), after base_rows.
  void sel_base_rows(int pos, bool moved);
  void h2o_init(int pos);  // at the first decoded row, pos
  void h2o_update(int layer, int pos, const std::vector<std::vector<float>>& weights);
  void after_prefill();
  // Resolves options.prefill: true = unfold.
  bool unfold_prefill() const;

  const llama_model& m_;
  session_options opts_;
  std::optional<gist::gsa_config> cfg_;  // the model's, with the session's selection overrides
  std::optional<gist::gsa_config> model_cfg_;  // the model's as it trained (the unfolding prefill's)
  int chunk_ = 16;                       // c_0, or the baselines' page size
  float ratio_ = 16;
  int sink_ = 4;
  int64_t budget_ = -1;
  gist::stream s_;
  std::vector<kv::kv_addr> addr_;        // stream position -> cache address
  std::vector<int32_t> gist_positions_;  // every gist's stream position, ascending
  std::unique_ptr<kv::kv_cache> cache_;
  std::deque<pending_token> pending_;
  int raw_done_ = 0, raw_queued_ = 0;
  std::vector<int> gists_done_;          // per level
  std::vector<float> logits_;
  step_stats stats_;
  int64_t listed_rows_ = 0;  // listed_rows()
  bool track_unfolded_ = true;           // track_unfolded()
  std::vector<int32_t> base_keys_;       // gist-mask list of the row being computed
  int base_pos_ = -1;
  int base_builds_ = 0;                  // times base_keys_ was rebuilt (not extended)
  // The lists path: the description of the current row, which positions its base rows were translated for,
  // and the base build its candidate table belongs to.
  decode_lists dl_;
  std::vector<int32_t> dl_rows_of_;
  // sel_base_rows' last translation (kept across rows that do not select, whose lists have no sel_base).
  std::vector<int32_t> dl_sel_rows_of_, dl_sel_rows_;
  std::shared_ptr<const void> dl_prev_;  // the last prepared lists (prepare_decode_lists' `previous`)
  std::shared_ptr<const void> prepared(std::shared_ptr<const void> p);
  int dl_cand_build_ = -1;
  int64_t dl_moved_ = 0;  // the cache's pages_moved() when dl_rows_of_ and the candidates' rows were translated
  bool dl_selects_ = false;
  // Scratch of gsa_select, reused across layers and steps.
  std::vector<float> scores_;
  std::vector<std::vector<int32_t>> sel_;
  std::vector<int32_t> extra_;
  // H2O: per (layer, KV head) kept positions (ascending) and accumulated attention.
  std::vector<std::vector<int32_t>> h2o_kept_;
  std::vector<std::vector<float>> h2o_score_;
  std::vector<float> h2o_obs_q_;         // (layers, W, Hq, D) last context queries, for the initial eviction
  int h2o_obs_rows_ = 0;
  bool h2o_ready_ = false;
  std::vector<cpu::attn_plan> prefill_plans_;
  int prefill_rows_ = 0;
  int prefill_passes_ = 0;
  bool prefill_unfolded_ = false;
  std::vector<row_record> records_;
};

// Computes every queued row of the sessions (same model), one row per session per batched step.
void run_pending(const std::vector<session*>& batch);
// One batched step: session i computes its next min(max_rows[i], queued) rows (max_rows[i] >= 1), all rows of all
// sessions through each layer together (M = total rows). A session's rows take its cache in stream order inside
// every layer, so each row attends to the held KV, its session's earlier rows and itself exactly as a row decoded
// alone (prefill on top of held KV, chunked prefill); a session with several rows selects on the host. Logits for
// a session's last row when nothing stays queued (every row when recording).
void run_step(const std::vector<session*>& batch, const std::vector<int>& max_rows);

// Decode steps' layer segments the model keeps recordings for (backend::replay), over every row count: 0 where its
// backend does not record (the CPU, GSA_CUDA_GRAPHS=0). A segment counts from its first step (the CUDA backend
// runs it as it is then and records it at the second). Diagnosis and tests.
int decode_recordings(const llama_model& m);

// Why m cannot decode on its backend ("cannot decode on <backend>: <reason> (it has ... heads, head dim ...)": the
// decode kernel's shape limits), or empty: sessions refuse such a model, and a command may ask before it starts.
std::string decode_refusal(const llama_model& m);

}  // namespace gsa::infer
