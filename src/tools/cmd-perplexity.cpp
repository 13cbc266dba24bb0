// `gsa perplexity`: language-modelling quality of every decode method at one budget on held-out long text.
// Each window of text is prefilled for --context tokens, then the next --predict tokens are fed one at a time
// through the method's decode path (selection, unfolding, eviction exactly as in generation) and each is scored
// by the log-probability the model gave it from the previous stream row (a gist row, when a chunk just ended).
// The figure is perplexity and bits per byte over the predicted tokens; lower is better. It separates methods
// that lose detail (gist, streaming) from those that recall it, even where a small model cannot yet solve the
// retrieval tasks.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "core/error.h"
#include "eval/metrics.h"
#include "infer/perplexity.h"
#include "tokenizer/tokenizer.h"
#include "tools/commands.h"
#include "tools/model-device.h"

namespace gsa::tools {

namespace {

namespace fs = std::filesystem;

struct ppl_args {
  std::string model, full_model, tokenizer_path, text = "../shared/data/text/haystack", methods = "full,gist,gsa";
  std::string ratios = "8", json_out;
  int64_t gpu_kv_budget = 0;
  int64_t context = 2048;
  int predict = 128, windows = 4;
  device_options dev;
};

std::string read_text(const fs::path& p) {
  std::string all;
  std::vector<fs::path> files;
  if (fs::is_directory(p)) {
    for (auto& e : fs::directory_iterator(p))
      if (e.is_regular_file()) files.push_back(e.path());
    std::sort(files.begin(), files.end());
  } else if (fs::exists(p)) {
    files.push_back(p);
  } else {
    fail("--text '{}' does not exist; give a text file or a folder of .txt files", p.string());
  }
  for (auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    all += ss.str();
    all += "\n\n";
  }
  return all;
}

int run_ppl(const ppl_args& a) {
  std::optional<llama_model> gm, fm;
  gm.emplace(model_on_device(load_model(a.model), a.dev));
  if (!a.full_model.empty()) fm.emplace(model_on_device(load_model(a.full_model), a.dev));
  fs::path tpath = a.tokenizer_path.empty() ? fs::path(a.model) : fs::path(a.tokenizer_path);
  tokenizer tok = tokenizer::load(tpath);
  tok.check_fits_model(gm->config.vocab_size, gm->config.bos_token_id, gm->config.eos_token_id, a.model);
  if (fm) tok.check_fits_model(fm->config.vocab_size, fm->config.bos_token_id, fm->config.eos_token_id, a.full_model);
  std::vector<int32_t> all = tok.encode(read_text(a.text));
  const int64_t need = a.context + a.predict;
  if (a.context < 16 || a.predict < 1) fail("--context must be >= 16 and --predict >= 1");
  if (int64_t(all.size()) < need) fail("--text holds {} tokens; a window needs {}", all.size(), need);
  const int64_t max_pos = gm->config.max_position_embeddings;
  if (need > max_pos) fail("--context + --predict = {} is beyond the model's {} positions", need, max_pos);
  std::vector<infer::method> methods;
  {
    std::stringstream ss(a.methods);
    std::string n;
    while (std::getline(ss, n, ','))
      if (!n.empty()) methods.push_back(infer::method_from_name(n));
  }
  std::vector<double> ratios;
  {
    std::stringstream ss(a.ratios);
    std::string n;
    while (std::getline(ss, n, ','))
      if (!n.empty()) ratios.push_back(std::stod(n));
  }
  // Windows spread evenly over the text.
  const int64_t span = int64_t(all.size()) - need;
  nlohmann::json records = nlohmann::json::array();
  fmt::print("perplexity over {} windows of {} context + {} predicted tokens from {} ({} tokens)\n\n", a.windows,
             a.context, a.predict, a.text, all.size());
  fmt::print("| method | model | ratio | budget | attended | perplexity | bits/byte |\n|---|---|---|---|---|---|---|\n");
  for (auto meth : methods) {
    bool gist_method = infer::uses_gists(meth);
    const llama_model& m = (gist_method || !fm) ? *gm : *fm;
    std::vector<double> rs = (meth == infer::method::full || meth == infer::method::gist) ? std::vector<double>{0}
                                                                                            : ratios;
    for (double r : rs) {
      int64_t budget = r > 0 ? int64_t(double(a.context) / r) : -1;
      struct {
        double nats = 0, attended = 0;
        int64_t tokens = 0, bytes = 0, rows = 0;
      } tot;
      for (int w = 0; w < a.windows; w++) {
        int64_t start = a.windows > 1 ? span * w / (a.windows - 1) : 0;
        std::vector<int32_t> ids(all.begin() + start, all.begin() + start + need);
        infer::nll_result x = infer::score_continuation(m, meth, budget, ids, a.context, a.predict, a.gpu_kv_budget);
        tot.nats += x.nats, tot.tokens += x.tokens, tot.attended += x.attended, tot.rows += x.rows;
        tot.bytes += int64_t(tok.decode(x.scored_ids).size());
      }
      double ppl = eval::perplexity(tot.nats, tot.tokens), bpb = eval::bits_per_byte(tot.nats, tot.bytes);
      double att = tot.rows ? tot.attended / double(tot.rows) : 0;
      std::string which = (gist_method || !fm) ? "gsa" : "full";
      fmt::print("| {} | {} | {} | {} | {:.0f} | {:.3f} | {:.4f} |\n", infer::method_name(meth), which,
                 r > 0 ? fmt::format("{:g}", r) : "-", budget > 0 ? std::to_string(budget) : "-", att, ppl, bpb);
      records.push_back({{"method", infer::method_name(meth)}, {"model", which}, {"ratio", r}, {"budget", budget},
                         {"attended_tokens", att}, {"perplexity", ppl}, {"bits_per_byte", bpb},
                         {"tokens", tot.tokens}, {"context", a.context}});
    }
  }
  if (!a.json_out.empty()) {
    std::ofstream f(a.json_out);
    if (!f) fail("--json: cannot write '{}'", a.json_out);
    f << records.dump(1) << "\n";
  }
  return 0;
}

}  // namespace

void register_perplexity(CLI::App& app, command_list& cmds) {
  auto* sub = app.add_subcommand("perplexity", "Perplexity and bits per byte of each decode method at one budget");
  static ppl_args a;
  sub->add_option("--model", a.model, "GSA model directory (gist, gsa, hgsa; also the rest without --full-model)")
      ->required();
  sub->add_option("--full-model", a.full_model, "Model without gists for full and the baselines");
  sub->add_option("--tokenizer", a.tokenizer_path, "tokenizer.json or its folder (default: --model's)");
  sub->add_option("--text", a.text, "Held-out text file or folder")->capture_default_str();
  sub->add_option("--methods", a.methods, "Comma-separated methods")->capture_default_str();
  sub->add_option("--ratios", a.ratios, "Budget ratios r (budget = context / r) for the sparse methods")
      ->capture_default_str();
  sub->add_option("--context", a.context, "Prefilled tokens per window")->capture_default_str();
  sub->add_option("--predict", a.predict, "Tokens decoded and scored per window")->capture_default_str();
  add_gpu_kv_budget_option(sub, a.gpu_kv_budget);
  sub->add_option("--windows", a.windows, "Windows spread over the text")->capture_default_str();
  sub->add_option("--json", a.json_out, "Write the records as a JSON array here");
  add_device_options(sub, a.dev);
  cmds.push_back({sub, [] { return run_ppl(a); }});
}

}  // namespace gsa::tools
