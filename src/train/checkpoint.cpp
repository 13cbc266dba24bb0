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
  write_safetensors((tmp / "optimizer.safetensors").string(), opt.state(m),
                    {{"step_count", std::to_string(opt.step_count)}});
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
  opt->step_count = std::stoll(it->second);
  return read_json_file_bounded((fs::path(dir) / "trainer.json").string(), "trainer state");
}

}  // namespace gsa
