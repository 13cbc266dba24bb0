// `gsa info DIR [--check]`: configuration, parameter count and memory of a model directory, after validating the
// weights the way loading does (header, offsets, exact file size, every tensor's shape and dtype); --check also
// reads every weight and names the first tensor holding NaN or Inf.
// `gsa forward --model DIR --ids 1,2,3 [--json]`: one forward pass; next-token loss over the ids and the logits.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <sstream>

#include "core/error.h"
#include "gist/config.h"
#include "io/model-dir.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "tools/commands.h"

namespace gsa::tools {

static std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, u++;
  return fmt::format("{:.1f} {}", b, units[u]);
}

static std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      long long v = std::stoll(item, &used);
      if (used != item.size() || v < 0 || v > INT32_MAX) throw std::invalid_argument(item);
      ids.push_back(int32_t(v));  // in range: 4294967297 no longer wraps to id 1
    } catch (const std::exception&) {
      fail("--ids: '{}' is not a token id (an integer from 0 to 2^31 - 1); give a comma-separated list such as 1,2,3",
           item);
    }
  }
  if (ids.empty()) fail("--ids is empty; give a comma-separated list of token ids such as 1,2,3");
  return ids;
}

void register_info(CLI::App& app, command_list& cmds) {
  auto* sub = app.add_subcommand("info", "Print a model's configuration, parameter count and memory");
  static std::string dir;
  static bool check = false;
  sub->add_option("model", dir, "Model directory (Hugging Face format)")->required();
  sub->add_flag("--check", check, "Also read every weight and fail naming the first tensor with NaN or Inf");
  cmds.push_back({sub, [] {
                    model_config c = load_model_config(dir + "/config.json");
                    // A truncated or corrupt model.safetensors fails here, as `gsa forward` would, not later.
                    const safetensors_set w = safetensors_set::open(dir);
                    check_weights(w, c);
                    if (check) check_finite_weights(w, c);
                    int64_t n = parameter_count(c);
                    fmt::print("model        {}\n", dir);
                    fmt::print("architecture {}\n", c.architecture);
                    fmt::print("layers       {}\n", c.num_hidden_layers);
                    fmt::print("hidden       {}  (MLP {})\n", c.hidden_size, c.intermediate_size);
                    fmt::print("heads        {} query, {} key/value (GQA group {}), head dim {}\n",
                               c.num_attention_heads, c.num_key_value_heads,
                               c.num_attention_heads / c.num_key_value_heads, c.head_dim);
                    fmt::print("vocabulary   {}{}\n", c.vocab_size, c.tie_word_embeddings ? " (tied embeddings)" : "");
                    fmt::print("positions    {}  rope theta {}{}\n", c.max_position_embeddings, c.rope_theta,
                               c.rope_scaling.type == rope_scaling_config::kind::llama3 ? " (llama3 scaling)" : "");
                    fmt::print("parameters   {} ({:.2f} M)\n", n, n / 1e6);
                    fmt::print("memory       {} as f32, {} as bf16\n", human_bytes(4.0 * n), human_bytes(2.0 * n));
                    uint64_t bytes = 0;
                    for (auto& f : w.files())
                      for (auto& t : f.tensors()) bytes += t.nbytes;
                    fmt::print("weights      {} file{}, {} tensors, {}: offsets, sizes and shapes valid{}\n",
                               w.files().size(), w.files().size() > 1 ? "s" : "", w.names().size(),
                               human_bytes(double(bytes)), check ? "; every value finite" : "");
                    double kv = 2.0 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim;
                    fmt::print("KV cache     {} per token as f32, {} as bf16\n", human_bytes(4 * kv), human_bytes(2 * kv));
                    if (!c.gsa.is_null()) {
                      gist::gsa_config g = gist::gsa_config_from_json(c.gsa);
                      std::string chunks;
                      for (int x : g.chunk) chunks += (chunks.empty() ? "" : "x") + std::to_string(x);
                      fmt::print("gsa          chunks {} ({} level{}), {} gist{} per chunk, ratio {}x, local {}, sink {}\n",
                                 chunks, g.levels(), g.levels() > 1 ? "s" : "", g.gists_per_chunk,
                                 g.gists_per_chunk > 1 ? "s" : "", g.ratio(), g.local_chunks, g.sink);
                    } else {
                      fmt::print("gsa          none (a plain model: full attention only)\n");
                    }
                    return 0;
                  }});
}

void register_forward(CLI::App& app, command_list& cmds) {
  auto* sub = app.add_subcommand("forward", "Run one forward pass and print the next-token loss and the logits");
  static std::string dir, ids_arg, dump;
  static bool json = false;
  sub->add_option("--model", dir, "Model directory")->required();
  sub->add_option("--ids", ids_arg, "Comma-separated token ids")->required();
  sub->add_flag("--json", json, "Print {\"loss\": x, \"logits\": [[...], ...]}");
  sub->add_option("--dump", dump,
                  "Write input_ids, logits and every named per-layer intermediate (layers.N.q, ...) to this "
                  "safetensors file");
  cmds.push_back({sub, [] {
                    llama_model m = load_model(dir);
                    auto ids = parse_ids(ids_arg);
                    std::vector<int32_t> pos(ids.size()), targets(ids.size(), -100);
                    for (size_t i = 0; i < ids.size(); i++) {
                      pos[i] = int32_t(i);
                      if (i + 1 < ids.size()) targets[i] = ids[i + 1];
                    }
                    forward_state st;
                    forward(m, st, ids, pos, targets, nullptr);
                    Tensor lg = logits(m, st);
                    const int64_t V = lg.dim(1);
                    if (!dump.empty()) {
                      std::vector<std::pair<std::string, Tensor>> out = st.named();
                      Tensor idt({int64_t(ids.size())}, dtype::i32);
                      std::copy(ids.begin(), ids.end(), idt.i32());
                      out.emplace_back("input_ids", idt);
                      out.emplace_back("logits", lg);
                      write_safetensors(dump, out);
                    }
                    if (json) {
                      nlohmann::json out;
                      out["loss"] = ids.size() > 1 ? nlohmann::json(st.loss()) : nlohmann::json(nullptr);
                      auto& rows = out["logits"] = nlohmann::json::array();
                      for (int t = 0; t < st.T; t++)
                        rows.push_back(std::vector<float>(lg.f32() + t * V, lg.f32() + (t + 1) * V));
                      fmt::print("{}\n", out.dump());
                    } else {
                      if (ids.size() > 1)
                        fmt::print("loss {:.6f} over {} next-token predictions\n", st.loss(), st.n_valid);
                      else
                        fmt::print("loss n/a (one token: nothing to predict)\n");
                      for (int t = 0; t < st.T; t++) {
                        const float* row = lg.f32() + t * V;
                        int best = 0;
                        for (int v = 1; v < V; v++)
                          if (row[v] > row[best]) best = v;
                        fmt::print("position {:4d} token {:6d}  argmax next {:6d} (logit {:.4f})\n", t, ids[t], best,
                                   row[best]);
                      }
                    }
                    return 0;
                  }});
}

void register_convert(CLI::App& app, command_list& cmds) {
  auto* sub = app.add_subcommand("convert", "Load a model directory and write it again as gsa writes models (f32 "
                                            "safetensors with HF names, config.json for transformers 4.x and 5.x)");
  static std::string in, out;
  sub->add_option("--model", in, "Input model directory")->required();
  sub->add_option("--out", out, "Output model directory (created)")->required();
  cmds.push_back({sub, [] {
                    llama_model m = load_model(in);
                    save_model(m, out);
                    fmt::print("wrote {} ({} parameters)\n", out, m.parameter_count());
                    return 0;
                  }});
}

}  // namespace gsa::tools
