// `gsa serve --model DIR [--full-model DIR] [--host 127.0.0.1] [--port 8080] [--device cpu|cuda] [--precision
//  bf16|f32] [--method M] [--budget B ...] [--max-sessions N] [--max-spilled N] [--prefill-chunk N] [--max-context T]
//  [--api-key KEY]`:
// the OpenAI-compatible server (docs/serve.md). Gist methods serve --model; the baselines serve --full-model when given
// (as gsa eval). With --device cuda the model moves to the GPU once and every session keeps its KV there (as
// `gsa generate --device cuda`). Runs until SIGINT or SIGTERM.
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <thread>

#include "core/error.h"
#include "serve/http-server.h"
#include "tools/commands.h"
#include "tools/model-device.h"

namespace gsa::tools {

namespace {

int g_stop_pipe[2] = {-1, -1};

void on_signal(int) {
  const char c = 's';
  [[maybe_unused]] auto n = write(g_stop_pipe[1], &c, 1);
}

struct serve_args {
  std::string model, full_model, model_name, host = "127.0.0.1", method = "gsa", tier = "memory", prefill = "auto",
                                             api_key;
  int64_t gpu_kv_budget = 0;
  device_options dev;
  int port = 8080, max_sessions = 8, topk = -1, threads = 64, prefill_chunk = 256;
  std::optional<int> max_spilled;  // default: 4 x max_sessions with the file tier, else 0
  int64_t budget = -1, max_context = 0, max_body = 8 << 20;
  float ratio = 0;
};

int run_serve(serve_args a) {
  if (a.api_key.empty())
    if (const char* k = std::getenv("GSA_API_KEY")) a.api_key = k;
  if (a.max_body < 1024) fail("--max-body {} must be at least 1024 bytes", a.max_body);
  infer::session_options so;
  so.meth = infer::method_from_name(a.method);
  so.budget = a.budget;
  so.topk = a.topk;
  so.ratio = a.ratio;
  so.tier = kv::page_tier_from_name(a.tier);
  so.gpu_kv_budget = a.gpu_kv_budget;
  so.prefill = infer::prefill_mode_from_name(a.prefill);
  const std::string dir = !infer::uses_gists(so.meth) && !a.full_model.empty() ? a.full_model : a.model;
  // On the GPU: the weights move once; the scheduler's probe session below refuses what a GPU session cannot run
  // (--kv-tier file / drop, a shape the decode kernel lacks) with the message `gsa generate` gives.
  llama_model m = model_on_device(load_model(dir), a.dev);
  tokenizer tok = tokenizer::load(dir);
  tok.check_fits_model(m.config.vocab_size, m.config.bos_token_id, m.config.eos_token_id, dir);
  const int64_t positions = m.config.max_position_embeddings;
  if (a.max_context == 0) a.max_context = positions;
  if (a.max_context < 2 || a.max_context > positions)
    fail("--max-context {} must be in 2 .. {} (the model's max_position_embeddings)", a.max_context, positions);
  serve::metrics met;
  serve::scheduler_options sched_o;
  sched_o.session = so;
  sched_o.max_sessions = a.max_sessions;
  // Default: with the file tier, evicted idle sessions go to their files (up to 4 x --max-sessions of them).
  sched_o.max_spilled = a.max_spilled.value_or(so.tier == kv::page_tier::file ? 4 * a.max_sessions : 0);
  sched_o.prefill_chunk = a.prefill_chunk;
  for (int64_t id : m.config.eos_token_id) sched_o.stop_ids.push_back(int32_t(id));
  serve::scheduler sched(m, tok, sched_o, met);
  serve::server_options o;
  o.host = a.host;
  o.port = a.port;
  o.api_key = a.api_key;
  o.model_id = !a.model_name.empty() ? a.model_name : std::filesystem::path(dir).lexically_normal().filename().string();
  if (o.model_id.empty()) o.model_id = std::filesystem::weakly_canonical(dir).filename().string();
  o.max_context = a.max_context;
  o.max_body = size_t(a.max_body);
  o.threads = a.threads;
  o.chat = serve::chat_renderer_from_model_dir(dir);
  serve::http_server http(sched, tok, met, o);
  const int port = http.bind();
  serve::engine eng(sched);
  // SIGINT / SIGTERM may arrive on any thread (OpenBLAS starts its own before main): the handler only writes to a
  // pipe, and this thread stops the server.
  if (pipe(g_stop_pipe) != 0) fail("gsa serve: cannot create a pipe");
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::thread waiter([&] {
    char c = 0;
    while (read(g_stop_pipe[0], &c, 1) < 0 && errno == EINTR) {
    }
    if (c == 's') fmt::print(stderr, "gsa serve: stopping\n");
    http.stop();
  });
  fmt::print("gsa serve: listening on http://{}:{} (model '{}' on {}, method {}, max {} sessions{}, context {} "
             "tokens{}{})\n",
             a.host, port, o.model_id, m.ops().describe(), a.method, a.max_sessions,
             sched_o.max_spilled > 0 ? fmt::format(" + {} spilled", sched_o.max_spilled) : "", a.max_context,
             o.chat ? ", chat template" : ", no chat template", a.api_key.empty() ? "" : ", API key required");
  std::fflush(stdout);
  http.listen();
  // listen() also returns when the socket fails; wake the waiter so that it can be joined.
  const char done = 'd';
  if (write(g_stop_pipe[1], &done, 1) != 1) std::abort();
  waiter.join();
  return 0;
}

}  // namespace

void register_serve(CLI::App& app, command_list& cmds) {
  auto* sub = app.add_subcommand("serve", "OpenAI-compatible HTTP server with continuous batching (docs/serve.md)");
  static serve_args a;
  sub->add_option("--model", a.model, "Model directory (config.json, model.safetensors, tokenizer.json)")->required();
  sub->add_option("--full-model", a.full_model, "Model the baselines (full, streaming, quest, moba, h2o) serve");
  sub->add_option("--model-name", a.model_name, "The id clients send as \"model\" (default: the directory's name)");
  sub->add_option("--host", a.host, "Address to bind (127.0.0.1: this machine only)")->capture_default_str();
  sub->add_option("--port", a.port, "TCP port (0: any free port, printed)")->capture_default_str();
  add_device_options(sub, a.dev);
  sub->add_option("--method", a.method, "gsa|hgsa|full|gist|streaming|quest|moba|h2o")->capture_default_str();
  sub->add_option("--budget", a.budget, "Attended raw KV tokens per step and KV head (default L / r)");
  sub->add_option("--topk", a.topk, "gsa/hgsa: chunks per query head");
  sub->add_option("--ratio", a.ratio, "r for the default budget L / r");
  sub->add_option("--prefill", a.prefill, "gsa/hgsa prompt prefill: auto|gist-mask|unfold")->capture_default_str();
  sub->add_option("--kv-tier", a.tier, "Raw KV pages outside the window: memory|file (spilled to a file per session)")
      ->capture_default_str();
  add_gpu_kv_budget_option(sub, a.gpu_kv_budget);
  sub->add_option("--max-sessions", a.max_sessions,
                  "Sessions held in memory (generating + kept for follow-up turns); beyond it the least recently used "
                  "idle one is spilled (--max-spilled) or dropped")
      ->capture_default_str();
  sub->add_option("--max-spilled", a.max_spilled,
                  "Idle sessions evicted by --max-sessions kept with their KV in a file, read back when a request "
                  "continues one (0: dropped; default 4 x --max-sessions with --kv-tier file, else 0)");
  sub->add_option("--prefill-chunk", a.prefill_chunk,
                  "Prompt rows computed per batched step (chunked prefill: other sessions decode in between); "
                  "0: a prompt in one piece")
      ->capture_default_str();
  sub->add_option("--max-context", a.max_context,
                  "Prompt + completion tokens per request (default: the model's positions)");
  sub->add_option("--max-body", a.max_body, "Largest request body in bytes")->capture_default_str();
  sub->add_option("--threads", a.threads, "HTTP worker threads (each waiting request holds one)")
      ->capture_default_str();
  sub->add_option("--api-key", a.api_key,
                  "Require 'Authorization: Bearer KEY' on every route but /health (or GSA_API_KEY)");
  cmds.push_back({sub, [] { return run_serve(a); }});
}

}  // namespace gsa::tools
