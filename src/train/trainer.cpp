#include "train/trainer.h"

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <memory>

#include <fmt/ranges.h>

#include "core/error.h"
#include "core/json-util.h"
#include "core/log.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "dist/shard.h"
#include "io/atomic-file.h"
#include "train/checkpoint.h"
#include "train/data-parallel.h"
#include "train/loss-plot.h"
#include "train/model-init.h"
#include "train/optimizer.h"
#include "train/progress.h"
#include "train/sequence.h"
#include "train/stop-signal.h"

namespace gsa {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Seeds for the eval's task samples: fixed, and far from anything the training mix draws.
uint64_t eval_seed(int task_index, int k) { return 0x9e3779b97f4a7c15ull ^ (uint64_t(task_index) << 32) ^ uint64_t(k); }

struct run_state {
  const train_options& o;
  llama_model m;   // the host model: what checkpoints are written from (f32)
  llama_model dm;  // its packed twin: on the GPU (--device cuda), or on the CPU in a data-parallel group
  bool packed = false;
  std::unique_ptr<adamw_optimizer> opt;
  bool has_gsa = false;
  gist::gsa_config gcfg;
  const gist::gsa_config* cfg() const { return has_gsa ? &gcfg : nullptr; }
  // The model the steps run on.
  llama_model& model() { return packed ? dm : m; }
  const llama_model& model() const { return packed ? dm : m; }
  // Makes the host model current (the optimizer's master weights) before it is saved. Collective with ZeRO-1.
  void sync_host() {
    if (packed) opt->master_to_host(dm, m);
  }
};

double eval_val_loss(const run_state& r, const std::vector<std::vector<int32_t>>& windows) {
  double sum = 0;
  int64_t n = 0;
  for (auto& w : windows) {
    train_sample x;
    x.source = "text";
    x.raw = w;
    train_sequence q = make_sequence(x, r.cfg(), int(r.o.suffix_tokens));
    forward_state st;
    forward_sequence(r.model(), st, q, r.cfg());
    sum += st.loss_sum;
    n += st.n_valid;
  }
  return n ? sum / double(n) : NAN;
}

// Greedy exact match under teacher forcing: every answer token is the argmax of its position's logits, which is
// what greedy decoding of the answer would produce. GSA runs select per token here whatever the training
// granularity (a per-chunk selection lets the answer's own tokens choose the chunks an earlier answer token
// sees, which generation cannot do); runs trained per chunk also report that inflated figure as
// "exact_train_select" / "token_accuracy_train_select", so the gap shows in the log.
json eval_tasks(const run_state& r, const std::vector<mix_entry>& mix, const task_source& tasks) {
  json out = json::object();
  if (!tasks || r.o.eval_samples <= 0) return out;
  gist::gsa_config per_token = r.gcfg;
  per_token.select_per_token = true;
  std::vector<std::pair<std::string, const gist::gsa_config*>> variants = {{"", r.has_gsa ? &per_token : nullptr}};
  if (r.has_gsa && !r.gcfg.select_per_token && r.gcfg.mode != gist::train_mode::compress)
    variants.emplace_back("_train_select", &r.gcfg);
  // Fraction of the answer tokens that are their position's argmax; 1 when all are.
  auto answer_accuracy = [&](const train_sample& x, const gist::gsa_config* cfg) {
    train_sequence q = make_sequence(x, cfg, int(r.o.suffix_tokens));
    forward_state st;
    forward_sequence(r.model(), st, q, cfg);
    Tensor lg = logits(r.model(), st);
    const int64_t V = lg.dim(1);
    int64_t total = 0, right = 0;
    for (int i = 0; i < st.T; i++) {
      if (q.targets[i] == gist::ignore_label) continue;
      const float* row = lg.f32() + int64_t(i) * V;
      total++;
      right += std::max_element(row, row + V) - row == q.targets[i];
    }
    return total ? double(right) / double(total) : 0.0;
  };
  int ti = 0;
  for (auto& e : mix) {
    if (e.source == "text") continue;
    std::vector<train_sample> samples;  // generated once, scored under each selection
    for (int k = 0; k < r.o.eval_samples; k++) {
      samples.push_back(tasks(e.source, r.o.seq_len, eval_seed(ti, k)));
      auto& x = samples.back();
      if (x.answer_begin >= 0) x.loss_begin = x.answer_begin;  // scored on the answer whatever the training loss
    }
    json res = json::object();
    for (const auto& [suffix, cfg] : variants) {
      double exact = 0, tok_acc = 0;
      for (const auto& x : samples) {
        const double acc = answer_accuracy(x, cfg);
        exact += acc == 1.0;
        tok_acc += acc;
      }
      res["exact" + suffix] = exact / double(samples.size());
      res["token_accuracy" + suffix] = tok_acc / double(samples.size());
    }
    out[e.source] = res;
    ti++;
  }
  return out;
}

// Log records kept in memory for the plot; on resume, records after the checkpoint are dropped (they are
// replayed identically).
struct run_log {
  std::string path;
  std::vector<json> records;
  void load_until(int64_t step) {
    std::ifstream f(path);
    std::string line;
    while (std::getline(f, line)) {
      if (line.empty()) continue;
      try {
        json j = json::parse(line);
        if (j.value("step", int64_t(0)) <= step) records.push_back(j);
      } catch (const json::exception&) {
        break;  // a line cut by the kill: everything before it is kept
      }
    }
    std::string all;
    for (auto& j : records) all += j.dump() + "\n";
    write_file_atomic(path, all);
  }
  void append(const json& j) {
    records.push_back(j);
    std::ofstream f(path, std::ios::app);
    f << j.dump() << "\n";
  }
  void plot(const std::string& file, const std::string& title) const {
    loss_series tr{"train loss", "#1f77b4", {}}, va{"validation loss", "#d62728", {}};
    for (auto& j : records) {
      double s = double(j.value("step", int64_t(0)));
      if (j.contains("loss")) tr.points.emplace_back(s, j["loss"].get<double>());
      if (j.contains("val_loss") && j["val_loss"].is_number()) va.points.emplace_back(s, j["val_loss"].get<double>());
    }
    std::vector<loss_series> v{tr};
    if (!va.points.empty()) v.push_back(va);
    write_loss_plot(file, v, title);
  }
};

json read_json_file(const std::string& path) { return read_json_file_bounded(path, "file"); }

// The folder of the run's tokenizer.json: the first of `dirs` (folders or tokenizer.json paths) that has one.
fs::path find_tokenizer_dir(const std::vector<std::string>& dirs) {
  for (auto& d : dirs) {
    if (d.empty()) continue;
    fs::path src = fs::is_directory(d) ? fs::path(d) : fs::path(d).parent_path();
    if (fs::exists(src / "tokenizer.json")) return src;
  }
  return {};
}

// Copies the tokenizer files into the final model folder; gist rows the run added become named added tokens.
void copy_tokenizer_files(const fs::path& src, const fs::path& dst, const std::vector<int32_t>& added_gist_ids) {
  if (src.empty()) return;
  std::error_code ec;
  for (const char* f : {"tokenizer_config.json", "special_tokens_map.json"})
    if (fs::exists(src / f)) fs::copy_file(src / f, dst / f, fs::copy_options::overwrite_existing, ec);
  if (added_gist_ids.empty()) {  // nothing to name: the file byte for byte
    fs::copy_file(src / "tokenizer.json", dst / "tokenizer.json", fs::copy_options::overwrite_existing, ec);
    if (ec) fail("{}: cannot copy the tokenizer into {}: {}", (src / "tokenizer.json").string(), dst.string(), ec.message());
    return;
  }
  json tok = read_json_file((src / "tokenizer.json").string());
  add_gist_tokens(tok, added_gist_ids);
  write_file_atomic((dst / "tokenizer.json").string(), tok.dump(2) + "\n");
}

}  // namespace

train_result run_training(const train_options& o, const train_hooks& hooks) {
  validate_train_options(o);
  // The data-parallel group, made first: it selects this rank's GPU before the CUDA backend exists.
  std::unique_ptr<dist::communicator> own_comm;
  dist::communicator* comm = hooks.comm;
  if (!comm) {
    const dist::process_group pg = dist::process_group_from_environment();
    if (pg.distributed()) {
      if (o.device != "cuda")
        fail("WORLD_SIZE={} asks for data-parallel training, which runs one process per GPU: add --device cuda",
             pg.world_size);
      own_comm = dist::make_gpu_communicator(pg);
      comm = own_comm.get();
    }
  }
  const int rank = comm ? comm->rank() : 0, world = comm ? comm->size() : 1;
  const bool root = rank == 0;
  if (comm) {
    if (o.grad_accum < world)
      fail("--grad-accum {} is the global batch (sequences per step) and must be at least the number of GPUs ({})",
           o.grad_accum, world);
    if (root) GSA_LOG_INFO("data parallel: {}; {} sequences per step, {} to {} per rank, optimizer state {}",
                           comm->describe(), o.grad_accum, o.grad_accum / world, (o.grad_accum + world - 1) / world,
                           o.zero ? "sharded (ZeRO-1)" : "replicated");
    else if (get_log_level() < log_level::warn) set_log_level(log_level::warn);  // rank 0 speaks for the group
  }
  const auto mix = parse_mix(o.mix);
  bool wants_text = false;
  for (auto& e : mix) wants_text |= e.source == "text" && e.weight > 0;
  data::dataset ds = data::open_dataset(o.data);
  if (ds.train.size() < o.seq_len)
    fail("{}: {} training tokens, fewer than one sequence of seq_len {}", o.data, ds.train.size(), o.seq_len);
  std::error_code ec;
  if (root) fs::create_directories(o.out, ec);
  if (ec) fail("{}: cannot create the output folder: {}", o.out, ec.message());

  run_state r{o, {}, {}, false, nullptr, false, {}};
  const device dev = parse_device(o.device);
  const dtype precision = dev == device::cpu ? dtype::f32 : parse_precision(o.precision);
  backend& be = get_backend(dev, precision);  // fails here, before any work, without a usable GPU
  be.set_deterministic(o.deterministic);
  if (o.deterministic && dev != device::cpu) GSA_LOG_INFO("deterministic: the same bits on every run (slower)");
  const std::vector<std::string> tokenizer_dirs = {
      o.tokenizer, o.model, ds.meta.value("source", json::object()).value("tokenizer", "")};
  std::vector<int32_t> added_gist_ids;  // gist rows this run appended (named in the final tokenizer.json)
  train_result res;
  std::string resume_dir = o.resume ? latest_checkpoint(o.out) : "";
  json trainer_json;
  if (!resume_dir.empty()) {
    trainer_json = load_checkpoint(resume_dir, r.m, r.opt);
    res.resumed_from = trainer_json.at("step").get<int64_t>();
    if (!r.m.config.gsa.is_null()) {
      json g = r.m.config.gsa;
      if (!o.mode.empty()) g["train_mode"] = o.mode;
      r.gcfg = gist::gsa_config_from_json(g);
      r.has_gsa = true;
    }
    GSA_LOG_INFO("resuming from {} (step {})", resume_dir, res.resumed_from);
  } else {
    if (!o.preset.empty()) {
      r.m = llama_model(run_model_config(o.preset, ds.vocab_size, o.model_config));
      r.m.init_random(uint64_t(o.seed), float(o.init_std));
    } else {
      r.m = load_model(o.model);
      if (ds.vocab_size > r.m.config.vocab_size)
        fail("{}: the data's vocabulary ({}) is larger than the model's ({}); prepare the data with the model's "
             "tokenizer", o.data, ds.vocab_size, r.m.config.vocab_size);
    }
    const fs::path tok_dir = find_tokenizer_dir(tokenizer_dirs);
    const json tok = tok_dir.empty() ? json(nullptr) : read_json_file((tok_dir / "tokenizer.json").string());
    bool added = false;
    r.has_gsa = setup_gsa(r.m, o.gsa, o.mode, r.gcfg, tok, &added, o.gist_init == "mean");
    if (added) added_gist_ids = r.gcfg.gist_token_ids;
    // A packed run makes its optimizer below (fresh state: no host copy of m and v, which a 7B model cannot
    // afford per rank).
    if (dev == device::cpu && !comm) r.opt = std::make_unique<adamw_optimizer>(r.m);
  }
  if (const std::string why = be.train_unsupported(int(r.m.config.head_dim)); !why.empty())
    fail("cannot train this model on {}: {}", be.describe(), why);
  if (dev != device::cpu || comm) {
    // The weights move to the GPU once (or are packed on the CPU for the collectives); the checkpoint's
    // optimizer state, when resuming, moves with them.
    r.dm = to_backend(r.m, be);
    r.packed = true;
    auto host_opt = std::move(r.opt);
    optimizer_shard shard;
    if (comm && o.zero == 1) shard = {comm, dist::shard_ranges(r.dm.w.flat.numel(), world)};
    r.opt = std::make_unique<adamw_optimizer>(r.dm, &r.m, shard.comm ? &shard : nullptr);
    if (host_opt) {
      r.opt->load_state(r.dm, host_opt->state(r.m));
      r.opt->step_count = host_opt->step_count;
    }
    GSA_LOG_INFO("training on {}: {:.1f} MiB of weights", be.describe(), double(r.dm.w.flat.nbytes()) / 1048576.0);
  }
  // Say what trains: continuing a full-attention model without "gsa": null silently becoming a GSA run is
  // the mistake this line makes visible.
  if (r.has_gsa)
    GSA_LOG_INFO("{:.2f} M parameters; GSA {}{} (c = {}, g = {}, gist ids {}{})",
                 double(r.m.parameter_count()) / 1e6, gist::train_mode_name(r.gcfg.mode),
                 r.gcfg.mode == gist::train_mode::compress ? ""
                 : r.gcfg.select_per_token                 ? ", selection per token"
                                                           : ", selection per chunk",
                 fmt::join(r.gcfg.chunk, "x"), r.gcfg.gists_per_chunk, fmt::join(r.gcfg.gist_token_ids, ","),
                 added_gist_ids.empty() ? "" : ", new rows");
  else
    GSA_LOG_INFO("{:.2f} M parameters; full attention (no gists)", double(r.m.parameter_count()) / 1e6);
  r.opt->hp.beta1 = float(o.beta1);
  r.opt->hp.beta2 = float(o.beta2);
  r.opt->hp.eps = float(o.adam_eps);
  r.opt->hp.weight_decay = float(o.weight_decay);
  r.opt->max_grad_norm = float(o.grad_clip);

  std::unique_ptr<data::window_loader> loader;
  if (wants_text) loader = std::make_unique<data::window_loader>(ds.train, o.seq_len, uint64_t(o.seed));
  sample_mixer mixer(mix, loader.get(), hooks.tasks, o.seq_len, uint64_t(o.seed) ^ 0x5bd1e995u);
  int64_t step = 0, tokens = 0;
  if (!resume_dir.empty()) {
    step = res.resumed_from;
    tokens = trainer_json.value("tokens", int64_t(0));
    added_gist_ids = trainer_json.value("added_gist_ids", std::vector<int32_t>{});
    mixer.set_state(trainer_json.at("mixer"));
  }
  const auto val_windows = data::fixed_windows(ds.val, o.seq_len, int(o.val_windows));

  run_log log{(fs::path(o.out) / "log.jsonl").string(), {}};
  if (!root) log.path.clear();  // rank 0 writes the log
  else if (!resume_dir.empty()) log.load_until(step);
  else write_file_atomic(log.path, "");
  if (step >= o.steps) {
    // A finished run started again (its last checkpoint is at --steps or past it): nothing to train. The summary
    // reports what the log holds (it used to print "final loss nan, validation loss nan").
    for (const json& j : log.records) {
      if (j.contains("loss") && j["loss"].is_number()) res.last_loss = j["loss"].get<double>();
      if (j.contains("val_loss") && j["val_loss"].is_number()) res.last_val_loss = j["val_loss"].get<double>();
    }
    GSA_LOG_INFO("{} is complete: its checkpoint is at step {} of {}; nothing to train (raise --steps to go on, or "
                 "give another --out for a new run)", o.out, step, o.steps);
  }
  const std::string plot_path = (fs::path(o.out) / "loss.svg").string();
  const std::string title = fmt::format("{} ({})", fs::path(o.out).filename().string(),
                                        r.has_gsa ? std::string("gsa ") + gist::train_mode_name(r.gcfg.mode)
                                                  : std::string("full attention"));
  auto record = [&](const json& j) {
    if (!root) return;
    log.append(j);
    if (hooks.on_record) hooks.on_record(j);
  };
  auto make_trainer_json = [&] {
    return json{{"step", step},
                {"tokens", tokens},
                {"mixer", mixer.state()},
                {"options", train_options_to_json(o)},
                {"added_gist_ids", added_gist_ids}};
  };
  auto evaluate = [&] {
    if (!root) return;  // the others go on to the next step's collectives and wait there
    json j = {{"step", step}};
    double vl = eval_val_loss(r, val_windows);
    j["val_loss"] = std::isfinite(vl) ? json(vl) : json(nullptr);
    json t = eval_tasks(r, mix, hooks.tasks);
    if (!t.empty()) j["tasks"] = t;
    res.last_val_loss = vl;
    record(j);
    log.plot(plot_path, title);
  };

  progress_bar bar(step, o.steps, o.progress);
  if (!root) bar.disable();
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t tokens0 = tokens;
  llama_weights grads = make_grads(r.model());
  const double flops_per_token = train_flops_per_token(r.m.config);
  const bool on_gpu = dev != device::cpu;
  // Replicated optimizer state: gradient buckets all-reduced during the last sequence's backward pass.
  std::unique_ptr<grad_sync> gsync;
  if (comm && o.zero == 0) gsync = std::make_unique<grad_sync>(r.model(), *comm);
  const std::function<void(int)> on_layer = [&](int l) { gsync->on_layer(l); };
  const dist::range mine = dist::batch_slice(o.grad_accum, world, rank);
  // Writes a checkpoint (rank 0; every rank takes part in gathering sharded state).
  auto save = [&] {
    if (!o.save) return;
    if (!root && !r.opt->sharded()) return;
    r.sync_host();
    auto opt_state = r.opt->state(r.model());
    if (root) save_checkpoint(o.out, step, r.m, opt_state, r.opt->step_count, make_trainer_json(),
                              int(o.keep_checkpoints));
    if (root) log.plot(plot_path, title);
  };
  int nan_streak = 0;
  // The routing distillation's per-level, per-layer KL, summed over a step's sequences on the device.
  const bool route_on = r.cfg() && r.cfg()->route_loss > 0;
  const int64_t n_layers = std::max<int64_t>(1, r.model().config.num_hidden_layers);
  const int64_t route_levels = route_on ? gsa::route_levels(*r.cfg()) : 1;
  Tensor route_kl_dev = route_on ? r.model().ops().alloc({route_levels, n_layers}, dtype::f32) : Tensor();
  std::vector<int> route_layers(size_t(route_levels), 0);  // per level: distilling layers (0: no row this step)
  while (step < o.steps) {
    if (hooks.stop_after_steps >= 0 && step >= hooks.stop_after_steps) {
      bar.finish();
      res.step = step;
      return res;  // as if killed: no save
    }
    const float lr = cosine_lr(step, o.warmup, o.steps, float(o.lr), float(o.min_lr_ratio));
    zero_grads(grads, r.model().ops());
    double loss = 0;
    if (route_on) {
      r.model().ops().zero(route_kl_dev);
      std::fill(route_layers.begin(), route_layers.end(), 0);
    }
    if (gsync) gsync->begin_step();
    for (int64_t a = 0; a < o.grad_accum; a++) {
      // Every rank draws every sample (the data order, and so a checkpoint, does not depend on the GPU count)
      // and computes its own slice of them.
      train_sample x = mixer.next();
      tokens += int64_t(x.raw.size());
      if (a < mine.begin || a >= mine.end) continue;
      train_sequence q = make_sequence(x, r.cfg(), int(o.suffix_tokens));
      forward_state st;
      forward_sequence(r.model(), st, q, r.cfg(), route_on ? &route_kl_dev : nullptr);
      const bool overlap = gsync && a == mine.end - 1;
      if (overlap) gsync->set_target(grads);
      if (st.n_valid > 0) backward(r.model(), st, grads, 1.0f / float(o.grad_accum), overlap ? &on_layer : nullptr);
      loss += st.loss() / double(o.grad_accum);
      for (const route_spec& rs : st.route) route_layers[size_t(rs.level)] = rs.layers_on();
    }
    if (gsync) gsync->finish(grads);
    if (comm) loss = comm->sum_host(loss);  // the global batch's loss, the same on every rank
    if (hooks.before_update) hooks.before_update(step + 1, loss);
    double gnorm = 0;
    try {
      if (!std::isfinite(loss))
        throw nonfinite_gradient(fmt::format("the loss is {} at step {}: training diverged; lower the learning rate "
                                             "(or --on-nan skip to drop such batches)", loss, step + 1));
      gnorm = r.opt->step(r.model(), grads, lr);
      nan_streak = 0;
    } catch (const nonfinite_gradient& e) {
      // Nothing was updated. stop: the error reaches the caller and the last checkpoint stays as it is (a
      // checkpoint is only written after a good step). skip: this batch is dropped, the step still counts.
      if (o.on_nan != "skip") throw;
      if (++nan_streak >= 10) fail("{} (10 steps in a row with --on-nan skip)", e.what());
      GSA_LOG_WARN("{}; step skipped (--on-nan skip)", e.what());
      gnorm = std::numeric_limits<double>::quiet_NaN();
      res.skipped_steps++;
    }
    step++;
    res.last_loss = loss;
    bar.update(step, loss, lr, tokens - tokens0, on_gpu ? flops_per_token / k_peak_bf16_flops / world : 0.0);
    if (step % o.log_every == 0 || step == o.steps) {
      double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double tps = el > 0 ? double(tokens - tokens0) / el : 0.0;
      json rec = {{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", gnorm}, {"tokens", tokens},
                  {"tokens_per_s", tps}, {"elapsed_s", el}};
      if (on_gpu) {
        rec["mfu"] = tps * flops_per_token / k_peak_bf16_flops / world;  // per GPU
        rec["gpu_mib"] = double(r.model().ops().peak_bytes()) / 1048576.0;  // rank 0's
      }
      if (comm) rec["gpus"] = world;
      if (route_on) {  // this rank's mean KL of the routing distillation per level (read once here)
        const Tensor kl = route_kl_dev.host(dtype::f32);
        for (int64_t lv = 0; lv < route_levels; lv++) {
          if (route_layers[size_t(lv)] == 0) continue;
          double sum = 0;
          for (int64_t l = 0; l < n_layers; l++) sum += kl.f32()[lv * n_layers + l];
          rec[lv == 0 ? std::string("route_kl") : fmt::format("route_kl_l{}", lv)] =
              sum / route_layers[size_t(lv)] / double(o.grad_accum);
        }
      }
      record(rec);
    }
    // A stop request (SIGTERM / SIGINT, stop-signal.h): every rank stops after the same step; the checkpoint of
    // this step is written at once (no evaluation first: a deadline is near). At the last step the run just ends
    // as usual, without the evaluation.
    int sig = stop_signal();
    const bool stop = comm ? comm->sum_host(sig ? 1.0 : 0.0) > 0 : sig != 0;
    if (stop && step < o.steps) {
      save();
      bar.finish();
      res.step = step;
      res.stopped_by = sig ? sig : SIGTERM;  // (a rank that saw no signal stops for the one that did)
      return res;
    }
    if (!stop && ((o.eval_every > 0 && step % o.eval_every == 0) || step == o.steps)) evaluate();
    if ((o.save_every > 0 && step % o.save_every == 0) || step == o.steps) save();
  }
  bar.finish();
  res.step = step;
  if (!o.save) return res;
  fs::path fin = fs::path(o.out) / "final";
  if (root || r.opt->sharded()) r.sync_host();
  if (root) {
    save_model(r.m, fin.string());
    copy_tokenizer_files(find_tokenizer_dir(tokenizer_dirs), fin, added_gist_ids);
  }
  res.final_dir = fin.string();
  return res;
}

}  // namespace gsa
