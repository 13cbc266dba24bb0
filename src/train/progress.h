// A one-line progress bar on stderr: step, loss, learning rate, tokens/s, MFU (on a GPU) and ETA, redrawn in place with '\r'.
// Enabled when stderr is a terminal or when forced (--progress); otherwise silent.
#pragma once
#include <chrono>
#include <cstdint>

namespace gsa {

struct model_config;

// Model FLOPs per trained token for MFU: 6 x the parameters that multiply (every matrix but the input embedding,
// whose forward is a lookup; the LM head counts even when tied). Attention scores are left out: GSA attends a
// plan-dependent fraction of the causal pairs, so this is the matmul work both GSA and full attention do.
double train_flops_per_token(const model_config& c);
// Dense bf16 tensor-core peak of the H100/H200 SXM datasheet, the MFU denominator.
constexpr double k_peak_bf16_flops = 989e12;

class progress_bar {
 public:
  progress_bar(int64_t first_step, int64_t total_steps, bool force);
  bool enabled() const { return enabled_; }
  void disable() { enabled_ = false; }  // e.g. on the ranks of a data-parallel group other than 0
  // mfu_per_token_per_s > 0: also shows MFU = tokens/s x that factor (model FLOPs per token / peak FLOP/s).
  void update(int64_t step, double loss, double lr, int64_t tokens_since_start, double mfu_per_token_per_s = 0);
  void finish();
  double tokens_per_second(int64_t tokens_since_start) const;

 private:
  bool enabled_;
  int64_t first_, total_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace gsa
