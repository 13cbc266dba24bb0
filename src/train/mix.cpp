#include "train/mix.h"

#include <sstream>

#include "core/error.h"

namespace gsa {

std::vector<mix_entry> parse_mix(const std::string& spec) {
  std::vector<mix_entry> out;
  std::stringstream ss(spec);
  std::string part;
  double total = 0;
  while (std::getline(ss, part, ',')) {
    if (part.empty()) continue;
    mix_entry e;
    size_t eq = part.find('=');
    e.source = part.substr(0, eq);
    e.weight = 1.0;
    if (eq != std::string::npos) {
      try {
        size_t used = 0;
        e.weight = std::stod(part.substr(eq + 1), &used);
        if (used != part.size() - eq - 1) throw std::invalid_argument(part);
      } catch (const std::exception&) {
        fail("mix: '{}' is not source=weight (e.g. text=0.8,passkey=0.2)", part);
      }
    }
    if (e.source.empty()) fail("mix: '{}' has no source name", part);
    if (!(e.weight >= 0)) fail("mix: weight of '{}' must be >= 0", e.source);
    for (auto& o : out)
      if (o.source == e.source) fail("mix: '{}' is listed twice", e.source);
    total += e.weight;
    out.push_back(e);
  }
  if (out.empty() || !(total > 0)) fail("mix: '{}' gives no source a positive weight", spec);
  for (auto& e : out) e.weight /= total;
  return out;
}

sample_mixer::sample_mixer(std::vector<mix_entry> mix, data::window_loader* text, task_source tasks,
                           int64_t seq_len, uint64_t seed)
    : mix_(std::move(mix)), text_(text), tasks_(std::move(tasks)), seq_len_(seq_len), rng_(seed) {
  for (auto& e : mix_) {
    if (e.weight <= 0) continue;
    if (e.source == "text" && !text_) fail("mix: 'text' needs a token dataset ('data')");
    if (e.source != "text" && !tasks_)
      fail("mix: '{}' is a generated task, but no task generator is available here (text only)", e.source);
  }
}

train_sample sample_mixer::next() {
  double u = double(rng_.next_u64() >> 11) * (1.0 / 9007199254740992.0);
  uint64_t task_seed = rng_.next_u64();  // drawn every time so the stream does not depend on the choice
  size_t pick = mix_.size() - 1;
  double acc = 0;
  for (size_t i = 0; i < mix_.size(); i++) {
    acc += mix_[i].weight;
    if (u < acc && mix_[i].weight > 0) {
      pick = i;
      break;
    }
  }
  const auto& e = mix_[pick];
  if (e.source == "text") {
    train_sample s;
    s.source = "text";
    text_->next(s.raw);
    return s;
  }
  train_sample s = tasks_(e.source, seq_len_, task_seed);
  s.source = e.source;
  if (s.raw.empty()) fail("task '{}' generated an empty sample", e.source);
  return s;
}

nlohmann::json sample_mixer::state() const {
  nlohmann::json j = {{"s0", std::to_string(rng_.s0)}, {"s1", std::to_string(rng_.s1)}};
  if (text_) j["text"] = text_->state();
  return j;
}

void sample_mixer::set_state(const nlohmann::json& j) {
  try {
    rng_.s0 = std::stoull(j.at("s0").get<std::string>());
    rng_.s1 = std::stoull(j.at("s1").get<std::string>());
  } catch (const std::exception& e) {
    fail("mixer state is malformed ({}); the checkpoint's trainer.json is damaged", e.what());
  }
  if (text_ && j.contains("text")) text_->set_state(j["text"]);
}

}  // namespace gsa
