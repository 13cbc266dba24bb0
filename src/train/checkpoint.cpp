#include "train/checkpoint.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/json-util.h"
#include "io/atomic-file.h"
#include "io/safetensors.h"

namespace gsa {

namespace fs = std::filesystem;

// Removes a checkpoint folder crash-safely: it is renamed out of the checkpoint namespace first (one atomic step),
// so a kill during the removal leaves a hidden ".checkpoint-N.removing" folder that nothing reads (and the next
// save deletes), never a half-deleted "checkpoint-N" that still holds its trainer.json completion marker.
static void remove_checkpoint_dir(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return;
  const fs::path gone = dir.parent_path() / ("." + dir.filename().string() + ".removing");
  fs::remove_all(gone, ec);
  fs::rename(dir, gone, ec);
  if (ec) fail("{}: cannot remove the old checkpoint: {}", dir.string(), ec.message());
  fs::remove_all(gone, ec);
}

static std::vector<std::pair<int64_t, fs::path>> list_checkpoints(const fs::path& out) {
  std::vector<std::pair<int64_t, fs::path>> v;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(out, ec)) {
    std::string n = e.path().filename().string();
    if (!e.is_directory() || n.rfind("checkpoint-", 0) != 0) continue;
    try {
      size_t used = 0;
      int64_t step = std::stoll(n.substr(11), &used);
      if (used == n.size() - 11) v.emplace_back(step, e.path());
    } catch (const std::exception&) {
    }
  }
  std::sort(v.begin(), v.end());
  return v;
}

std::string save_checkpoint(const std::string& out, int64_t step, const llama_model& m, const adamw_optimizer& opt,
                            const nlohmann::json& trainer, int keep) {
  return save_checkpoint(out, step, m, opt.state(m), opt.step_count, trainer, keep);
}

std::string save_checkpoint(const std::string& out, int64_t step, const llama_model& m,
                            const std::vector<std::pair<std::string, Tensor>>& opt_state, int64_t step_count,
                            const nlohmann::json& trainer, int keep) {
  // A diverged run must not replace the last good checkpoint (and `latest`) with Inf / NaN weights.
  for (auto& [name, t] : m.parameters()) {
    const float* p = t->f32();
    for (int64_t i = 0; i < t->numel(); i++)
      if (!std::isfinite(p[i]))
        fail("step {}: weight '{}' holds {} at index {}: training diverged; nothing was saved, the last checkpoint "
             "stays; lower the learning rate and resume", step, name, p[i], i);
  }
  fs::path o(out);
  fs::path tmp = o / fmt::format(".checkpoint-{}.tmp", step), dst = o / fmt::format("checkpoint-{}", step);
  std::error_code ec;
  fs::remove_all(tmp, ec);  // leftovers of a save that was killed
  for (auto& e : fs::directory_iterator(o, ec)) {  // and of removals that were killed
    const std::string n = e.path().filename().string();
    if (n.rfind(".checkpoint-", 0) == 0 && n.size() > 9 && n.compare(n.size() - 9, 9, ".removing") == 0)
      fs::remove_all(e.path(), ec);
  }
  fs::create_directories(tmp, ec);
  if (ec) fail("{}: cannot create the checkpoint folder: {}", tmp.string(), ec.message());
  save_model(m, tmp.string());
  write_safetensors((tmp / "optimizer.safetensors").string(), opt_state,
                    {{"step_count", std::to_string(step_count)}});
  write_file_atomic((tmp / "trainer.json").string(), trainer.dump(2) + "\n");
  remove_checkpoint_dir(dst);
  fs::rename(tmp, dst, ec);
  if (ec) fail("{}: cannot move the checkpoint into place: {}", dst.string(), ec.message());
  write_file_atomic((o / "latest").string(), dst.filename().string() + "\n");
  auto all = list_checkpoints(o);
  for (size_t i = 0; i + size_t(std::max(1, keep)) < all.size(); i++)
    if (all[i].second != dst) remove_checkpoint_dir(all[i].second);
  return dst.string();
}

std::string latest_checkpoint(const std::string& out) {
  fs::path p = fs::path(out) / "latest";
  std::ifstream f(p);
  if (!f) return "";
  std::string name;
  std::getline(f, name);
  fs::path dir = fs::path(out) / name;
  if (name.empty() || !fs::exists(dir / "trainer.json"))
    fail("{}: names '{}', which is not a complete checkpoint; delete {} to start over", p.string(), name,
         p.string());
  return dir.string();
}

nlohmann::json load_checkpoint(const std::string& dir, llama_model& m, std::unique_ptr<adamw_optimizer>& opt) {
  m = load_model(dir);
  opt = std::make_unique<adamw_optimizer>(m);
  auto st = safetensors_file::open((fs::path(dir) / "optimizer.safetensors").string());
  std::vector<std::pair<std::string, Tensor>> named;
  for (auto& n : st.names()) named.emplace_back(n, st.load_f32(n));
  opt->load_state(m, named);
  auto it = st.metadata().find("step_count");
  if (it == st.metadata().end()) fail("{}/optimizer.safetensors: no step_count in the metadata", dir);
  const uint64_t steps =
      parse_u64_decimal(it->second, fmt::format("{}/optimizer.safetensors: metadata step_count", dir));
  if (steps > uint64_t(INT64_MAX))
    fail("{}/optimizer.safetensors: metadata step_count {} is out of range; the checkpoint is damaged", dir, steps);
  opt->step_count = int64_t(steps);
  const std::string tj = (fs::path(dir) / "trainer.json").string();
  nlohmann::json j = read_json_file_bounded(tj, "trainer state");
  check_trainer_state(j, tj);
  return j;
}

uint64_t parse_u64_decimal(const std::string& s, const std::string& what) {
  uint64_t v = 0;
  bool ok = !s.empty();
  for (size_t i = 0; ok && i < s.size(); i++)
    ok = s[i] >= '0' && s[i] <= '9' && !__builtin_mul_overflow(v, uint64_t(10), &v) &&
         !__builtin_add_overflow(v, uint64_t(s[i] - '0'), &v);
  if (!ok) fail("{}: '{}' is not an unsigned 64-bit decimal number; the checkpoint is damaged", what, s);
  return v;
}

void check_trainer_state(const nlohmann::json& j, const std::string& src) {
  using json = nlohmann::json;
  auto damaged = " (the checkpoint is damaged: resume from an earlier one, or start over)";
  if (!j.is_object()) fail("{}: trainer state is not a JSON object{}", src, damaged);
  auto count = [&](const json& o, const char* key, const std::string& field, bool required) {
    auto it = o.find(key);
    if (it == o.end()) {
      if (required) fail("{}: missing field '{}'{}", src, field, damaged);
      return;
    }
    if (!it->is_number_integer() || (it->is_number_integer() && !it->is_number_unsigned() && it->get<int64_t>() < 0))
      fail("{}: field '{}' must be a non-negative integer, got {}{}", src, field, it->dump(), damaged);
    if (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t(INT64_MAX))
      fail("{}: field '{}' is {}, above 2^63 - 1{}", src, field, it->dump(), damaged);
  };
  auto rng_words = [&](const json& o, const std::string& prefix) {
    if (!o.is_object()) fail("{}: field '{}' must be an object{}", src, prefix, damaged);
    for (const char* w : {"s0", "s1"}) {
      auto it = o.find(w);
      if (it == o.end() || !it->is_string())
        fail("{}: field '{}.{}' must be a decimal string (an rng word){}", src, prefix, w, damaged);
      parse_u64_decimal(it->get<std::string>(), fmt::format("{}: field '{}.{}'", src, prefix, w));
    }
  };
  count(j, "step", "step", true);
  count(j, "tokens", "tokens", false);
  if (auto it = j.find("added_gist_ids"); it != j.end()) {
    if (!it->is_array()) fail("{}: field 'added_gist_ids' must be a list of token ids{}", src, damaged);
    for (auto& id : *it)
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
        fail("{}: field 'added_gist_ids' holds {}, which is not a token id (0 .. 2^31 - 1){}", src, id.dump(),
             damaged);
  }
  auto mixer = j.find("mixer");
  if (mixer == j.end()) fail("{}: missing field 'mixer' (the data order's rng state){}", src, damaged);
  rng_words(*mixer, "mixer");
  if (auto text = mixer->find("text"); text != mixer->end()) {
    rng_words(*text, "mixer.text");
    count(*text, "drawn", "mixer.text.drawn", true);
  }
}

}  // namespace gsa
