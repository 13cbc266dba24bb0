#include "train/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include "io/hf-config.h"

#include <cstdio>
#include <string>

namespace gsa {

double train_flops_per_token(const model_config& c) {
  const double C = double(c.hidden_size), I = double(c.intermediate_size), D = double(c.head_dim);
  const double per_layer = C * D * double(c.num_attention_heads) * 2 + C * D * double(c.num_key_value_heads) * 2 +
                           3 * C * I;
  return 6.0 * (per_layer * double(c.num_hidden_layers) + C * double(c.vocab_size));
}

progress_bar::progress_bar(int64_t first_step, int64_t total_steps, bool force)
    : enabled_(force || ::isatty(2)), first_(first_step), total_(total_steps),
      start_(std::chrono::steady_clock::now()) {}

double progress_bar::tokens_per_second(int64_t tokens) const {
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  return s > 0 ? double(tokens) / s : 0.0;
}

static std::string human_time(double s) {
  if (!(s >= 0) || s > 1e8) return "?";
  int64_t t = int64_t(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02d}m", t / 3600, (t / 60) % 60);
  if (t >= 60) return fmt::format("{}m{:02d}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

void progress_bar::update(int64_t step, double loss, double lr, int64_t tokens, double mfu_factor) {
  if (!enabled_) return;
  double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double done = double(step - first_), left = double(total_ - step);
  double eta = done > 0 ? el / done * left : -1;
  const int width = 24;
  int filled = total_ > 0 ? int(width * double(step) / double(total_)) : 0;
  std::string bar(size_t(filled), '=');
  if (filled < width) bar += '>' + std::string(size_t(width - filled - 1), ' ');
  double tps = tokens_per_second(tokens);
  const std::string rate = tps >= 1e4 ? fmt::format("{:.1f}k", tps / 1e3) : fmt::format("{:.0f}", tps);
  const std::string mfu = mfu_factor > 0 ? fmt::format(" MFU {:.1f}%", 100.0 * tps * mfu_factor) : "";
  std::fprintf(stderr, "\r[%s] %lld/%lld loss %.4f lr %.2e %s tok/s%s ETA %s   ", bar.c_str(), (long long)step,
               (long long)total_, loss, lr, rate.c_str(), mfu.c_str(), human_time(eta).c_str());
  std::fflush(stderr);
}

void progress_bar::finish() {
  if (enabled_) std::fprintf(stderr, "\n");
}

}  // namespace gsa
