// `gsa bench decode (--model DIR | --preset small) --context 1k,4k,16k,64k --method gsa,full,... [--json]`:
// per-token decode latency, attended tokens, KV bytes read and achieved bandwidth per method and context
// length. With --preset the weights are random and the cache is filled with random keys and values (no real
// prefill: the output says so); with --model the context is random token ids prefilled for real. Figures only,
// never pass/fail. GB/s counts the weights streamed once per step plus the KV bytes read.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>

#include "core/error.h"
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
  int steps = 8;
  int64_t budget = -1;
  int topk = -1;
  bool json = false;
  device_options dev;
};

// The methods a GPU session runs so far (docs/decode.md): the default list on --device cuda.
constexpr const char* kGpuMethods = "full,gsa,hgsa,gist,streaming,quest,moba";

// The `small` preset: ~40M parameters, a one-level GSA config (c = 16, g = 1), 128k positions.
llama_model preset_model(const std::string& name) {
  if (name != "small") fail("--preset: unknown preset '{}' (available: small)", name);
  model_config c;
  c.architecture = "llama";
  c.vocab_size = 32000;
  c.hidden_size = 512;
  c.intermediate_size = 1536;
  c.num_hidden_layers = 8;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 2;
  c.head_dim = 64;
  c.max_position_embeddings = 131072;
  c.rope_theta = 500000;
  gist::gsa_config g;
  g.chunk = {16, 4};
  g.gist_token_ids = {31999, 31998};
  c.gsa = gist::gsa_config_to_json(g);
  llama_model m(c);
  m.init_random(1, 0.02f);
  return m;
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
  if (a.model.empty() == a.preset.empty()) fail("bench decode: give exactly one of --model DIR or --preset small");
  if (a.steps < 1 || a.steps > 100000) fail("--steps {} must be in 1 .. 100000", a.steps);
  auto lengths = parse_lengths(a.contexts, "--context");
  std::vector<infer::method> methods;
  const bool on_gpu = a.dev.device != "cpu";
  for (auto& n : split(on_gpu && a.methods == bench_args().methods ? kGpuMethods : a.methods))
    methods.push_back(infer::method_from_name(n));
  llama_model m = model_on_device(a.preset.empty() ? load_model(a.model) : preset_model(a.preset), a.dev);
  const bool random_kv = !a.preset.empty();
  int64_t weight_bytes = 0;
  for (auto& [name, t] : m.parameters())
    if (name != "model.embed_tokens.weight" || m.config.tie_word_embeddings) weight_bytes += int64_t(t->nbytes());
  if (!a.json)
    fmt::print("# decode, {} ({:.1f}M parameters), {}, cache {}, {} timed steps per cell\n"
               "{:>10} {:>8} {:>10} {:>10} {:>12} {:>8}\n",
               random_kv ? "preset " + a.preset + ", random weights" : a.model, m.parameter_count() / 1e6,
               m.ops().describe(),
               random_kv ? "filled with random keys and values (no real prefill)" : "prefilled with random tokens",
               a.steps, "method", "context", "ms/token", "attended", "KV bytes", "GB/s");
  nlohmann::json recs = nlohmann::json::array();
  for (int64_t L : lengths) {
    if (L + a.steps + 2 >= m.config.max_position_embeddings)
      fail("--context {} is beyond the model's {} positions", L, m.config.max_position_embeddings);
    for (auto meth : methods) {
      infer::session_options o;
      o.meth = meth;
      o.budget = a.budget;
      o.topk = a.topk;
      infer::session s(m, o);
      if (random_kv) {
        s.fill_random(int(L), 42);
      } else {
        rng r(42);
        std::vector<int32_t> ids(L);
        for (auto& x : ids) x = int32_t(r.below(uint64_t(m.config.vocab_size) / 2));
        s.prefill(ids);
      }
      s.append({1});  // warm-up step (and the budget / H2O set-up)
      infer::run_pending({&s});
      s.take_stats();
      double ms = 0, att = 0;
      int64_t bytes = 0;
      int rows = 0;
      for (int i = 0; i < a.steps; i++) {
        s.append({int32_t(2 + i)});
        infer::run_pending({&s});
        auto st = s.take_stats();
        ms += st.ms;
        att += st.attended_tokens * st.rows;
        bytes += st.bytes_read;
        rows += st.rows;
      }
      const double ms_tok = ms / a.steps, att_tok = att / std::max(1, rows);
      const double bytes_tok = double(bytes) / a.steps;
      const double gbps = (double(weight_bytes) * rows / a.steps + bytes_tok) / (ms_tok * 1e6);
      recs.push_back({{"method", infer::method_name(meth)}, {"context", L}, {"ms_per_token", ms_tok},
                      {"attended_tokens", att_tok}, {"bytes_read", int64_t(bytes_tok)}, {"gb_per_s", gbps},
                      {"budget", s.budget()}, {"kv", random_kv ? "random" : "prefill"}});
      if (!a.json)
        fmt::print("{:>10} {:>8} {:>10.2f} {:>10.0f} {:>12} {:>8.2f}\n", infer::method_name(meth), L, ms_tok,
                   att_tok, int64_t(bytes_tok), gbps);
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
  sub->add_option("--preset", a.preset, "Random weights of a named size (small: ~40M parameters)");
  sub->add_option("--context", a.contexts, "Context lengths, e.g. 1k,4k,16k,64k");
  sub->add_option("--method", a.methods, "Comma-separated methods");
  sub->add_option("--steps", a.steps, "Timed decode steps per cell");
  sub->add_option("--budget", a.budget, "Attended raw KV tokens per step and KV head (default L / r)");
  sub->add_option("--topk", a.topk, "gsa/hgsa: chunks per query head");
  sub->add_flag("--json", a.json, "One JSON array of records");
  add_device_options(sub, a.dev);
  cmds.push_back({sub, [] { return run_bench(a); }});
}

}  // namespace gsa::tools
