// Session set-up, the incremental stream, prefill and random fill. Key selection: select-keys.cpp; the batched
// decode step: decode-step.cpp.
#include "infer/session.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "backend/row-unfold.h"
#include "core/error.h"
#include "core/profile.h"
#include "core/rng.h"
#include "gist/plan.h"
#include "gist/select.h"
#include "model/gsa-plans.h"

namespace gsa::infer {
namespace {

// Appends the blocks of a pass's plan (rows rebased to r0) to the plan of the whole prefill, whose gist table is
// the last pass's (each pass's table is a prefix of it per level, so unit ids agree). For recording.
void append_pass_plan(cpu::attn_plan& whole, const cpu::attn_plan& part, int r0) {
  if (whole.block_q.empty()) {
    whole = cpu::attn_plan();
    whole.heads = part.heads;
    whole.gists_per_unit = part.gists_per_unit;
    whole.block_q = {0};
    whole.seg_ptr = {0};
  }
  GSA_ASSERT(whole.heads == part.heads && whole.block_q.back() == r0, "pass plan at row {} after {} rows", r0,
             whole.block_q.back());
  const int64_t s0 = int64_t(whole.segs.size());
  whole.segs.insert(whole.segs.end(), part.segs.begin(), part.segs.end());
  for (size_t i = 1; i < part.seg_ptr.size(); i++) whole.seg_ptr.push_back(s0 + part.seg_ptr[i]);
  for (size_t b = 1; b < part.block_q.size(); b++) whole.block_q.push_back(r0 + part.block_q[b]);
  whole.gist_ptr = part.gist_ptr;
  whole.gist_pos = part.gist_pos;
}

}  // namespace

session::session(const llama_model& m, const session_options& opts)
    : m_(m), opts_(opts), track_unfolded_(opts.track_unfolded) {
  const auto& c = m.config;
  const bool has_gsa = !c.gsa.is_null();
  if (uses_gists(opts.meth) && !has_gsa)
    fail("method {} needs a GSA model, but this model's config.json has no \"gsa\" object; use --method full, "
         "streaming, quest, moba or h2o, or a model trained with gists", method_name(opts.meth));
  if (opts.budget != -1 && (opts.budget < 1 || opts.budget > c.max_position_embeddings))
    fail("--budget {} is out of range: give 1 .. {} (attended raw KV tokens per step and KV head)", opts.budget,
         c.max_position_embeddings);
  if (opts.topk < -1 || opts.topk > c.max_position_embeddings)
    fail("--topk {} is out of range: give 0 .. {} chunks", opts.topk, c.max_position_embeddings);
  if (opts.ratio < 0 || (opts.ratio > 0 && opts.ratio < 1)) fail("--ratio {} must be >= 1", opts.ratio);
  if (opts.page_size < 0 || opts.page_size > 65536) fail("--page-size {} must be in 1 .. 65536", opts.page_size);
  if (opts.prefill_pass < 0) fail("--prefill-pass {} must be >= 1 (stream rows per prefill pass)", opts.prefill_pass);
  if (has_gsa) {
    cfg_ = gist::gsa_config_from_json(c.gsa);
    cfg_->validate();
    model_cfg_ = cfg_;
    for (int32_t id : cfg_->gist_token_ids)
      if (id >= c.vocab_size) fail("config.json gsa.gist_token_ids: id {} is outside the vocabulary of {}", id, c.vocab_size);
    ratio_ = cfg_->ratio();
    sink_ = cfg_->sink;
    if (opts.topk >= 0) {
      cfg_->select = gist::select_rule::fixed;
      cfg_->topk = opts.topk;
    } else if (opts.budget >= 0) {
      // The budget counts raw tokens per KV head, over the union of its G query heads' chunks: budget / (c_0 G)
      // chunks per query head. At ratio 1 (the budget is the whole context: the unfold-everything ablation) every
      // query head may unfold every chunk: budget / c_0 each.
      const int G = int(c.num_attention_heads / c.num_key_value_heads);
      const int64_t per_chunk = int64_t(cfg_->chunk[0]) * (opts.ratio == 1.0f ? 1 : G);
      cfg_->select = gist::select_rule::fixed;
      cfg_->topk = int(std::min<int64_t>(INT32_MAX, std::max<int64_t>(0, opts.budget / per_chunk)));
    }
  }
  const bool gists = uses_gists(opts.meth);
  chunk_ = gists ? cfg_->chunk[0] : (opts.page_size > 0 ? opts.page_size : has_gsa ? cfg_->chunk[0] : 16);
  if (opts.ratio > 0) ratio_ = opts.ratio;
  if (opts.ratio > 0 && cfg_) cfg_->budget_ratio = opts.ratio;  // gsa / hgsa's adaptive k at the same L / r
  if (opts.sink >= 0) sink_ = opts.sink;
  else if (!has_gsa) sink_ = 4;

  kv::cache_layout lay;
  lay.n_layers = int(c.num_hidden_layers);
  lay.n_kv_heads = int(c.num_key_value_heads);
  lay.head_dim = int(c.head_dim);
  lay.page_size = chunk_;
  lay.gist_levels = gists ? cfg_->levels() : 0;
  lay.sink = gists ? cfg_->sink : sink_;
  lay.window_pages = gists ? cfg_->local_chunks : 1;
  lay.tier = opts.tier;
  lay.file_path = opts.kv_file;
  if (opts.gpu_kv_budget > 0) {
    if (opts.tier != kv::page_tier::memory)
      fail("--gpu-kv-budget keeps raw pages in pinned host memory; it takes no --kv-tier {}",
           kv::page_tier_name(opts.tier));
    if (m.on_host() && !opts.kv_pool)
      fail("--gpu-kv-budget caps the KV cache's GPU memory; this model runs on {} (use --device cuda, or "
           "--kv-tier file to keep raw pages in a file)",
           m.ops().describe());
    lay.tier = kv::page_tier::host;
    lay.device_budget = opts.gpu_kv_budget;
    lay.max_raw = c.max_position_embeddings;
  }
  lay.page_summaries = opts.meth == method::quest || opts.meth == method::moba;
  if (!m.on_host() || opts.kv_pool) {
    // The device path: rows in pools on the model's backend, selection on the host from the gist-key tiles.
    const std::string where = m.ops().describe();
    if (lay.tier != kv::page_tier::memory && lay.tier != kv::page_tier::host)
      fail("--kv-tier {} keeps raw pages in host memory or a file; on {} use --kv-tier memory (and "
           "--gpu-kv-budget to hold raw pages off the GPU), or --device cpu for that tier",
           kv::page_tier_name(opts.tier), where);
    if (const std::string why = decode_refusal(m); !why.empty()) fail("this model {}; use --device cpu", why);
    lay.rows_on = &m.ops();
  }
  if (opts.tier == kv::page_tier::drop && opts.meth != method::gist && opts.meth != method::streaming)
    fail("--kv-tier drop frees raw pages that leave the window, so only methods that never look back at them can "
         "run (gist, streaming); {} needs memory or file", method_name(opts.meth));
  cache_ = std::make_unique<kv::kv_cache>(lay);
  gists_done_.assign(lay.gist_levels, 0);
}

session::~session() = default;

step_stats session::take_stats() {
  step_stats out = std::move(stats_);
  out.kv = cache_->bytes();
  if (out.rows > 0) out.attended_tokens /= out.rows;
  stats_ = step_stats();
  return out;
}

int session::push_row(int32_t id, int8_t level) {
  const int p = s_.size();
  if (p > 0 && level < 0) s_.labels.back() = id;
  s_.ids.push_back(id);
  s_.labels.push_back(gist::ignore_label);
  s_.level.push_back(level);
  kv::kv_addr a;
  a.level = level;
  if (level < 0) {
    const int t = raw_done_++, m = t / chunk_;
    if (t % chunk_ == 0) {
      s_.chunk_raw_begin.push_back(p);
      s_.chunk_raw_end.push_back(p);
      s_.chunk_gist_begin.push_back(-1);
    }
    s_.chunk_raw_end[m] = p + 1;
    s_.pos.push_back(t);
    s_.chunk.push_back(m);
    s_.raw_index.push_back(t);
    a.index = t;
  } else {
    const int m = raw_done_ / chunk_ - 1;
    GSA_ASSERT(m >= 0 && raw_done_ % chunk_ == 0, "a gist after an incomplete chunk");
    if (s_.chunk_gist_begin[m] < 0) s_.chunk_gist_begin[m] = p;
    s_.pos.push_back(raw_done_ - 1);
    s_.chunk.push_back(m);
    s_.raw_index.push_back(-1);
    a.index = gists_done_[level]++;
    gist_positions_.push_back(p);
  }
  addr_.push_back(a);
  return p;
}

void session::queue_raw(int32_t id) {
  if (id < 0 || id >= m_.config.vocab_size)
    fail("token id {} is outside the model's vocabulary [0, {})", id, m_.config.vocab_size);
  pending_.push_back({id, -1});
  raw_queued_++;
  if (!uses_gists(opts_.meth) || raw_queued_ % chunk_ != 0) return;
  const int m = raw_queued_ / chunk_ - 1;
  for (int l = 0; l < cfg_->levels() && (m + 1) % gist::chunks_per_unit(*cfg_, l) == 0; l++)
    for (int r = 0; r < cfg_->gists_per_chunk; r++) pending_.push_back({cfg_->gist_token_ids[l], int8_t(l)});
}

void session::append(const std::vector<int32_t>& raw) {
  for (int32_t id : raw) queue_raw(id);
}

void session::resolve_budget() {
  if (budget_ >= 0) return;
  budget_ = opts_.budget >= 0 ? opts_.budget : std::max<int64_t>(1, int64_t(std::floor(raw_done_ / ratio_)));
}

void session::store_kv(int layer, int pos, const float* k, const float* v) {
  const kv::kv_addr a = addr_[pos];
  if (a.level < 0) cache_->append_raw(layer, k, v);
  else cache_->append_gist(layer, a.level, k, v);
}

int64_t session::pool_frames(int64_t raw) const {
  const int64_t P = cache_->layout().page_size;
  int64_t frames = (raw + P - 1) / P + 1;
  if (uses_gists(opts_.meth)) {  // g gists per unit of each level: units of c_0, c_0 c_1, ... raw tokens
    int64_t span = 1;
    for (int l = 0; l < cfg_->levels(); l++) {
      span *= cfg_->chunk[size_t(l)];
      frames += (raw / span * cfg_->gists_per_chunk + P - 1) / P + 1;
    }
  }
  return frames;
}

void session::out_of_memory_for(const out_of_memory& e, int64_t raw) const {
  const model_config& c = m_.config;
  const double gib = 1024.0 * 1024.0 * 1024.0;
  const size_t bytes = dtype_size(m_.ops().act());
  const int64_t P = cache_->layout().page_size, L = c.num_hidden_layers;
  const double kv = double(pool_frames(raw)) * 2 * P * c.num_key_value_heads * c.head_dim * bytes * L;
  const int64_t pass = std::min<int64_t>(int64_t(s_.size()), opts_.prefill_pass > 0 ? opts_.prefill_pass
                                                                                   : default_prefill_pass);
  // A prefill pass holds two layers' activations a row: the residual, norms, q / k / v, attention out, MLP.
  const double per_row = double(4 * c.hidden_size + 2 * c.num_attention_heads * c.head_dim +
                                2 * c.num_key_value_heads * c.head_dim + 3 * c.intermediate_size) * bytes * 2;
  const bool device = !m_.on_host();
  throw out_of_memory(fmt::format(
      "{}\nA context of {} tokens needs about {:.2f} GiB of KV cache on {} ({} layers, K and V of {} KV heads x {}) "
      "and a prefill pass of {} rows about {:.2f} GiB of activations: {}",
      e.what(), raw, kv / gib, m_.ops().describe(), L, c.num_key_value_heads, c.head_dim, pass, double(pass) * per_row / gib,
      device ? (opts_.gpu_kv_budget > 0 ? "lower --gpu-kv-budget (the pages past it live in pinned host memory), "
                                         "lower --prefill-pass, shorten the context, or use --device cpu"
                                       : "add --gpu-kv-budget SIZE to keep the raw pages in pinned host memory, "
                                         "lower --prefill-pass, shorten the context, or use --device cpu")
             : "lower --prefill-pass or shorten the context"));
}

void session::prefill(const std::vector<int32_t>& raw) {
  if (s_.size() > 0 || !pending_.empty()) fail("prefill: the session already holds tokens; use append()");
  if (raw.empty()) fail("the context is empty; give at least one token");
  for (int32_t id : raw) queue_raw(id);
  while (!pending_.empty()) {
    push_row(pending_.front().id, pending_.front().level);
    pending_.pop_front();
  }
  try {
    run_prefill();
  } catch (const out_of_memory& e) {  // say what the context needs and what to change (the session is spent)
    out_of_memory_for(e, int64_t(raw.size()));
  }
}

void session::run_prefill() {
  const int T = s_.size(), L = int(m_.config.num_hidden_layers);
  prefill_unfolded_ = unfold_prefill();
  prefill_plans_.clear();
  const int per_pass = opts_.prefill_pass > 0 ? opts_.prefill_pass : default_prefill_pass;
  std::shared_ptr<const cpu::attn_plan> base;  // the plan of every layer, when they share one
  // The unfolding prefill: the unfold training forward's plans, with the model's own config (not the session's
  // selection overrides), pass by pass (one pass: the whole stream).
  std::unique_ptr<unfold_pass_plans> unfold;
  if (prefill_unfolded_) {
    unfold = std::make_unique<unfold_pass_plans>(m_, *model_cfg_, s_);
    if (opts_.record) prefill_plans_.resize(L);
  } else {
    base = std::make_shared<cpu::attn_plan>(uses_gists(opts_.meth) ? gist::plan_compress(s_, *cfg_)
                                                                   : cpu::plan_causal(T, 0, 64));
    if (opts_.record) prefill_plans_.assign(L, *base);
  }
  const int Hkv = int(m_.config.num_key_value_heads);
  const int Hq = int(m_.config.num_attention_heads), D = int(m_.config.head_dim);
  if (opts_.meth == method::h2o) {  // keep the last queries: the observation window of the first eviction
    h2o_obs_rows_ = std::min(T, 16);
    h2o_obs_q_.resize(size_t(L) * h2o_obs_rows_ * Hq * D);
  }
  // Passes: rows [r0, r1) of the stream each. Up to options.prefill_pass rows, one pass; beyond that the rows are
  // cut at block boundaries of the gist mask (or the causal plan) into passes of at most that many rows (one block
  // at least), which see the earlier passes' keys and values through a contiguous copy per layer (kv_prefix):
  // activation memory is bounded by the pass, not the context. A shared plan is cut into pieces
  // (cpu::plan_blocks); the unfolding prefill selects per pass from the pass's queries and every key before its
  // end (unfold_pass_plans), which is the selection of one pass.
  const cpu::attn_plan& cut = unfold ? unfold->base() : *base;
  std::vector<std::pair<int, int>> blocks;  // the plan blocks of each pass (none: one pass, the whole plan)
  if (T > per_pass)
    for (int b0 = 0, nb = cut.n_blocks(); b0 < nb;) {
      int b1 = b0 + 1;
      while (b1 < nb && cut.block_q[size_t(b1) + 1] - cut.block_q[size_t(b0)] <= per_pass) b1++;
      blocks.emplace_back(b0, b1);
      b0 = b1;
    }
  kv_prefix prefix;
  if (!blocks.empty()) {
    backend& be = m_.ops();
    for (int l = 0; l < L; l++) {
      prefix.k.push_back(be.alloc({T, Hkv, D}, be.act()));
      prefix.v.push_back(be.alloc({T, Hkv, D}, be.act()));
    }
  }
  // forward() keeps every layer's activations for a backward pass; a prefill needs each layer's K and V once.
  // The plan callback of layer l runs when layer l - 1 is complete, so it moves that layer's K/V into the cache
  // and drops its activations there (not its plan: the next layer may share it): the prefill holds two layers'
  // activations at a time instead of every layer's (what lets a long context prefill on the GPU).
  forward_state st;
  int r0 = 0, r1 = T;  // the pass's rows
  auto take_layer = [&](int l) {
    layer_acts& a = st.layers[size_t(l)];
    if (cache_->pooled()) {
      cache_->append_rows(l, std::vector<kv::kv_addr>(addr_.begin() + r0, addr_.begin() + r1), a.k, a.v);
    } else {
      const float* k = a.k.f32();
      const float* v = a.v.f32();
      for (int p = r0; p < r1; p++) store_kv(l, p, k + size_t(p - r0) * Hkv * D, v + size_t(p - r0) * Hkv * D);
    }
    if (opts_.meth == method::h2o && r1 > T - h2o_obs_rows_) {  // the pass's rows among the last h2o_obs_rows_
      const int p0 = std::max(r0, T - h2o_obs_rows_);
      const Tensor q = a.q.slice_rows(p0 - r0, r1 - r0).host(dtype::f32);  // (on the host already: a view)
      std::copy_n(q.f32(), size_t(r1 - p0) * Hq * D,
                  h2o_obs_q_.data() + (size_t(l) * h2o_obs_rows_ + size_t(p0 - (T - h2o_obs_rows_))) * Hq * D);
    }
    for (Tensor* t : {&a.x_in, &a.h_attn, &a.rstd_attn, &a.q, &a.k, &a.v, &a.attn, &a.lse, &a.x_mid, &a.h_mlp,
                      &a.rstd_mlp, &a.gate, &a.up, &a.act})
      *t = Tensor();
  };
  // GSA_TRAIN_PROFILE: the device synchronised around each layer's move into the cache and its plan
  // (prefill.append, prefill.plan; forward() adds the attention's own counters, its plan time including these).
  const bool prof = profile_on();
  auto since = [&](double t0) {
    m_.ops().synchronize();
    return profile_clock_ms() - t0;
  };
  auto take = [&](int l) {
    const double t0 = prof ? since(0) : 0;
    take_layer(l);
    if (prof) profile_add("prefill.append", since(t0));
  };
  const size_t passes = blocks.empty() ? 1 : blocks.size();
  for (size_t i = 0; i < passes; i++) {
    if (!blocks.empty()) {
      r0 = cut.block_q[size_t(blocks[i].first)];
      r1 = cut.block_q[size_t(blocks[i].second)];
    }
    plan_provider pass_plans;
    if (unfold) {
      pass_plans = [this, inner = unfold->pass(r0, r1), r0, whole = blocks.empty()](int layer, const layer_qk& qk) {
        cpu::attn_plan p = inner(layer, qk);
        if (opts_.record) {
          cpu::attn_plan& rec = prefill_plans_[size_t(layer)];
          if (whole) rec = p;
          else append_pass_plan(rec, p.unfold ? expand_row_unfold(p, *p.unfold, r0) : p, r0);
        }
        return p;
      };
    } else if (!blocks.empty()) {
      auto part = std::make_shared<cpu::attn_plan>(cpu::plan_blocks(*base, blocks[i].first, blocks[i].second));
      pass_plans = [part](int, const layer_qk&) { return *part; };
    } else {
      pass_plans = [base](int, const layer_qk&) { return *base; };
    }
    plan_provider stepped = [&](int layer, const layer_qk& qk) {
      if (layer > 0) take(layer - 1);
      const double t0 = prof ? since(0) : 0;
      cpu::attn_plan p = pass_plans(layer, qk);
      if (prof) profile_add("prefill.plan", since(t0));
      return p;
    };
    const std::vector<int32_t> ids(s_.ids.begin() + r0, s_.ids.begin() + r1);
    const std::vector<int32_t> pos(s_.pos.begin() + r0, s_.pos.begin() + r1);
    forward(m_, st, ids, pos, {}, &stepped, blocks.empty() ? nullptr : &prefix);
    take(L - 1);
  }
  row_logits(st.h_final.slice_rows(r1 - r0 - 1, r1 - r0));
  prefill_rows_ = T;
  prefill_passes_ = int(passes);
}

void session::reserve_tokens(int64_t more) {
  if (!cache_->pooled() || more <= 0) return;
  const int64_t raw = int64_t(raw_queued_) + more;  // raw_queued_: computed and queued
  try {
    cache_->reserve_frames(pool_frames(raw));
  } catch (const out_of_memory& e) {  // nothing was lost: the pools keep what they held
    out_of_memory_for(e, raw);
  }
}

void session::extend(const std::vector<int32_t>& raw) {
  if (s_.size() == 0 && pending_.empty()) return prefill(raw);
  if (raw.empty() && pending_.empty()) fail("extend: nothing to compute; give at least one token");
  // Checked before anything is queued, so that a refused extend leaves the session as it was.
  for (int32_t id : raw)
    if (id < 0 || id >= m_.config.vocab_size)
      fail("token id {} is outside the model's vocabulary [0, {})", id, m_.config.vocab_size);
  if (int64_t(raw_queued_) + int64_t(raw.size()) > m_.config.max_position_embeddings)
    fail("{} held and {} new tokens are beyond the model's {} positions; shorten the context or the prompt",
         raw_queued_, raw.size(), m_.config.max_position_embeddings);
  append(raw);
  run_step({this}, {int(pending_.size())});
}

bool session::decode_matches_prefill() const {
  switch (opts_.meth) {
    case method::full:
    case method::gist: return true;
    case method::gsa:   // flat top-k, as the model selects when it does not walk (one level, or unfold_select flat)
    case method::hgsa:  // the walk, as a hierarchy selects with unfold_select walk
      return unfold_prefill() && model_cfg_->select_per_token && opts_.topk < 0 && opts_.budget < 0 &&
             (opts_.meth == method::hgsa) == gist::walks(*model_cfg_);
    default: return false;
  }
}

void session::row_logits(const Tensor& h) {
  backend& be = m_.ops();
  const int64_t V = m_.config.vocab_size;
  logits_.resize(size_t(V));
  if (m_.on_host()) {  // straight into logits_
    Tensor out = Tensor::borrow(logits_.data(), {1, V});
    return be.matmul_forward(out, h, m_.lm_head(), nullptr);
  }
  Tensor out = be.alloc({1, V}, be.act());
  be.matmul_forward(out, h, m_.lm_head(), nullptr);
  Tensor host = out.host(dtype::f32);
  std::copy_n(host.f32(), V, logits_.data());
}

bool session::unfold_prefill() const {
  if (opts_.meth != method::gsa && opts_.meth != method::hgsa) return false;
  const bool want = opts_.prefill == prefill_mode::unfold ||
                    (opts_.prefill == prefill_mode::automatic && model_cfg_->mode == gist::train_mode::unfold);
  // Plans name chunks and gist ranges (O(T k / c) segments per layer), so every context length unfolds.
  return want;
}

void session::fill_random(int n_raw, uint64_t seed) {
  if (s_.size() > 0 || !pending_.empty()) fail("fill_random: the session already holds tokens");
  if (n_raw <= 0) fail("fill_random: the context must hold at least one token");
  if (n_raw >= m_.config.max_position_embeddings)
    fail("a context of {} tokens is beyond the model's {} positions", n_raw, m_.config.max_position_embeddings);
  rng r(seed);
  const int V = int(m_.config.vocab_size), L = int(m_.config.num_hidden_layers);
  const int Hkv = int(m_.config.num_key_value_heads), Hq = int(m_.config.num_attention_heads);
  const int D = int(m_.config.head_dim);
  const int32_t top = uses_gists(opts_.meth) ? *std::min_element(cfg_->gist_token_ids.begin(), cfg_->gist_token_ids.end()) : V;
  for (int i = 0; i < n_raw; i++) queue_raw(int32_t(r.below(uint64_t(std::max(1, top)))));
  while (!pending_.empty()) {
    push_row(pending_.front().id, pending_.front().level);
    pending_.pop_front();
  }
  // Rows are windows into one table of normals at random offsets: random enough for timing, and cheap at 64k.
  const size_t table_n = size_t(1) << 20, row = size_t(Hkv) * D;
  std::vector<float> table(table_n + row);
  for (auto& x : table) x = r.normal();
  if (cache_->pooled()) {
    // A few blocks of rows built on the host once and moved to the pools' backend once; every block of every
    // layer is one of them, picked at random (building and moving every row took minutes at 512k tokens). The
    // pages' bookkeeping (gist tiles, summaries) reads the host copy; the write is one kv_write per block.
    backend& be = m_.ops();
    const int block = 4096, n_blocks = 4;
    struct kv_block {
      Tensor k_host, k, v;
    };
    std::vector<kv_block> blocks;
    for (int b = 0; b < n_blocks; b++) {
      Tensor k({block, Hkv, D}), v({block, Hkv, D});
      for (int i = 0; i < block; i++) {
        std::copy_n(table.data() + r.below(table_n), row, k.f32() + size_t(i) * row);
        std::copy_n(table.data() + r.below(table_n), row, v.f32() + size_t(i) * row);
      }
      blocks.push_back({k, be.upload(k, be.act()), be.upload(v, be.act())});
    }
    for (int l = 0; l < L; l++)
      for (int p0 = 0; p0 < s_.size(); p0 += block) {
        const int n = std::min(block, s_.size() - p0);
        const kv_block& b = blocks[r.below(n_blocks)];
        const std::vector<int64_t> rows =
            cache_->reserve_rows(l, std::vector<kv::kv_addr>(addr_.begin() + p0, addr_.begin() + p0 + n),
                                 b.k_host.slice_rows(0, n));
        be.kv_write(cache_->pool(l), cache_->layout().page_size, rows, b.k.slice_rows(0, n), b.v.slice_rows(0, n));
        cache_->commit_rows(l);
      }
  } else {
    for (int l = 0; l < L; l++)
      for (int p = 0; p < s_.size(); p++)
        store_kv(l, p, table.data() + r.below(table_n), table.data() + r.below(table_n));
  }
  if (opts_.meth == method::h2o) {
    h2o_obs_rows_ = std::min(s_.size(), 16);
    h2o_obs_q_.resize(size_t(L) * h2o_obs_rows_ * Hq * D);
    for (auto& x : h2o_obs_q_) x = r.normal();
  }
  logits_.assign(V, 0.0f);
  prefill_plans_.clear();
  prefill_rows_ = s_.size();
}

std::string decode_refusal(const llama_model& m) {
  const auto& c = m.config;
  const std::string why =
      m.ops().decode_unsupported(int(c.num_attention_heads), int(c.num_key_value_heads), int(c.head_dim));
  if (why.empty()) return why;
  return fmt::format("cannot decode on {}: {} (it has {} query heads, {} KV heads, head dim {})", m.ops().describe(),
                     why, c.num_attention_heads, c.num_key_value_heads, c.head_dim);
}

}  // namespace gsa::infer
