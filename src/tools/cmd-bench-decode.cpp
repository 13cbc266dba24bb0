// `gsa bench decode (--model DIR | --preset small|llama1b) --context 1k,4k,16k,64k --method gsa,full,... [--batch B]
// [--json]`: per-token decode latency, attended tokens, KV bytes read and achieved bandwidth per method and context
// length. With --preset the weights are random and the cache is filled with random keys and values (no real
// prefill: the output says so) unless --prefill; with --model (or --prefill) the context is random token ids
// prefilled for real, and the prefill's tokens/s is reported too (the first session's). --batch B decodes
// B sessions of that context together (one batched step per token, as gsa serve). Budget L / r: --ratio r (16
// with --preset, else the model's ratio), --budget or --topk. Figures only, never pass/fail.
// GB/s counts the weights streamed once per batched step plus the KV bytes read. A cell that runs out of memory is
// reported as skipped and the others still run.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <new>

#include "core/error.h"
#include "core/profile.h"
#include "core/rng.h"
#include "gist/config.h"
#include "infer/session.h"
#include "tools/commands.h"
#include "tools/model-device.h"

namespace gsa::tools {

namespace {

struct bench_args {
  std::string model, preset, contexts = "1k,4k,16k,64k";
  std::string methods = "full,gsa,hgsa,gist,streaming,quest,moba,h2o";
  int steps = 8, batch = 1, prefill_pass = 0;
  int64_t budget = -1;
  int topk = -1;
  float ratio = 0;
  std::string chunks;
  int64_t gpu_kv_budget = 0;
  bool json = false;
  bool prefill = false;  // a preset's context prefilled for real (timed) instead of random K/V
  std::string prefill_mode = "auto";  // gsa / hgsa: gist-mask or unfold (the presets train nothing: auto = gist-mask)
  device_options dev;
};

// Random-weight presets, each with a GSA config of chunks {16, 4} (or --chunks; gsa uses level 0, hgsa every
// level; g = 1; per-row selection, so an unfolding prefill selects as the recipes' models do) and the gist ids at
// the top of the vocabulary:
//  * small: ~60M parameters (8 x 512, 8/2 heads of 64, MLP 1536, vocab 32000), 128k positions;
//  * llama1b: the Llama-3.2-1B shape (16 x 2048, 32/8 heads of 64, MLP 8192, vocab 128256, tied embeddings, rope
//    theta 500000; ~1.24B parameters), 2M + 64k positions, so that contexts up to 2M run where memory permits (a
//    cell that does not fit is skipped with the allocator's message). scripts/bench-hf-decode.py compares it with
//    transformers.
llama_model preset_model(const std::string& name, const std::vector<int>& chunks) {
  model_config c;
  c.architecture = "llama";
  c.head_dim = 64;
  c.rope_theta = 500000;
  if (name == "small") {
    c.vocab_size = 32000;
    c.hidden_size = 512;
    c.intermediate_size = 1536;
    c.num_hidden_layers = 8;
    c.num_attention_heads = 8;
    c.num_key_value_heads = 2;
    c.max_position_embeddings = 131072;
  } else if (name == "llama1b") {
    c.vocab_size = 128256;
    c.hidden_size = 2048;
    c.intermediate_size = 8192;
    c.num_hidden_layers = 16;
    c.num_attention_heads = 32;
    c.num_key_value_heads = 8;
    c.max_position_embeddings = (int64_t(2) << 20) + 65536;
    c.tie_word_embeddings = true;
  } else {
    fail("--preset: unknown preset '{}' (available: small, llama1b)", name);
  }
  gist::gsa_config g;
  g.chunk = chunks.empty() ? std::vector<int>{16, 4} : chunks;
  g.select_per_token = true;  // --prefill-mode unfold selects per row, as the recipes train (train_select token)
  for (size_t l = 0; l < g.chunk.size(); l++) g.gist_token_ids.push_back(int32_t(c.vocab_size - 1 - int64_t(l)));
  c.gsa = gist::gsa_config_to_json(g);
  llama_model m(c);
  m.init_random(1, 0.02f);
  return m;
}

// Whether e says that memory ran out (the GPU allocator's error, or the host's bad_alloc): such a cell is skipped.
bool out_of_memory(const std::exception& e) {
  if (dynamic_cast<const std::bad_alloc*>(&e)) return true;
  const std::string w = e.what();
  return w.find("out of GPU memory") != std::string::npos || w.find("out of memory") != std::string::npos;
}

struct cell {
  double ms_tok = 0, att_tok = 0, bytes_tok = 0, weight_passes = 0, gib = 0, pinned_gib = 0;
  double prefill_ms = 0;  // the first session's prefill, synchronised (0: random K/V)
  int prefill_passes = 0;  // its forward passes (--prefill-pass)
  bool prefill_unfolded = false;  // every row unfolded (--prefill-mode)
  std::map<std::string, double> prefill_profile;  // GSA_TRAIN_PROFILE: its phases, ms (the device synchronised)
  int64_t budget = -1;
};

// B sessions of method meth, each with a context of L tokens, decoded together for `steps` timed steps after a
// warm-up of one chunk plus one token.
cell run_cell(const llama_model& m, infer::method meth, int64_t L, bool random_kv, const bench_args& a) {
  std::vector<std::unique_ptr<infer::session>> ss;
  std::vector<infer::session*> batch;
  double prefill_ms = 0;
  std::map<std::string, double> prefill_profile;
  for (int b = 0; b < a.batch; b++) {
    infer::session_options o;
    o.meth = meth;
    o.track_unfolded = false;  // what a server does for a request that does not ask for its statistics
    o.budget = a.budget;
    o.topk = a.topk;
    o.ratio = a.ratio > 0 ? a.ratio : a.preset.empty() ? 0.0f : 16.0f;  // presets: L / 16, as every table so far
    o.gpu_kv_budget = a.gpu_kv_budget;
    o.prefill_pass = a.prefill_pass;
    o.prefill = infer::prefill_mode_from_name(a.prefill_mode);
    ss.push_back(std::make_unique<infer::session>(m, o));
    infer::session& s = *ss.back();
    if (random_kv) {
      s.fill_random(int(L), 42 + uint64_t(b));
    } else {
      rng r(42 + uint64_t(b));
      std::vector<int32_t> ids(L);
      for (auto& x : ids) x = int32_t(r.below(uint64_t(m.config.vocab_size) / 2));
      if (b == 0 && profile_on()) {  // counters of this prefill only
        train_attention_profile() = {};
        profile_take();
      }
      const auto t0 = std::chrono::steady_clock::now();
      s.prefill(ids);
      m.ops().synchronize();
      if (b == 0) {
        prefill_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        if (profile_on()) {
          prefill_profile = profile_take();
          prefill_profile["attention.forward"] = train_attention_profile().fwd_ms;
          prefill_profile["attention.plan"] = train_attention_profile().plan_ms;  // prefill.* included
        }
      }
    }
    batch.push_back(&s);
  }
  // Warm-up: one chunk and one more token (the budget / H2O set-up, and the first gist insertion, whose page may
  // grow the GPU pool: a one-time doubling, ~100 ms at 128k on the 1B shape, that a short timed window would
  // otherwise spread over a few steps).
  for (int w = 0; w <= batch[0]->unit_tokens(); w++) {
    for (auto* s : batch) s->append({1});
    infer::run_pending(batch);
  }
  for (auto* s : batch) s->take_stats();
  cell c;
  double ms = 0, att = 0;
  int64_t bytes = 0;
  int rows = 0, rows0 = 0;
  for (int i = 0; i < a.steps; i++) {
    for (auto* s : batch) s->append({int32_t(2 + i)});
    infer::run_pending(batch);
    for (size_t b = 0; b < batch.size(); b++) {
      auto st = batch[b]->take_stats();
      if (b == 0) {
        ms += st.ms;  // the wall time of the batched steps, the same for every session of the batch
        rows0 += st.rows;
      }
      att += st.attended_tokens * st.rows;
      bytes += st.bytes_read;
      rows += st.rows;
    }
  }
  c.ms_tok = ms / a.steps;
  c.att_tok = att / std::max(1, rows);
  c.bytes_tok = double(bytes) / a.steps;
  c.weight_passes = double(rows0) / a.steps;  // batched steps per token: 1, more when gists are inserted
  c.gib = double(m.ops().bytes_in_use()) / double(1 << 30);
  c.pinned_gib = double(batch[0]->cache().bytes().pinned) * a.batch / double(1 << 30);
  c.budget = batch[0]->budget();
  c.prefill_ms = prefill_ms;
  c.prefill_passes = batch[0]->prefill_passes();
  c.prefill_unfolded = batch[0]->prefill_unfolded();
  c.prefill_profile = std::move(prefill_profile);
  return c;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t a = 0;
  while (a <= s.size()) {
    size_t b = s.find(',', a);
    if (b == std::string::npos) b = s.size();
    if (b > a) out.push_back(s.substr(a, b - a));
    a = b + 1;
  }
  return out;
}

int run_bench(const bench_args& a) {
  if (a.model.empty() == a.preset.empty())
    fail("bench decode: give exactly one of --model DIR or --preset small|llama1b");
  if (a.steps < 1 || a.steps > 100000) fail("--steps {} must be in 1 .. 100000", a.steps);
  if (a.batch < 1 || a.batch > 1024) fail("--batch {} must be in 1 .. 1024", a.batch);
  auto lengths = parse_lengths(a.contexts, "--context");
  std::vector<infer::method> methods;
  for (auto& n : split(a.methods))
    methods.push_back(infer::method_from_name(n));
  std::vector<int> chunks;
  if (!a.chunks.empty()) {
    if (a.preset.empty()) fail("--chunks sets a preset's gist hierarchy; a --model has its own");
    for (int64_t c : parse_lengths(a.chunks, "--chunks")) {
      if (c < 2 || c > 512) fail("--chunks: {} is not a chunk size in 2 .. 512", c);
      chunks.push_back(int(c));
    }
    if (chunks.size() > 8) fail("--chunks: at most 8 levels");
  }
  llama_model m =
      model_on_device(a.preset.empty() ? load_model(a.model) : preset_model(a.preset, chunks), a.dev);
  const bool random_kv = !a.preset.empty() && !a.prefill;
  int64_t weight_bytes = 0;
  for (auto& [name, t] : m.parameters())
    if (name != "model.embed_tokens.weight" || m.config.tie_word_embeddings) weight_bytes += int64_t(t->nbytes());
  if (!a.json)
    fmt::print("# decode, {} ({:.1f}M parameters), {}, batch {}, cache {}, {} timed steps per cell\n"
               "{:>10} {:>8} {:>10} {:>10} {:>12} {:>8} {:>8} {:>12}\n",
               !a.preset.empty() ? "preset " + a.preset + ", random weights" : a.model, m.parameter_count() / 1e6,
               m.ops().describe(), a.batch,
               random_kv ? "filled with random keys and values (no real prefill)" : "prefilled with random tokens",
               a.steps, "method", "context", "ms/token", "attended", "KV bytes", "GB/s", "GiB",
               random_kv ? "" : "prefill t/s");
  nlohmann::json recs = nlohmann::json::array();
  for (int64_t L : lengths) {
    if (L + a.steps + 514 >= m.config.max_position_embeddings)  // + the warm-up chunk (chunks up to 512)
      fail("--context {} is beyond the model's {} positions", L, m.config.max_position_embeddings);
    for (auto meth : methods) {
      cell c;
      try {
        c = run_cell(m, meth, L, random_kv, a);
      } catch (const std::exception& e) {
        if (!out_of_memory(e)) throw;
        // The sessions are freed by now; the next (smaller or cheaper) cell may fit.
        recs.push_back({{"method", infer::method_name(meth)}, {"context", L}, {"batch", a.batch},
                        {"skipped", std::string("out of memory: ") + e.what()}});
        if (!a.json)
          fmt::print("{:>10} {:>8} skipped, out of memory: {}\n", infer::method_name(meth), L, e.what());
        std::fflush(stdout);
        continue;
      }
      const double gbps = (double(weight_bytes) * c.weight_passes + c.bytes_tok) / (c.ms_tok * 1e6);
      recs.push_back({{"method", infer::method_name(meth)}, {"context", L}, {"batch", a.batch},
                      {"ms_per_token", c.ms_tok}, {"tokens_per_s", a.batch * 1000.0 / c.ms_tok},
                      {"attended_tokens", c.att_tok}, {"bytes_read", int64_t(c.bytes_tok)},
                      {"weight_bytes", weight_bytes}, {"weight_passes", c.weight_passes}, {"gb_per_s", gbps},
                      {"gpu_mem_gib", c.gib}, {"pinned_gib", c.pinned_gib}, {"budget", c.budget},
                      {"gpu_kv_budget", a.gpu_kv_budget},
                      {"chunks", a.preset.empty() ? "" : a.chunks.empty() ? "16,4" : a.chunks}, {"kv", random_kv ? "random" : "prefill"},
                      {"graphs", m.ops().records()}});
      if (!random_kv) {
        recs.back()["prefill_ms"] = c.prefill_ms;
        recs.back()["prefill_tokens_per_s"] = c.prefill_ms > 0 ? double(L) * 1000.0 / c.prefill_ms : 0.0;
        recs.back()["prefill_passes"] = c.prefill_passes;
        recs.back()["prefill_unfolded"] = c.prefill_unfolded;
        if (!c.prefill_profile.empty()) recs.back()["prefill_profile_ms"] = c.prefill_profile;
      }
      if (!a.json)
        fmt::print("{:>10} {:>8} {:>10.2f} {:>10.0f} {:>12} {:>8.2f} {:>8.2f} {:>12}\n", infer::method_name(meth), L,
                   c.ms_tok, c.att_tok, int64_t(c.bytes_tok), gbps, c.gib,
                   random_kv ? "" : fmt::format("{:.0f}", double(L) * 1000.0 / std::max(1e-9, c.prefill_ms)));
      if (!a.json && !c.prefill_profile.empty()) {
        std::string line = fmt::format("{:>10} prefill {:.1f} ms, {} pass(es):", "", c.prefill_ms, c.prefill_passes);
        for (const auto& [name, ms] : c.prefill_profile) line += fmt::format(" {} {:.1f}", name, ms);
        fmt::print("{}\n", line);
      }
      std::fflush(stdout);
    }
  }
  if (a.json) fmt::print("{}\n", recs.dump());
  return 0;
}

}  // namespace

void register_bench_decode(CLI::App& app, command_list& cmds) {
  auto* sub = bench_command(app)->add_subcommand("decode", "Decode latency per method and context length");
  static bench_args a;
  sub->add_option("--model", a.model, "Model directory");
  sub->add_option("--preset", a.preset,
                  "Random weights of a named size (small: ~60M parameters; llama1b: the Llama-3.2-1B shape)");
  sub->add_option("--context", a.contexts, "Context lengths, e.g. 1k,4k,16k,64k");
  sub->add_option("--method", a.methods, "Comma-separated methods");
  sub->add_option("--steps", a.steps, "Timed decode steps per cell");
  sub->add_option("--batch", a.batch, "Sessions of each context decoded together (one batched step per token)");
  sub->add_option("--budget", a.budget, "Attended raw KV tokens per step and KV head (default L / r)");
  sub->add_option("--topk", a.topk, "gsa/hgsa: chunks per query head");
  sub->add_option("--ratio", a.ratio,
                  "Budget L / r for every method, the adaptive gsa / hgsa rule included (default: 16 with --preset, "
                  "else the model's ratio, c_0 c_1 ... / g)")
      ->check(CLI::Range(1.0, 1e6));
  sub->add_option("--chunks", a.chunks,
                  "--preset only: the gist hierarchy's chunk sizes, level 0 first (default 16,4; e.g. 16,4,4,4 "
                  "gives hgsa four levels)");
  add_gpu_kv_budget_option(sub, a.gpu_kv_budget);
  sub->add_flag("--json", a.json, "One JSON array of records");
  sub->add_flag("--prefill", a.prefill,
                "With --preset: prefill the context (random token ids) for real and report its tokens/s, instead of "
                "filling the cache with random keys and values");
  sub->add_option("--prefill-mode", a.prefill_mode,
                  "With --prefill, gsa / hgsa: auto (the presets' models are not trained: the gist mask), "
                  "gist-mask, unfold (every row selects its own chunks and unfolds them, as a model trained with "
                  "train_select token prefills)")
      ->check(CLI::IsMember({"auto", "gist-mask", "unfold"}))
      ->capture_default_str();
  sub->add_option("--prefill-pass", a.prefill_pass,
                  "With --prefill: stream rows per forward pass of the prefill, any method and prefill mode "
                  "(bounds its activation memory; default 65536)")
      ->check(CLI::Range(1, 1 << 30));
  add_device_options(sub, a.dev);
  cmds.push_back({sub, [] { return run_bench(a); }});
}

}  // namespace gsa::tools
