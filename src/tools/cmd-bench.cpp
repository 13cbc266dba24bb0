// `gsa bench attention`: GSA attention forward+backward on CPU against dense causal attention, same kernel and
// head configuration, over lengths; GSA's time should grow about linearly, dense's quadratically. Each plan's
// size (attn_plan::bytes()) is reported beside its time.
// `gsa bench train`: forward+backward tokens/s of a preset model in each training mode.
// Figures only: nothing here passes or fails on time.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <sstream>

#include "backend/cpu/attention.h"
#include "core/error.h"
#include "core/profile.h"
#include "core/rng.h"
#include "gist/plan.h"
#include "gist/stream.h"
#include "model/gsa-plans.h"
#include "model/presets.h"
#include "train/optimizer.h"
#include "train/progress.h"
#include "train/sequence.h"
#include "tools/commands.h"

namespace gsa::tools {

namespace {

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Median of `reps` timings of f (after `warmup` untimed runs).
template <typename F>
double median_ms(int reps, F&& f, int warmup = 1) {
  for (int i = 0; i < warmup; i++) f();
  std::vector<double> t;
  for (int i = 0; i < reps; i++) {
    double t0 = now_ms();
    f();
    t.push_back(now_ms() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void fill(std::vector<float>& v, rng& r) {
  for (auto& x : v) x = r.normal();
}

}  // namespace

void register_bench_attention(CLI::App& app, command_list& cmds) {
  auto* sub = bench_command(app)->add_subcommand(
      "attention", "GSA attention forward+backward vs dense causal attention on CPU (one layer)");
  static std::string lengths = "1k,4k,16k", chunks = "16";
  static int hq = 8, hkv = 2, d = 64, reps = 3, topk = 0, warmup = 1;
  static int64_t max_dense = 16384;
  static bool json = false, unfold = false, forward_only = false;
  sub->add_option("--lengths", lengths, "Stream lengths in raw tokens, e.g. 1k,4k,16k,32k")->capture_default_str();
  sub->add_option("--chunk", chunks, "Chunk sizes per level, e.g. 16 or 16,16 for a gist-of-gist hierarchy (g = 1)")
      ->capture_default_str();
  sub->add_option("--heads", hq, "Query heads")->capture_default_str();
  sub->add_option("--kv-heads", hkv, "Key/value heads")->capture_default_str();
  sub->add_option("--head-dim", d, "Head dimension")->capture_default_str();
  sub->add_option("--reps", reps, "Timed repetitions per cell (median reported)")->capture_default_str();
  sub->add_option("--warmup", warmup, "Untimed runs per cell before the timed ones")->capture_default_str();
  sub->add_option("--max-dense", max_dense, "Skip dense attention above this length (it grows quadratically)")
      ->capture_default_str();
  sub->add_flag("--unfold", unfold, "Also time the unfold plan (each chunk unfolds its top-k chunks)");
  sub->add_option("--topk", topk, "Chunks unfolded per block with --unfold (0: adaptive)")->capture_default_str();
  sub->add_flag("--forward-only", forward_only, "Time the forward pass only (long lengths on few cores)");
  sub->add_flag("--json", json,
                "Print one JSON array of {method, length, ms, pairs_per_query, plan_bytes, backward}");
  cmds.push_back({sub, [] {
                    if (hq % hkv) fail("--heads {} is not a multiple of --kv-heads {}", hq, hkv);
                    if (reps < 1 || warmup < 0)
                      fail("--reps must be >= 1 and --warmup >= 0 (got {} and {})", reps, warmup);
                    auto lens = parse_lengths(lengths, "--lengths");
                    gist::gsa_config cfg;
                    cfg.chunk.clear();
                    for (int64_t c : parse_lengths(chunks, "--chunk")) cfg.chunk.push_back(int(c));
                    for (size_t l = 0; l < cfg.chunk.size(); l++) cfg.gist_token_ids.push_back(int32_t(1 + l));
                    cfg.validate();
                    nlohmann::json records = nlohmann::json::array();
                    if (!json)
                      fmt::print("attention {}, one layer, Hq={} Hkv={} D={}, c={} g=1, local 1, sink 3; "
                                 "median of {}\n{:>8} {:>12} {:>12} {:>12} {:>10} {:>10}\n",
                                 forward_only ? "forward" : "forward+backward", hq, hkv, d, chunks, reps, "length",
                                 "method", "ms", "pairs/query", "vs dense", "plan MiB");
                    for (int64_t n : lens) {
                      std::vector<int32_t> raw(static_cast<size_t>(n), 7);
                      gist::stream s = gist::build_stream(raw.data(), int(n), cfg);
                      const int T = s.size();
                      rng r(1);
                      std::vector<float> q(size_t(T) * hq * d), k(size_t(T) * hkv * d), v(k.size()),
                          out(q.size()), lse(size_t(T) * hq), dout(q.size()), dq(q.size()), dk(k.size()),
                          dv(k.size());
                      fill(q, r), fill(k, r), fill(v, r), fill(dout, r);
                      struct variant {
                        std::string name;
                        cpu::attn_plan plan;
                      };
                      std::vector<variant> vars;
                      if (n <= max_dense) vars.push_back({"dense", cpu::plan_causal(T, 0, 64)});
                      vars.push_back({"gsa-compress", gist::plan_compress(s, cfg)});
                      if (unfold) {
                        gist::gsa_config ucfg = cfg;
                        if (topk > 0) ucfg.select = gist::select_rule::fixed, ucfg.topk = topk;
                        // Unfold selection from the random q/k: the same scoring the model uses.
                        model_config mc;
                        mc.num_attention_heads = hq, mc.num_key_value_heads = hkv, mc.head_dim = d;
                        llama_model m;
                        m.config = mc;
                        ucfg.dense_layers = {};
                        plan_provider p = make_gsa_plans(m, ucfg, s, gist::train_mode::unfold);
                        const Tensor qt = Tensor::borrow(q.data(), {int64_t(T), hq, d});
                        const Tensor kt = Tensor::borrow(k.data(), {int64_t(T), hkv, d});
                        vars.push_back({"gsa-unfold", p(0, layer_qk(qt, kt))});
                      }
                      double dense_ms = 0;  // 0: dense skipped at this length
                      for (auto& var : vars) {
                        double ms = median_ms(reps, [&] {
                          cpu::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), var.plan, T,
                                                 T, 0, hq, hkv, d);
                          if (!forward_only)
                            cpu::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(),
                                                    v.data(), out.data(), lse.data(), var.plan, T, T, 0, hq, hkv, d);
                        }, warmup);
                        if (var.name == "dense") dense_ms = ms;
                        double ppq = double(cpu::attended_pairs(var.plan, hkv, 0)) / hkv / T;
                        const double mib = double(var.plan.bytes()) / (1 << 20);
                        records.push_back({{"method", var.name}, {"length", n}, {"ms", ms},
                                           {"pairs_per_query", ppq}, {"plan_bytes", var.plan.bytes()},
                                           {"backward", !forward_only}});
                        if (!json && dense_ms > 0)
                          fmt::print("{:>8} {:>12} {:>12.2f} {:>12.1f} {:>9.2f}x {:>10.3f}\n", n, var.name, ms, ppq,
                                     dense_ms / ms, mib);
                        else if (!json)
                          fmt::print("{:>8} {:>12} {:>12.2f} {:>12.1f} {:>10} {:>10.3f}\n", n, var.name, ms, ppq, "-",
                                     mib);
                      }
                    }
                    if (json) fmt::print("{}\n", records.dump());
                    else {
                      // Growth per doubling of length: ~2x is linear, ~4x quadratic.
                      fmt::print("growth (time ratio between consecutive lengths / length ratio):\n");
                      for (auto m : {"dense", "gsa-compress", "gsa-unfold"}) {
                        std::vector<std::pair<double, double>> pts;
                        for (auto& rec : records)
                          if (rec["method"] == m) pts.push_back({rec["length"].get<double>(), rec["ms"].get<double>()});
                        if (pts.size() < 2) continue;
                        std::string line;
                        for (size_t i = 1; i < pts.size(); i++)
                          line += fmt::format(" {:.2f}", (pts[i].second / pts[i - 1].second) /
                                                             (pts[i].first / pts[i - 1].first));
                        fmt::print("  {:>12}:{}\n", m, line);
                      }
                    }
                    return 0;
                  }});
}

void register_bench_train(CLI::App& app, command_list& cmds) {
  auto* sub = bench_command(app)->add_subcommand(
      "train", "Training-step tokens/s (forward, backward, AdamW) of a preset model per mode, on the CPU or GPU");
  static std::string preset = "mini", modes = "full,compress,unfold", device_name = "cpu", precision = "bf16";
  static std::string train_chunks = "16", gists = "selected", unfold_select = "walk";
  static int tokens = 2048, reps = 3, batch = 1, route_rows = 256;
  static float route_loss = 0;
  static bool json = false;
  sub->add_option("--preset", preset, "Model preset (random weights)")->capture_default_str();
  sub->add_option("--tokens", tokens, "Raw tokens per sequence")->capture_default_str();
  sub->add_option("--batch", batch, "Sequences per optimizer step")->capture_default_str();
  sub->add_option("--modes", modes, "Comma-separated: full, compress, unfold, suffix-unfold")->capture_default_str();
  sub->add_option("--chunk", train_chunks,
                  "Chunk sizes per level for GSA modes, e.g. 16, or 4,4 for H-GSA (a gist-of-gist hierarchy)")
      ->capture_default_str();
  sub->add_option("--gists", gists, "selected or all: the gists an unfolding row sees (gsa.gists)")
      ->check(CLI::IsMember({"selected", "all"}))
      ->capture_default_str();
  sub->add_option("--unfold-select", unfold_select, "walk or flat: how a hierarchy selects (gsa.unfold_select)")
      ->check(CLI::IsMember({"walk", "flat"}))
      ->capture_default_str();
  sub->add_option("--route-loss", route_loss,
                  "GSA modes: the routing distillation's weight (gsa.route_loss; 0: off), to time its cost")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  sub->add_option("--route-rows", route_rows, "Rows the routing distillation takes per sequence (gsa.route_rows)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--reps", reps, "Timed steps (median reported, after one warm-up step)")->capture_default_str();
  sub->add_option("--device", device_name, "cpu or cuda")->capture_default_str();
  sub->add_option("--precision", precision, "cuda: bf16 or f32")->capture_default_str();
  sub->add_flag("--json", json, "Print one JSON array of {mode, tokens, batch, ms, tokens_per_s, mfu}");
  cmds.push_back({sub, [] {
                    const device dev = parse_device(device_name);
                    backend& be = get_backend(dev, dev == device::cpu ? dtype::f32 : parse_precision(precision));
                    model_config c = model_preset(preset);
                    llama_model host(c);
                    host.init_random(1);
                    llama_model dm = dev == device::cpu ? llama_model() : to_backend(host, be);
                    llama_model& m = dev == device::cpu ? host : dm;
                    llama_weights g = make_grads(m);
                    adamw_optimizer opt(m, &host);
                    gist::gsa_config cfg;
                    cfg.chunk.clear();
                    for (int64_t ch : parse_lengths(train_chunks, "--chunk")) {
                      cfg.gist_token_ids.push_back(int32_t(c.vocab_size - 1 - int64_t(cfg.chunk.size())));
                      cfg.chunk.push_back(int(ch));
                    }
                    cfg.select_per_token = true;
                    cfg.gists_all = gists == "all";
                    cfg.unfold_walk = unfold_select == "walk";
                    cfg.route_loss = route_loss;
                    cfg.route_rows = route_rows;
                    cfg.validate();
                    rng r(2);
                    std::vector<int32_t> raw(static_cast<size_t>(tokens));
                    for (auto& x : raw) x = int32_t(r.below(uint64_t(c.vocab_size - 1)));
                    const double flops_tok = train_flops_per_token(c);  // MFU as the trainer reports it
                    nlohmann::json records = nlohmann::json::array();
                    if (!json)
                      fmt::print("preset {} ({:.1f} M parameters) on {}, {} raw tokens x {}, median of {}\n"
                                 "{:>14} {:>10} {:>12} {:>7}\n",
                                 preset, host.parameter_count() / 1e6, be.describe(), tokens, batch, reps, "mode", "ms",
                                 "tokens/s", "MFU");
                    std::stringstream ss(modes);
                    std::string mode;
                    while (std::getline(ss, mode, ',')) {
                      bool full = mode == "full";
                      gist::train_mode tm = full ? gist::train_mode::compress : gist::train_mode_from_name(mode);
                      gist::stream s = gist::build_stream(raw.data(), tokens, cfg);
                      std::vector<int32_t> ids = full ? raw : s.ids, pos = s.pos, tg = s.labels;
                      if (full) {
                        pos.resize(raw.size());
                        tg.assign(raw.size(), -100);
                        for (size_t i = 0; i < raw.size(); i++) {
                          pos[i] = int32_t(i);
                          if (i + 1 < raw.size()) tg[i] = raw[i + 1];
                        }
                      }
                      train_sequence seq;  // the routing distillation's rows come from the stream
                      if (!full && route_loss > 0) seq.s = s;
                      train_attention_profile() = {};
                      profile_take();
                      int runs = 0;
                      double ms = median_ms(reps, [&] {
                        runs++;
                        zero_grads(g, m.ops());
                        for (int b = 0; b < batch; b++) {
                          plan_provider p = make_gsa_plans(m, cfg, s, tm, s.size() - s.size() / 8);
                          forward_state st;
                          if (!full) prepare_route_specs(m, st, seq, cfg);  // per sequence, as in training
                          forward(m, st, ids, pos, tg, full ? nullptr : &p);
                          backward(m, st, g, 1.0f / float(batch));
                        }
                        opt.step(m, g, 1e-5f);
                        m.ops().synchronize();
                      });
                      const double tps = double(tokens) * batch / (ms / 1000.0);
                      const double mfu = tps * flops_tok / k_peak_bf16_flops;
                      records.push_back({{"mode", mode}, {"tokens", tokens}, {"batch", batch}, {"ms", ms},
                                         {"tokens_per_s", tps}, {"mfu", mfu}, {"device", be.describe()},
                                         {"peak_mib", double(be.peak_bytes()) / 1048576.0},
                                         {"route_loss", full ? 0.0f : route_loss}});
                      if (!json) fmt::print("{:>14} {:>10.1f} {:>12.0f} {:>6.1f}%\n", mode, ms, tps, 100 * mfu);
                      if (attention_profile_on() && runs > 0) {  // per step, every layer and sequence
                        const attention_profile& ap = train_attention_profile();
                        records.back()["profile_ms"] =
                            nlohmann::json{{"plan_and_selection", ap.plan_ms / runs},
                                           {"attention_forward", ap.fwd_ms / runs},
                                           {"attention_backward", ap.bwd_ms / runs}};
                        for (const auto& [name, ms] : profile_take())  // phases inside them (core/profile.h)
                          records.back()["profile_ms"][name] = ms / runs;
                        if (!json)
                          fmt::print("{:>14} plan+selection {:.1f} ms, attention forward {:.1f}, backward {:.1f} "
                                     "(per step, synchronised)\n",
                                     "", ap.plan_ms / runs, ap.fwd_ms / runs, ap.bwd_ms / runs);
                      }
                    }
                    if (json) fmt::print("{}\n", records.dump());
                    return 0;
                  }});
}

}  // namespace gsa::tools
