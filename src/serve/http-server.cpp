// Routes, authentication, streaming; contract in http-server.h.
#include "serve/http-server.h"

#include <fmt/format.h>
#include <httplib.h>
#include <sys/socket.h>

#include <chrono>
#include <random>

#include "core/error.h"
#include "core/log.h"
#include "serve/api.h"
#include "serve/connection.h"

namespace gsa::serve {

using nlohmann::json;
using clock_type = std::chrono::steady_clock;

namespace {

constexpr auto poll_interval = std::chrono::milliseconds(100);

// Request start, per HTTP worker thread (a thread serves one request at a time): the logger measures latency.
thread_local clock_type::time_point t_request_start;

std::string random_id(const char* prefix) {
  static thread_local std::mt19937_64 g(std::random_device{}());
  return fmt::format("{}{:016x}{:08x}", prefix, g(), uint32_t(g()));
}

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void send_error(httplib::Response& res, const api_error& e) {
  res.status = e.status;
  res.set_content(dump(error_json(e)), "application/json");
}

bool same_secret(const std::string& a, const std::string& b) {  // constant time in the length of b
  unsigned diff = a.size() != b.size();
  for (size_t i = 0; i < b.size(); i++) diff |= unsigned(i < a.size() ? a[i] : 0) ^ unsigned(b[i]);
  return diff == 0;
}

std::string endpoint_label(const std::string& path) {
  for (const char* p : {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics"})
    if (path == p) return p;
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models";
  return "other";
}

std::string sse(const json& j) { return "data: " + dump(j) + "\n\n"; }

// cpp-httplib 0.11 listens with a backlog of 5: a burst of clients overflows it and the kernel resets some of
// their connections. listen() again on the bound socket raises it (Linux updates the backlog in place).
struct wide_backlog_server : httplib::Server {
  bool widen_backlog() { return ::listen(svr_sock_, SOMAXCONN) == 0; }
};

}  // namespace

struct http_server::impl {
  scheduler& sched;
  const tokenizer& tok;
  metrics& met;
  server_options o;
  wide_backlog_server svr;
  int64_t created = unix_now();

  impl(scheduler& s, const tokenizer& t, metrics& m, server_options opts)
      : sched(s), tok(t), met(m), o(std::move(opts)) {}

  std::vector<int32_t> prompt_ids(const completion_request& r) {
    if (r.kind == endpoint::chat) {
      if (!o.chat)
        throw api_error(400,
                        fmt::format("model has no chat_template: '{}' has no \"chat_template\" in its "
                                    "tokenizer_config.json; use /v1/completions with a prompt",
                                    o.model_id),
                        "messages", "no_chat_template");
      // The template writes the special tokens (BOS included) itself, as transformers' apply_chat_template.
      return tok.encode(o.chat(r.messages), false);
    }
    if (!r.prompt_is_ids) return tok.encode(r.prompt, true);
    const int64_t V = int64_t(tok.vocab_size());
    for (size_t i = 0; i < r.prompt_ids.size(); i++)
      if (r.prompt_ids[i] >= V)
        throw api_error(400,
                        fmt::format("'prompt[{}]' ({}) is outside the vocabulary of {} tokens", i, r.prompt_ids[i], V),
                        "prompt", "invalid_value");
    return r.prompt_ids;
  }

  void completion(const httplib::Request& req, httplib::Response& res, endpoint kind) {
    const completion_request r = parse_request(req.body, kind);
    check_model(r, o.model_id);
    job_request jr;
    jr.prompt = prompt_ids(r);
    if (jr.prompt.empty())
      throw api_error(400, "the prompt is empty after tokenization", kind == endpoint::chat ? "messages" : "prompt",
                      "invalid_value");
    jr.max_tokens = resolve_max_tokens(r, int64_t(jr.prompt.size()), o.max_context);
    jr.samp.temperature = r.temperature;
    jr.samp.top_p = r.top_p;
    jr.stop = r.stop;
    jr.stats = r.gsa_stats;
    jr.reuse = r.gsa_reuse;
    // n choices are n jobs, batched like any concurrent requests; choice i samples with seed + i, so choice 0 is
    // what the same request with n = 1 answers.
    std::vector<std::shared_ptr<job>> jobs;
    for (int64_t i = 0; i < r.n; i++) {
      jr.samp.seed = r.seed ? *r.seed + uint64_t(i) : std::random_device{}() * 0x100000001ull;
      jobs.push_back(sched.submit(jr));
    }
    const std::string id = random_id(kind == endpoint::chat ? "chatcmpl-" : "cmpl-");
    const int64_t created_at = unix_now();
    auto conn = std::make_shared<connection>(req.remote_addr, req.remote_port, req.local_port);
    auto cancel_all = [jobs] {
      for (const auto& j : jobs) j->cancel();
    };
    if (!r.stream) {
      std::vector<job_state> st(jobs.size());
      for (size_t i = 0; i < jobs.size(); i++)
        for (;;) {
          st[i] = jobs[i]->wait(std::string::npos, poll_interval);
          if (st[i].done) break;
          if (conn->closed()) {
            cancel_all();
            GSA_LOG_INFO("{} {}: the client disconnected; generation cancelled", req.method, req.path);
            st[i] = jobs[i]->wait(std::string::npos, std::chrono::hours(1));  // ended at the scheduler's next step
          }
        }
      std::vector<choice> choices;
      usage u{st[0].prompt_tokens, 0};
      json gsa = json::array();
      for (const job_state& s : st) {
        if (s.finish_reason == "error")
          throw api_error(500, "generation failed: " + s.error, "", "generation_failed", "server_error");
        if (s.finish_reason == "cancelled") {
          res.status = 499;  // nobody reads it
          return;
        }
        choices.push_back({s.text, s.finish_reason});
        u.completion_tokens += s.completion_tokens;
        gsa.push_back(s.stats);
      }
      // n = 1 keeps the object of issue 13; more choices get one object each, in index order.
      gsa = !r.gsa_stats ? json(nullptr) : r.n == 1 ? gsa[0] : json{{"choices", gsa}};
      res.set_content(dump(response_json(kind, id, created_at, o.model_id, choices, u, gsa)), "application/json");
      return;
    }
    res.set_header("Cache-Control", "no-cache");
    struct stream_state {
      std::vector<size_t> sent;
      std::vector<bool> first, finished;
      int64_t completion_tokens = 0, prompt_tokens = 0;
      bool failed = false;  // a choice ended in an error or was cancelled: no usage chunk
    };
    auto ss = std::make_shared<stream_state>();
    ss->sent.assign(jobs.size(), 0);
    ss->first.assign(jobs.size(), true);
    ss->finished.assign(jobs.size(), false);
    const std::string model = o.model_id;
    const bool include_usage = r.include_usage, want_stats = r.gsa_stats;
    res.set_chunked_content_provider(
        "text/event-stream",
        [jobs, conn, ss, kind, id, created_at, model, include_usage, want_stats, cancel_all](size_t,
                                                                                             httplib::DataSink& sink) {
          auto write = [&](const std::string& s) {
            if (sink.write(s.data(), s.size())) return true;
            GSA_LOG_INFO("a stream's write failed: the client left; generation cancelled");
            cancel_all();
            return false;
          };
          // Wait on the first unfinished choice; the others are read as they are.
          size_t waiting = 0;
          while (waiting < jobs.size() && ss->finished[waiting]) waiting++;
          bool all_done = true;
          for (size_t i = 0; i < jobs.size(); i++) {
            if (ss->finished[i]) continue;
            const job_state st = i == waiting ? jobs[i]->wait(ss->sent[i], poll_interval) : jobs[i]->state();
            const int64_t index = int64_t(i);
            if (ss->first[i] && kind == endpoint::chat &&
                !write(sse(chunk_json(kind, id, created_at, model, "", "", true, index))))
              return false;
            ss->first[i] = false;
            if (st.text.size() > ss->sent[i]) {
              if (!write(sse(chunk_json(kind, id, created_at, model, st.text.substr(ss->sent[i]), "", false, index))))
                return false;
              ss->sent[i] = st.text.size();
            }
            if (!st.done) {
              all_done = false;
              continue;
            }
            ss->finished[i] = true;
            ss->prompt_tokens = st.prompt_tokens;
            ss->completion_tokens += st.completion_tokens;
            ss->failed = ss->failed || st.finish_reason == "error" || st.finish_reason == "cancelled";
            if (st.finish_reason == "error") {
              if (!write(sse(error_json("generation failed: " + st.error, "server_error", "", "generation_failed"))))
                return false;
            } else if (st.finish_reason != "cancelled") {
              json last = chunk_json(kind, id, created_at, model, "", st.finish_reason, false, index);
              if (want_stats) last["gsa"] = st.stats;
              if (!write(sse(last))) return false;
            }
          }
          if (!all_done) {
            if (!conn->closed()) return true;
            GSA_LOG_INFO("a stream's client disconnected; generation cancelled");
            cancel_all();
            return false;
          }
          if (include_usage && !ss->failed &&
              !write(sse(usage_chunk_json(kind, id, created_at, model, {ss->prompt_tokens, ss->completion_tokens}))))
            return false;
          if (!write("data: [DONE]\n\n")) return false;
          sink.done();
          return true;
        },
        [cancel_all](bool success) {
          if (!success) cancel_all();
        });
  }

  void routes() {
    svr.new_task_queue = [n = o.threads] { return new httplib::ThreadPool(size_t(n)); };
    svr.set_payload_max_length(o.max_body);
    svr.set_keep_alive_max_count(1000);  // cpp-httplib closes a connection after 5 requests by default
    svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      t_request_start = clock_type::now();
      if (o.api_key.empty() || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
      const std::string auth = req.get_header_value("Authorization");
      if (auth.rfind("Bearer ", 0) == 0 && same_secret(auth.substr(7), o.api_key))
        return httplib::Server::HandlerResponse::Unhandled;
      send_error(res, api_error(401,
                                auth.empty() ? "missing API key: send the header 'Authorization: Bearer KEY'"
                                             : "incorrect API key provided",
                                "", "invalid_api_key"));
      return httplib::Server::HandlerResponse::Handled;
    });
    auto guarded = [this](endpoint kind) {
      return [this, kind](const httplib::Request& req, httplib::Response& res) {
        try {
          completion(req, res, kind);
        } catch (const api_error& e) {
          GSA_LOG_WARN("{} {}: {} {}", req.method, req.path, e.status, e.what());
          send_error(res, e);
        } catch (const std::exception& e) {
          GSA_LOG_WARN("{} {}: 500 {}", req.method, req.path, e.what());
          send_error(res, api_error(500, e.what(), "", "internal_error", "server_error"));
        }
      };
    };
    svr.Post("/v1/completions", guarded(endpoint::completions));
    svr.Post("/v1/chat/completions", guarded(endpoint::chat));
    svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(dump({{"object", "list"}, {"data", json::array({model_json()})}}), "application/json");
    });
    svr.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
      if (req.matches[1] != o.model_id)
        return send_error(res, api_error(404,
                                         fmt::format("the model '{}' does not exist; this server serves '{}'",
                                                     std::string(req.matches[1]), o.model_id),
                                         "model", "model_not_found"));
      res.set_content(dump(model_json()), "application/json");
    });
    svr.Get("/health", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(R"({"status":"ok"})", "application/json");
    });
    svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(met.render(sched.gauges()), "text/plain; version=0.0.4");
    });
    // Statuses set by cpp-httplib itself (no route, body too large, bad request line) get an error object too.
    svr.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      std::string msg =
          fmt::format("{} {}: the HTTP layer refused the request (status {})", req.method, req.path, res.status);
      std::string code;
      if (res.status == 404) msg = fmt::format("no route {} {}", req.method, req.path), code = "not_found";
      if (res.status == 413)
        msg = fmt::format("the request body is larger than {} bytes (--max-body)", o.max_body), code = "body_too_large";
      send_error(res, api_error(res.status, msg, "", code));
    });
    svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "unknown error";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      send_error(res, api_error(500, what, "", "internal_error", "server_error"));
    });
    svr.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      const double s = std::chrono::duration<double>(clock_type::now() - t_request_start).count();
      met.request(endpoint_label(req.path), res.status, s);
      GSA_LOG_INFO("{} {} {} {:.1f} ms", req.method, req.path, res.status, s * 1e3);
    });
  }

  json model_json() const {
    return {{"id", o.model_id}, {"object", "model"}, {"created", created}, {"owned_by", "gsa"}};
  }
};

http_server::http_server(scheduler& s, const tokenizer& tok, metrics& met, server_options o)
    : p_(std::make_unique<impl>(s, tok, met, std::move(o))) {
  if (p_->o.port < 0 || p_->o.port > 65535) fail("--port {} must be in 0 .. 65535", p_->o.port);
  if (p_->o.threads < 1) fail("--threads {} must be at least 1", p_->o.threads);
  if (p_->o.max_context < 1) fail("--max-context {} must be at least 1", p_->o.max_context);
  p_->routes();
}

http_server::~http_server() = default;

int http_server::bind() {
  int port = p_->o.port;
  if (port == 0) {
    port = p_->svr.bind_to_any_port(p_->o.host);
    if (port < 0) fail("cannot bind {}: is the address valid?", p_->o.host);
  } else if (!p_->svr.bind_to_port(p_->o.host, port)) {
    fail("cannot bind {}:{}: is the port in use, or the address not valid here?", p_->o.host, port);
  }
  if (!p_->svr.widen_backlog()) GSA_LOG_WARN("could not raise the listen backlog; bursts of clients may be refused");
  return port;
}

void http_server::listen() { p_->svr.listen_after_bind(); }
void http_server::stop() { p_->svr.stop(); }

}  // namespace gsa::serve
