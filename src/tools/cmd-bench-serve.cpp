// `gsa bench serve --model DIR [--clients 32] [--requests 20] [--max-sessions 32] [--kv-tier memory|file]
// [--max-spilled N] [--prefill-chunk N] [--long-prompt WORDS] [--shared-prefix WORDS] [--chat] [--check]
// [--device cpu|cuda] [--precision bf16|f32]`: a bounded
// load test of the server on loopback (issue 13 item 5). The server (scheduler, engine, HTTP) runs in this process on a
// free port; `clients` threads each send `requests` completions one after another (prompt lengths, max_tokens and
// streaming mixed, sampled with per-request seeds) through cpp-httplib's client. With --chat each client holds a
// conversation: a turn's prompt is the previous prompt + its completion + new words, and every third turn instead edits
// the previous prompt (its last words replaced), so turns continue a held session whole or cut back; the output counts
// both, and spilled, dropped and restored sessions. --shared-prefix puts the same text (a system prompt) before every
// prompt of the plain mix, so that requests share a prefix with held sessions shorter than what they add. With
// --long-prompt one more client sends `requests` prompts of that many words (4 tokens each, no reuse) one after another
// while the others run, so that their time to first token and inter-token latency show what a long prefill costs them
// (--prefill-chunk: in pieces or not). Prints failures, p50 / p99 request latency, time to first token (the whole
// response for a request that is not streamed), and for the streamed requests their first token and inter-token latency
// (the gaps between their chunks), generated tokens/s and resident memory before the load, at its end and after the
// idle sessions are dropped; then the same figures for the first requests of the mix run one at a time through
// infer::generate alone (what `gsa generate` does), for comparison. Figures, never pass/fail on time; --check exits 1
// when a request failed or memory did not come back after the idle sessions were dropped (the limits below), in
// every round of the same load (kCheckRounds says why a round may be repeated).
#include <fmt/format.h>
#include <httplib.h>
#include <malloc.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "serve/http-server.h"
#include "tools/commands.h"
#include "tools/model-device.h"

namespace gsa::tools {

namespace {

using clock_type = std::chrono::steady_clock;

struct bench_serve_args {
  std::string model, method = "gsa";
  int clients = 32, requests = 20, max_sessions = 32, alone = 32;
  std::string tier = "memory";
  std::optional<int> max_spilled;  // as gsa serve: default 4 x max_sessions with the file tier, else 0
  int prefill_chunk = 256;         // as gsa serve
  int long_prompt = 0;             // words of the background client's prompts (0: no such client)
  int shared_prefix = 0;           // words every prompt of the plain mix starts with (a system prompt)
  int64_t simulate_leak = 0;       // bytes every request leaves allocated (a test that --check trips on a leak)
  int64_t simulate_fill = 0;       // bytes the load's first request allocates and keeps (a cache that fills once)
  bool check = false, chat = false;
  device_options dev;              // as gsa serve: --device cuda serves from the GPU
};

// What --check allows after the idle sessions are dropped, against the level before the load:
//  * heap in use (mallinfo2: bytes malloc'ed and not freed, every arena, mmapped chunks included) may grow by
//    kHeapSlack. It does not see allocator fragmentation, so it is steady: on the demo model it grew by 0.08 to
//    0.16 MiB over 4 to 48 requests (caches that fill once; sublinear), while a held session's KV is ~0.5 MiB on
//    average (`KV per idle session` in the output). A leak of one session's KV per request over ctest's 12
//    requests is ~6 MiB, six times the slack; so is a leak of 256 KiB per request, half an average session's
//    KV (3 MiB; ctest serve.bench_small_leak simulates it and must fail).
//  * resident memory (after malloc_trim) may grow by max(10%, kRssSlack). On a base of ~24 MiB, freed KV pages
//    leave allocator fragmentation of -2.3 to +3.0 MiB between runs of the same load (25 runs of ctest's
//    load), which is what made a bare 10% (2.4 MiB) flaky. The heap check above catches leaks of the heap; this
//    one what the heap does not count: mappings (a KV page file left mapped), thread stacks.
//  * device memory in use (--device cuda: gsa's GPU allocator, blocks handed out and not released; its cache of
//    free blocks does not count) may grow by kHeapSlack too. The heap does not see a GPU session's K/V pools, so
//    without it a leaked GPU session would go unnoticed.
// A server may also fill something once, in the load and not in the warm-up: on the GPU (a gpu20m model on the
// H200) the heap grew by 1.23 MiB over 256 requests and by 1.28 MiB over 32, a fixed amount where a leak grows
// with the request count (host-side caches of the GPU path grow with the shapes and sizes seen: the cuBLASLt plans
// per matmul shape of backend/cuda/matmul.cpp, the GPU allocator's block lists). So when a round of the load ends
// beyond a limit, --check runs the same load again (kCheckRounds rounds at most) and passes when one round ends
// within every limit: what fills once grows less in each round (the same prompts, the same shapes), while a leak
// grows by the same amount in every round, so it fails every round as it failed the first (a leak of L bytes per
// request fails when the load's requests x L exceeds a limit, whichever the round).
constexpr int64_t kHeapSlack = int64_t(1) << 20;
constexpr int64_t kRssSlack = int64_t(6) << 20;
constexpr int kCheckRounds = 3;

// What --check measures before and after a round (the idle sessions dropped).
struct memory_level {
  int64_t heap = 0, rss = 0, device = 0;
};

// Resident memory after handing free heap pages back (the same at every measurement, so that allocator slack left
// by whichever thread freed last does not count as growth).
int64_t rss_bytes() {
  malloc_trim(0);
  std::ifstream f("/proc/self/statm");
  int64_t size = 0, resident = 0;
  f >> size >> resident;
  return resident * int64_t(sysconf(_SC_PAGESIZE));
}

// Heap bytes in use (malloc'ed and not freed, every arena, mmapped chunks included).
int64_t heap_bytes() {
  const struct mallinfo2 mi = mallinfo2();
  return int64_t(mi.uordblks + mi.hblkhd);
}

// Request i of client c: a prompt of mixed length, a mixed completion length, every third one streamed.
struct mix_item {
  std::string prompt;
  int max_tokens;
  bool stream;
  uint64_t seed;
  bool reuse = true;  // false: "gsa": {"reuse": false}
};

mix_item mix(int c, int i) {
  static const char* words[] = {"the",  "river", "was",  "quiet", "and",   "a",
                                "bird", "sang",  "over", "old",   "stone", "bridge"};
  static const int prompt_words[] = {8, 40, 150, 400};
  static const int max_tokens[] = {8, 24, 48};
  const int k = c * 131 + i * 17;
  mix_item m;
  for (int w = 0; w < prompt_words[k % 4]; w++) m.prompt += std::string(w ? " " : "") + words[(k + w * 7) % 12];
  m.max_tokens = max_tokens[(k / 4) % 3];
  m.stream = (c + i) % 3 == 0;
  m.seed = uint64_t(c) * 1000 + uint64_t(i);
  return m;
}

// n words of a longer cycle than the mix's (its prompts start differently for each salt).
std::string long_text(int n, int salt) {
  static const char* words[] = {"a",    "long", "letter", "about", "the",  "harbour", "its", "ships",
                                "came", "in",   "at",     "dawn",  "with", "salt",    "cod", "and",
                                "news", "from", "far",    "towns", "that", "nobody",  "knew"};
  std::string t;
  for (int w = 0; w < n; w++) t += std::string(w ? " " : "") + words[(salt * 5 + w * 3 + w / 23) % 23];
  return t;
}

// Without its last n words.
std::string drop_words(const std::string& s, int n) {
  size_t end = s.size();
  for (int i = 0; i < n && end > 0; i++) {
    const size_t sp = s.rfind(' ', end - 1);
    if (sp == std::string::npos || sp == 0) break;
    end = sp;
  }
  return s.substr(0, end);
}

// Its first n words (all of it when shorter).
std::string first_words(const std::string& s, int n) {
  size_t end = 0;
  for (int i = 0; i < n; i++) {
    end = s.find(' ', end + (i > 0));
    if (end == std::string::npos) return s;
  }
  return s.substr(0, end);
}

// --chat: turn i of client c continues its conversation (previous prompt and completion) with 8 or 40 new words;
// every third turn replaces the last 3 words of the previous prompt instead (the held session is cut back there).
mix_item chat_turn(int c, int i, const std::string& prev_prompt, const std::string& prev_text) {
  mix_item m = mix(c, i);
  if (prev_prompt.empty()) return m;  // the first turn: as the plain mix
  const std::string added = " " + first_words(m.prompt, (c + i) % 2 ? 8 : 40);
  m.prompt = (i % 3 == 2 ? drop_words(prev_prompt, 3) : prev_prompt + prev_text) + added;
  return m;
}

struct sample {
  double seconds = 0, ttft = 0;
  int64_t tokens = 0;
  std::string text;  // the completion
  bool streamed = false;
  std::vector<double> gaps;  // streamed: seconds between consecutive chunks after the first
};

// A counter or gauge of /metrics' text (0 when absent).
double metric_value(const std::string& text, const std::string& name) {
  const size_t at = text.find("\n" + name + " ");
  return at == std::string::npos ? 0.0 : std::stod(text.substr(at + name.size() + 2));
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, size_t(p * double(v.size() - 1) + 0.5))];
}

void report(const char* what, const std::vector<sample>& s, double wall) {
  std::vector<double> lat, ttft, gaps, stream_ttft;
  int64_t tokens = 0;
  for (const auto& x : s) {
    lat.push_back(x.seconds * 1e3), ttft.push_back(x.ttft * 1e3), tokens += x.tokens;
    if (x.streamed) stream_ttft.push_back(x.ttft * 1e3);
    for (double g : x.gaps) gaps.push_back(g * 1e3);
  }
  fmt::print(
      "{:<34} {:>5} requests  latency p50 {:8.1f} ms  p99 {:8.1f} ms  first token p50 {:7.1f} ms  p99 {:7.1f} ms  "
      "{:8.1f} tokens/s\n",
      what, s.size(), percentile(lat, 0.5), percentile(lat, 0.99), percentile(ttft, 0.5), percentile(ttft, 0.99),
      wall > 0 ? double(tokens) / wall : 0.0);
  if (!gaps.empty())
    fmt::print(
        "{:<34} streamed ({}): first token p50 {:.1f} ms  p99 {:.1f} ms; inter-token p50 {:.1f} ms  p99 {:.1f} ms  "
        "max {:.1f} ms\n",
        "", stream_ttft.size(), percentile(stream_ttft, 0.5), percentile(stream_ttft, 0.99), percentile(gaps, 0.5),
        percentile(gaps, 0.99), *std::max_element(gaps.begin(), gaps.end()));
}

// One request through the HTTP client; false on any failure (status, JSON, usage), with the reason in `why`.
bool send(httplib::Client& cli, const mix_item& m, sample& out, std::string& why) {
  nlohmann::json body = {{"model", "bench"},   {"prompt", m.prompt}, {"max_tokens", m.max_tokens},
                         {"temperature", 0.7}, {"seed", m.seed},     {"stream", m.stream}};
  if (m.stream) body["stream_options"] = {{"include_usage", true}};
  if (!m.reuse) body["gsa"] = {{"reuse", false}};
  out.streamed = m.stream;
  const auto t0 = clock_type::now();
  auto last = t0;
  bool first = true, done = false;
  std::string buf;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    const auto now = clock_type::now();
    if (first)
      out.ttft = std::chrono::duration<double>(now - t0).count(), first = false;
    else if (m.stream)
      out.gaps.push_back(std::chrono::duration<double>(now - last).count());
    last = now;
    buf.append(data, n);
    return true;
  };
  auto res = cli.send(req);
  out.seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
  if (!res) {
    why = "HTTP error " + httplib::to_string(res.error());
    return false;
  }
  if (res->status != 200) {
    why = fmt::format("status {}: {}", res->status, res->body.substr(0, 200));
    return false;
  }
  try {
    if (!m.stream) {
      const auto j = nlohmann::json::parse(buf);
      out.text = j["choices"][0]["text"].get<std::string>();
      out.tokens = j["usage"]["completion_tokens"].get<int64_t>();
      if (out.tokens <= 0) why = "no tokens: " + buf.substr(0, 200);
      return out.tokens > 0;
    }
    size_t at = 0;
    while ((at = buf.find("data: ", at)) != std::string::npos) {
      const size_t end = buf.find("\n\n", at);
      const std::string d = buf.substr(at + 6, end - at - 6);
      at = end;
      if (d == "[DONE]")
        done = true;
      else if (auto j = nlohmann::json::parse(d); j.contains("usage") && !j["usage"].is_null())
        out.tokens = j["usage"]["completion_tokens"];
      else if (j.contains("choices") && !j["choices"].empty())
        out.text += j["choices"][0]["text"].get<std::string>();
    }
    if (!done || out.tokens <= 0) why = "stream without [DONE] or usage: " + buf.substr(0, 200);
    return done && out.tokens > 0;
  } catch (const std::exception& e) {
    why = std::string("bad response (") + e.what() + "): " + buf.substr(0, 200);
    return false;
  }
}

int run_bench_serve(const bench_serve_args& a) {
  if (a.clients < 1 || a.requests < 1) fail("--clients and --requests must be at least 1");
  if (a.simulate_leak < 0) fail("--simulate-leak {} must be a byte count >= 0", a.simulate_leak);
  if (a.simulate_fill < 0) fail("--simulate-fill {} must be a byte count >= 0", a.simulate_fill);
  llama_model m = model_on_device(load_model(a.model), a.dev);
  tokenizer tok = tokenizer::load(a.model);
  tok.check_fits_model(m.config.vocab_size, m.config.bos_token_id, m.config.eos_token_id, a.model);
  serve::metrics met;
  serve::scheduler_options so;
  so.session.meth = infer::method_from_name(a.method);
  so.session.tier = kv::page_tier_from_name(a.tier);
  so.max_sessions = a.max_sessions;
  so.max_spilled = a.max_spilled.value_or(so.session.tier == kv::page_tier::file ? 4 * a.max_sessions : 0);
  so.prefill_chunk = a.prefill_chunk;
  if (a.long_prompt < 0) fail("--long-prompt {} must be a word count >= 0", a.long_prompt);
  if (a.shared_prefix < 0) fail("--shared-prefix {} must be a word count >= 0", a.shared_prefix);
  serve::scheduler sched(m, tok, so, met);
  serve::server_options o;
  o.port = 0;
  o.model_id = "bench";
  o.max_context = m.config.max_position_embeddings;
  o.threads = a.clients + 4;
  serve::http_server http(sched, tok, met, o);
  const int port = http.bind();
  serve::engine eng(sched);
  std::thread server([&] { http.listen(); });
  auto drop_idle = [&] {
    sched.drop_idle();
    for (auto g = sched.gauges(); g.idle + g.spilled > 0; g = sched.gauges())
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  };
  // Every client once, concurrently, before measuring: the memory a server grows once (per-thread allocator
  // arenas, thread stacks, connection buffers) is then part of the level the load must come back to.
  std::vector<std::vector<sample>> per(a.clients);
  std::vector<sample> longs;  // the --long-prompt client's requests
  std::atomic<int> failed{0};
  std::mutex print_mu;
  std::atomic<bool> fill_armed{false};  // --simulate-fill: set for the measured load's first request
  std::vector<char> fill;
  auto load = [&](int first, int count, bool chat) {
    std::vector<std::thread> threads;
    std::thread background;
    if (a.long_prompt > 0 && count > 1)
      background = std::thread([&] {
        httplib::Client cli("127.0.0.1", port);
        cli.set_read_timeout(600, 0);
        for (int i = 0; i < count; i++) {
          mix_item item = mix(a.clients + i, 0);
          item.prompt = long_text(a.long_prompt, i);
          item.max_tokens = 4;
          item.stream = false;
          item.reuse = false;
          sample s;
          std::string why;
          if (send(cli, item, s, why)) {
            longs.push_back(s);
          } else if (failed++ < 5) {
            std::lock_guard<std::mutex> g(print_mu);
            fmt::print("long prompt {} failed after {:.2f} s: {}\n", i, s.seconds, why);
          }
        }
      });
    for (int c = 0; c < a.clients; c++)
      threads.emplace_back([&, c] {
        httplib::Client cli("127.0.0.1", port);
        cli.set_read_timeout(600, 0);
        std::string prompt, text;  // --chat: the conversation so far
        for (int i = first; i < first + count; i++) {
          sample s;
          std::string why;
          mix_item item = chat ? chat_turn(c, i, prompt, text) : mix(c, i);
          if (!chat && a.shared_prefix > 0) item.prompt = long_text(a.shared_prefix, 0) + " " + item.prompt;
          if (send(cli, item, s, why)) {
            prompt = item.prompt;
            text = s.text;
            per[c].push_back(s);
            if (a.simulate_leak > 0) {  // touched, so that it is resident too; never freed
              char* leak = static_cast<char*>(std::malloc(size_t(a.simulate_leak)));
              if (leak) std::memset(leak, 1, size_t(a.simulate_leak));
            }
            if (a.simulate_fill > 0 && fill_armed.exchange(false))  // touched too; kept until the end
              fill.assign(size_t(a.simulate_fill), 1);
          } else if (failed++ < 5) {
            std::lock_guard<std::mutex> g(print_mu);
            fmt::print("request {} of client {} failed after {:.2f} s: {}\n", i, c, s.seconds, why);
          }
        }
      });
    for (auto& t : threads) t.join();
    if (background.joinable()) background.join();
  };
  load(a.requests, 1, false);
  const int warmup_failed = failed.exchange(0);
  per.assign(size_t(a.clients), {});
  const bool on_gpu = a.dev.device != "cpu";
  auto level = [&] {  // after drop_idle
    memory_level l;
    l.rss = rss_bytes();
    l.heap = heap_bytes();
    l.device = int64_t(m.ops().bytes_in_use());
    return l;
  };
  drop_idle();
  const memory_level before = level();
  fmt::print(
      "gsa bench serve: {} clients x {} {}, model {}, method {}, max {} sessions + {} spilled, KV tier {}, prefill "
      "chunk {}{}, on 127.0.0.1:{}\n",
      a.clients, a.requests, a.chat ? "turns" : "requests", a.model, a.method, a.max_sessions, so.max_spilled, a.tier,
      a.prefill_chunk, a.long_prompt > 0 ? fmt::format(", + 1 client of {}-word prompts", a.long_prompt) : "", port);
  const std::string counters_before = met.render(sched.gauges());
  fill_armed = true;
  const auto t0 = clock_type::now();
  load(0, a.requests, a.chat);
  const double wall = std::chrono::duration<double>(clock_type::now() - t0).count();
  const int64_t rss_loaded = rss_bytes();
  const auto gauges = sched.gauges();
  const std::string counters = met.render(gauges);
  drop_idle();
  const memory_level after = level();
  std::vector<sample> all;
  for (auto& v : per) all.insert(all.end(), v.begin(), v.end());
  report("served (concurrent, HTTP)", all, wall);
  if (a.long_prompt > 0) report(fmt::format("long prompts ({} words, background)", a.long_prompt).c_str(), longs, 0);
  const double growth = double(after.rss - before.rss) / double(before.rss);
  const double mib = 1048576.0;
  if (warmup_failed) fmt::print("failed warm-up requests: {} of {}\n", warmup_failed, a.clients);
  fmt::print(
      "failed requests: {} of {}; wall {:.1f} s; resident memory {:.1f} MiB before, {:.1f} MiB at the end "
      "({} idle sessions held), {:.1f} MiB after dropping them ({:+.1f}%)\n",
      failed.load(), a.clients * a.requests, wall, before.rss / mib, rss_loaded / mib, gauges.idle, after.rss / mib,
      growth * 100);
  auto delta = [&](const char* name) { return metric_value(counters, name) - metric_value(counters_before, name); };
  const double whole = delta("gsa_sessions_reused_total{how=\"whole\"}"),
               cut = delta("gsa_sessions_reused_total{how=\"cut\"}");
  const double prompt_tokens = delta("gsa_prompt_tokens_total"), reused = delta("gsa_prompt_tokens_reused_total");
  fmt::print(
      "sessions: {:.0f} new, {:.0f} continued whole, {:.0f} cut back; prompt tokens reused {:.0f} of {:.0f} ({:.1f}%); "
      "evicted {:.0f} spilled, {:.0f} dropped; {:.0f} restored from file; at the end {} idle + {} spilled ({:.1f} MiB "
      "KV in memory, {:.1f} MiB in files{})\n",
      double(all.size()) - whole - cut, whole, cut, reused, prompt_tokens,
      prompt_tokens > 0 ? 100 * reused / prompt_tokens : 0.0, delta("gsa_sessions_evicted_total{action=\"spilled\"}"),
      delta("gsa_sessions_evicted_total{action=\"dropped\"}"), delta("gsa_sessions_restored_total"), gauges.idle,
      gauges.spilled, gauges.kv_memory / mib, gauges.kv_file / mib,
      on_gpu ? fmt::format(", {:.1f} MiB in GPU pools", gauges.kv_gpu / mib) : "");
  // A round's growth against the limits (kHeapSlack, kRssSlack): its figures and whether each is within.
  struct round_check {
    int64_t heap = 0, rss = 0, device = 0, rss_limit = 0;
    bool heap_ok() const { return heap <= kHeapSlack; }
    bool rss_ok() const { return rss <= rss_limit; }
    bool device_ok() const { return device <= kHeapSlack; }
    bool ok() const { return heap_ok() && rss_ok() && device_ok(); }
  };
  auto judge = [&](const memory_level& b, const memory_level& e) {
    return round_check{e.heap - b.heap, e.rss - b.rss, e.device - b.device,
                       std::max(int64_t(0.10 * double(b.rss)), kRssSlack)};
  };
  auto print_round = [&](const std::string& what, const memory_level& b, const memory_level& e, const round_check& r) {
    fmt::print(
        "{}: heap in use {:.2f} MiB before, {:.2f} MiB after ({:+.2f} MiB, limit +{:.0f} MiB); resident {:+.1f} MiB "
        "(limit +{:.1f} MiB: 10% or {:.0f} MiB)",
        what, b.heap / mib, e.heap / mib, r.heap / mib, kHeapSlack / mib, r.rss / mib, r.rss_limit / mib,
        kRssSlack / mib);
    if (on_gpu)
      fmt::print("; GPU memory in use {:.2f} MiB before, {:.2f} MiB after ({:+.2f} MiB, limit +{:.0f} MiB)",
                 b.device / mib, e.device / mib, r.device / mib, kHeapSlack / mib);
  };
  round_check last = judge(before, after);
  // What a session leaked per request would add: its K/V, in host memory or in GPU pools.
  const double kv_per_session = gauges.idle > 0 ? double(gauges.kv_memory + gauges.kv_gpu) / gauges.idle : 0.0;
  print_round("memory check", before, after, last);
  fmt::print("; KV per idle session {:.2f} MiB (one leaked per request: {:+.1f} MiB)\n", kv_per_session / mib,
             kv_per_session * a.clients * a.requests / mib);
  // --check: while a round ends beyond a limit, the same load again (kCheckRounds says why), judged on its own
  // growth; its latency figures are not reported (its sessions start from the same empty state as the first's).
  int round = 1;
  for (memory_level b = after; a.check && failed == 0 && warmup_failed == 0 && !last.ok() && round < kCheckRounds;) {
    round++;
    per.assign(size_t(a.clients), {});
    longs.clear();
    load(0, a.requests, a.chat);
    drop_idle();
    const memory_level e = level();
    last = judge(b, e);
    print_round(fmt::format("memory check, round {} of the same load", round), b, e, last);
    fmt::print("; failed requests {}\n", failed.load());
    b = e;
  }
  http.stop();
  server.join();
  // The same requests, one at a time, through infer::generate alone.
  std::vector<sample> alone;
  const auto t1 = clock_type::now();
  for (int n = 0; n < std::min(a.alone, a.clients * a.requests); n++) {
    const mix_item item = mix(n % a.clients, n / a.clients);
    const auto s0 = clock_type::now();
    infer::session s(m, so.session);
    s.prefill(tok.encode(item.prompt, true));
    infer::generate_options g;
    g.max_tokens = item.max_tokens;
    g.samp.temperature = 0.7f;
    g.samp.seed = item.seed;
    sample x;
    x.ttft = std::chrono::duration<double>(clock_type::now() - s0).count();
    x.tokens = int64_t(infer::generate({&s}, g)[0].ids.size());
    x.seconds = std::chrono::duration<double>(clock_type::now() - s0).count();
    alone.push_back(x);
  }
  report("generate alone (sequential)", alone, std::chrono::duration<double>(clock_type::now() - t1).count());
  if (!a.check) return 0;
  const std::string rounds =
      round > 1 ? fmt::format(" in each of {} rounds of the same load (a leak: what fills once stops growing)", round)
                : " (a leak?)";
  if (failed > 0 || warmup_failed > 0 || !last.ok()) {
    fmt::print("bench serve --check: {}\n", failed > 0 || warmup_failed > 0 ? std::string("requests failed")
                                            : !last.heap_ok() ? "heap in use grew by more than the limit" + rounds
                                            : !last.device_ok() ? "GPU memory in use grew by more than the limit" + rounds
                                                              : "resident memory grew by more than the limit" + rounds);
    return 1;
  }
  fmt::print("bench serve --check: passed in round {}{}\n", round,
             round > 1 ? " of the same load (what grew beyond a limit before it did not grow again: filled once, "
                         "not leaked)"
                       : "");
  return 0;
}

}  // namespace

void register_bench_serve(CLI::App& app, command_list& cmds) {
  auto* sub =
      bench_command(app)->add_subcommand("serve", "Load test of gsa serve on loopback: latency, tokens/s, memory");
  static bench_serve_args a;
  sub->add_option("--model", a.model, "Model directory")->required();
  sub->add_option("--method", a.method, "gsa|hgsa|full|gist|...")->capture_default_str();
  sub->add_option("--clients", a.clients, "Concurrent clients")->capture_default_str();
  sub->add_option("--requests", a.requests, "Requests per client, one after another")->capture_default_str();
  sub->add_option("--max-sessions", a.max_sessions, "Sessions the server holds (largest batch)")->capture_default_str();
  sub->add_option("--alone", a.alone, "Requests of the mix run one at a time for the comparison")
      ->capture_default_str();
  sub->add_option("--kv-tier", a.tier, "memory|file, as gsa serve")->capture_default_str();
  sub->add_option("--max-spilled", a.max_spilled,
                  "As gsa serve (default 4 x --max-sessions with --kv-tier file, else 0)");
  sub->add_option("--prefill-chunk", a.prefill_chunk, "As gsa serve (0: a prompt in one piece)")->capture_default_str();
  sub->add_option("--long-prompt", a.long_prompt,
                  "One more client sending prompts of this many words (4 tokens each, no reuse) during the load");
  sub->add_option("--shared-prefix", a.shared_prefix,
                  "Every prompt of the plain mix starts with the same text of this many words (a system prompt)");
  sub->add_flag("--chat", a.chat,
                "Each client holds a conversation (turns continue or edit the previous prompt and completion)");
  sub->add_flag("--check", a.check,
                "Exit 1 when a request failed or, after the idle sessions are dropped, heap in use (and GPU memory in "
                "use with --device cuda) grew by more than 1 MiB or resident memory by more than max(10%, 6 MiB); "
                "when a round ends beyond a limit the same load runs again, up to 3 rounds, and one round within "
                "the limits passes (a cache fills once, a leak grows in every round)");
  sub->add_option("--simulate-leak", a.simulate_leak,
                  "Leave this many bytes allocated per request (tests that --check fails on a leak)");
  sub->add_option("--simulate-fill", a.simulate_fill,
                  "Allocate this many bytes at the load's first request and keep them (tests that --check passes "
                  "a one-time fill)");
  add_device_options(sub, a.dev);
  cmds.push_back({sub, [] { return run_bench_serve(a); }});
}

}  // namespace gsa::tools
