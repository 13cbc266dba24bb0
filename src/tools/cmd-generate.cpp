// `gsa generate --model DIR [--context-file F] --prompt TEXT --method M [--ratio R|--topk K|--budget B]
//  [--prefill auto|gist-mask|unfold] [--show-unfolded] [--json]`: prefill the context (under the gist mask, or
// unfolding as the model trained), append the prompt, decode with the chosen method, print the continuation and
// per-step statistics (attended tokens, unfolded chunks, KV bytes, ms per token). --show-unfolded prints the text
// of the chunks each step recalled.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"
#include "infer/generate.h"
#include "tokenizer/tokenizer.h"
#include "tools/commands.h"
#include "tools/model-device.h"

namespace gsa::tools {

namespace {

struct generate_args {
  std::string model, context_file, prompt, method = "gsa", tier = "memory", kv_file, prefill = "auto";
  int64_t gpu_kv_budget = 0;
  float ratio = 0;
  int topk = -1, max_tokens = 64, prefill_pass = 0;
  int64_t budget = -1;
  float temperature = 0, top_p = 1;
  int top_k = 0;
  uint64_t seed = 0;
  std::vector<std::string> stop;
  bool show_unfolded = false, json = false;
  device_options dev;
};

std::string read_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail("--context-file: '{}' is a directory; give a text file", path);
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("--context-file: cannot open '{}'", path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Text of the raw tokens of the chunks (gsa, hgsa) or pages (quest, moba) a step selected, over all layers/heads.
std::vector<std::pair<int, std::string>> recalled(const infer::session& s, const infer::step_stats& st,
                                                  const tokenizer& tok) {
  std::set<int32_t> ids;
  for (const auto& v : st.unfolded) ids.insert(v.begin(), v.end());
  std::vector<std::pair<int, std::string>> out;
  const auto& str = s.stream();
  for (int32_t c : ids) {
    if (c >= str.n_chunks()) continue;
    std::vector<int32_t> raw(str.ids.begin() + str.chunk_raw_begin[c], str.ids.begin() + str.chunk_raw_end[c]);
    out.emplace_back(c, tok.decode(raw));
  }
  return out;
}

int run_generate(const generate_args& a) {
  infer::session_options o;
  o.meth = infer::method_from_name(a.method);
  o.budget = a.budget;
  o.topk = a.topk;
  o.ratio = a.ratio;
  o.tier = kv::page_tier_from_name(a.tier);
  o.kv_file = a.kv_file;
  o.gpu_kv_budget = a.gpu_kv_budget;
  o.prefill = infer::prefill_mode_from_name(a.prefill);
  o.prefill_pass = a.prefill_pass;
  infer::sampling samp{a.temperature, a.top_k, a.top_p, a.seed};
  samp.validate();
  llama_model m = model_on_device(load_model(a.model), a.dev);
  tokenizer tok = tokenizer::load(a.model);
  tok.check_fits_model(m.config.vocab_size, m.config.bos_token_id, m.config.eos_token_id, a.model);
  std::vector<int32_t> ctx, prompt = tok.encode(a.prompt);
  if (!a.context_file.empty()) ctx = tok.encode(read_file(a.context_file), true);
  if (prompt.empty() && ctx.empty()) fail("the prompt is empty (and no --context-file); give some text to continue");
  const int64_t total = int64_t(ctx.size() + prompt.size());
  if (total + a.max_tokens > m.config.max_position_embeddings)
    fail("context ({}) + prompt ({}) + --max-tokens ({}) = {} tokens is beyond the model's {} positions; shorten "
         "the input or lower --max-tokens", ctx.size(), prompt.size(), a.max_tokens, total + a.max_tokens,
         m.config.max_position_embeddings);
  infer::session s(m, o);
  if (!ctx.empty()) {
    s.prefill(ctx);
    s.append(prompt);
  } else {
    s.prefill(prompt);
  }
  infer::generate_options g;
  g.max_tokens = a.max_tokens;
  g.samp = samp;
  for (int64_t id : m.config.eos_token_id) g.stop_ids.push_back(int32_t(id));
  if (!a.stop.empty())
    g.stop = [&](int, const std::vector<int32_t>& ids) {
      const std::string text = tok.decode(ids);
      for (const auto& st : a.stop)
        if (text.find(st) != std::string::npos) return true;
      return false;
    };
  nlohmann::json steps = nlohmann::json::array();
  std::vector<int32_t> so_far;
  int step = 0;
  double ms_sum = 0, att_sum = 0;
  int64_t bytes_sum = 0;
  infer::step_stats last;
  g.on_step = [&](int, const infer::step_stats& st) {
    step++;
    ms_sum += st.ms;
    att_sum += st.attended_tokens;
    bytes_sum += st.bytes_read;
    last = st;
    nlohmann::json j = {{"step", step}, {"rows", st.rows}, {"ms", st.ms}, {"attended_tokens", st.attended_tokens},
                        {"bytes_read", st.bytes_read}, {"kv_resident_bytes", st.kv.resident},
                        {"kv_total_bytes", st.kv.total()}};
    if (a.show_unfolded || a.json) {
      std::set<int32_t> u;
      for (const auto& v : st.unfolded) u.insert(v.begin(), v.end());
      j["unfolded"] = std::vector<int32_t>(u.begin(), u.end());
    }
    if (a.show_unfolded) {
      auto rec = recalled(s, st, tok);
      if (a.json) {
        auto& arr = j["unfolded_text"] = nlohmann::json::array();
        for (auto& [c, t] : rec) arr.push_back({{"chunk", c}, {"text", t}});
      } else {
        fmt::print(stderr, "[step {}] recalled {} chunk(s):", step, rec.size());
        for (auto& [c, t] : rec) fmt::print(stderr, " #{} \"{}\"", c, t);
        fmt::print(stderr, "\n");
      }
    }
    steps.push_back(std::move(j));
  };
  auto out = infer::generate({&s}, g);
  const std::string text = tok.decode(out[0].ids);
  const double ms_tok = step ? ms_sum / step : 0.0;
  if (a.json) {
    nlohmann::json j = {{"method", a.method},
                        {"context_tokens", ctx.size()},
                        {"prompt_tokens", prompt.size()},
                        {"budget", s.budget()},
                        {"text", text},
                        {"ids", out[0].ids},
                        {"finish_reason", out[0].finish_reason},
                        {"ms_per_token", ms_tok},
                        {"steps", steps}};
    fmt::print("{}\n", j.dump());
  } else {
    fmt::print("{}\n", text);
    fmt::print(stderr,
               "[{}] {} context + {} prompt tokens, {} generated ({}), budget {}: {:.2f} ms/token, {:.1f} attended "
               "tokens/step per layer and KV head, {:.1f} KiB read/step, KV resident {:.1f} MiB of {:.1f} MiB\n",
               a.method, ctx.size(), prompt.size(), out[0].ids.size(), out[0].finish_reason, s.budget(), ms_tok,
               step ? att_sum / step : 0.0, step ? bytes_sum / 1024.0 / step : 0.0,
               last.kv.resident / 1048576.0, last.kv.total() / 1048576.0);
  }
  return 0;
}

}  // namespace

void register_generate(CLI::App& app, command_list& cmds) {
  auto* sub = app.add_subcommand("generate", "Continue a prompt (after an optional long context) with GSA or a baseline");
  static generate_args a;
  sub->add_option("--model", a.model, "Model directory (config.json, model.safetensors, tokenizer.json)")->required();
  sub->add_option("--context-file", a.context_file, "Text file prefilled (see --prefill) before the prompt");
  sub->add_option("--prefill", a.prefill,
                  "gsa/hgsa context prefill: auto (unfold for a model trained in unfold mode, else gist-mask), "
                  "gist-mask, unfold")
      ->capture_default_str();
  sub->add_option("--prefill-pass", a.prefill_pass,
                  "Stream rows per forward pass of a context prefill, any method and prefill mode (bounds its "
                  "activation memory; default 65536)")
      ->check(CLI::Range(1, 1 << 30));
  sub->add_option("--prompt", a.prompt, "Text appended after the context (the question)");
  sub->add_option("--method", a.method, "gsa|hgsa|full|gist|streaming|quest|moba|h2o");
  sub->add_option("--ratio", a.ratio, "r for the default budget L / r (default: the model's c/g, or 16)");
  sub->add_option("--topk", a.topk, "gsa/hgsa: chunks per query head (per level for hgsa)");
  sub->add_option("--budget", a.budget, "Attended raw KV tokens per step and KV head (default L / r)");
  sub->add_option("--max-tokens", a.max_tokens, "Tokens to generate");
  sub->add_option("--temperature", a.temperature, "0 = greedy");
  sub->add_option("--top-k", a.top_k, "Sample among the k most likely (0 = all)");
  sub->add_option("--top-p", a.top_p, "Nucleus mass in (0, 1]");
  sub->add_option("--seed", a.seed, "Sampling seed");
  sub->add_option("--stop", a.stop, "Stop when the continuation contains this text (repeatable)");
  sub->add_option("--kv-tier", a.tier, "Raw KV pages outside the window: memory|file|drop");
  sub->add_option("--kv-file", a.kv_file, "Backing file for --kv-tier file (default: a temporary file)");
  add_gpu_kv_budget_option(sub, a.gpu_kv_budget);
  sub->add_flag("--show-unfolded", a.show_unfolded, "Print the text of the chunks each step recalled");
  sub->add_flag("--json", a.json, "One JSON object: text, ids, per-step statistics");
  add_device_options(sub, a.dev);
  cmds.push_back({sub, [] { return run_generate(a); }});
}

}  // namespace gsa::tools
