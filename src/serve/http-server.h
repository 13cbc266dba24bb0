// The HTTP side of `gsa serve` (cpp-httplib): routes, bearer-token check, request validation (api.h),
// tokenization and chat rendering, then a job on the scheduler, answered as one JSON body or as server-sent
// events. Routes: POST /v1/completions, POST /v1/chat/completions, GET /v1/models[/ID], GET /health,
// GET /metrics. Every error is an OpenAI error object with its 4xx/5xx status, logged; the server keeps serving.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "serve/chat.h"
#include "serve/metrics.h"
#include "serve/scheduler.h"
#include "tokenizer/tokenizer.h"

namespace gsa::serve {

struct server_options {
  std::string host = "127.0.0.1";
  int port = 8080;            // 0: any free port (bind() returns it)
  std::string api_key;        // non-empty: every route but /health needs "Authorization: Bearer KEY"
  std::string model_id;       // the name clients send as "model"
  int64_t max_context = 0;    // prompt + completion tokens per request
  size_t max_body = 8 << 20;  // bytes of a request body (413 beyond)
  int threads = 64;           // HTTP worker threads (each waiting request holds one)
  chat_renderer chat;         // empty: the model has no chat template
};

class http_server {
 public:
  // s, tok and met must outlive the server. Throws gsa::error for options out of range.
  http_server(scheduler& s, const tokenizer& tok, metrics& met, server_options o);
  ~http_server();
  // Binds host:port; returns the port (the chosen one for port 0). Throws gsa::error when it cannot.
  int bind();
  // Serves until stop() (from another thread).
  void listen();
  void stop();

 private:
  struct impl;
  std::unique_ptr<impl> p_;
};

}  // namespace gsa::serve
