// The evaluation runner (see eval-runner.h): validation, the runs, scoring, the per-depth table, list parsing.
#include "infer/eval-runner.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/error.h"
#include "core/rng.h"
#include "gist/config.h"
#include "infer/generate.h"
#include "infer/session.h"

namespace gsa::infer {

namespace {

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

// One pass over tmpl, so a context that happens to contain "{question}" is left alone.
std::string substitute(const std::string& tmpl, const eval::sample& s) {
  std::string out;
  size_t i = 0;
  while (i < tmpl.size()) {
    if (tmpl.compare(i, 9, "{context}") == 0) {
      out += s.context;
      i += 9;
    } else if (tmpl.compare(i, 10, "{question}") == 0) {
      out += s.question;
      i += 10;
    } else {
      out += tmpl[i++];
    }
  }
  return out;
}

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + what.size())) n++;
  return n;
}

std::string first_line(const std::string& text) {
  const size_t b = text.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return trim(text.substr(b, text.find('\n', b) - b));
}

uint64_t sample_seed(uint64_t seed, int i) {
  rng r(seed * 0x9E3779B97F4A7C15ull + uint64_t(i));
  return r.next_u64();
}

}  // namespace

const llama_model& eval_models::for_method(method m) const {
  GSA_ASSERT(model != nullptr, "eval_models without a model");
  return uses_gists(m) || full_model == nullptr ? *model : *full_model;
}

void validate_eval(const eval_spec& spec, const eval_models& models) {
  GSA_ASSERT(models.model != nullptr && models.tok != nullptr, "eval_models needs a model and a tokenizer");
  const bool has_tasks = !spec.tasks.empty(), has_jsonl = !spec.jsonl.empty();
  if (has_tasks == has_jsonl)
    fail("give either --tasks (generated tasks such as passkey,niah_single) or --jsonl FILE (LongBench format), {}",
         has_tasks ? "not both" : "none was given");
  const auto known = eval::task_names();
  for (const auto& t : spec.tasks)
    if (std::find(known.begin(), known.end(), t) == known.end())
      fail("--tasks: unknown task '{}'; known tasks: {}", t, fmt::join(known, ", "));
  if (has_jsonl && !std::filesystem::is_regular_file(spec.jsonl))
    fail("--jsonl: cannot open '{}'; give a LongBench-format .jsonl file", spec.jsonl.string());
  if (spec.lengths.empty()) fail("--lengths is empty; give a list such as 1k,4k");
  if (spec.depths.empty()) fail("--depths is empty; give a list such as 0,0.5,1");
  for (double d : spec.depths)
    if (!(d >= 0 && d <= 1)) fail("--depths: {} is not a fraction in [0, 1]", d);
  if (spec.methods.empty()) fail("--methods is empty; give a list such as full,gsa");
  if (spec.samples < 0) fail("--samples {} must be >= 0", spec.samples);
  if (spec.samples == 0 && !has_jsonl) fail("--samples 0 (all records) only applies to --jsonl; give N >= 1");
  if (spec.max_tokens < 1) fail("--max-tokens {} must be >= 1", spec.max_tokens);
  if (count_of(spec.prompt_template, "{context}") != 1 || count_of(spec.prompt_template, "{question}") < 1)
    fail("--template must hold {{context}} exactly once and {{question}} at least once, e.g. '{}'",
         default_eval_template);
  if (models.full_model) {
    // The GSA model may extend the full model's vocabulary by its gist rows (DESIGN 1.1); nothing else may differ.
    const int64_t vf = models.full_model->config.vocab_size, vm = models.model->config.vocab_size;
    int64_t gist_rows = 0;
    if (models.model->config.gsa.is_object() && models.model->config.gsa.contains("gist_token_ids"))
      for (auto& id : models.model->config.gsa["gist_token_ids"]) gist_rows += id.get<int64_t>() >= vf;
    if (vf > vm || vm - vf != gist_rows)
      fail("--full-model has a vocabulary of {} tokens but --model has {} ({} of them gist rows); both must share "
           "--model's tokenizer", vf, vm, gist_rows);
  }
  bool needs_ratio = false;
  for (const auto& name : spec.methods) {
    const method m = method_from_name(name);
    const llama_model& mod = models.for_method(m);
    if (uses_gists(m) && mod.config.gsa.is_null())
      fail("method {} needs a GSA model, but --model's config.json has no \"gsa\" object; give a model trained "
           "with gists, or only the baselines (full, streaming, quest, moba, h2o)", name);
    needs_ratio = needs_ratio || (m != method::full && m != method::gist);
    for (int64_t len : spec.lengths) {
      if (len <= 0) fail("--lengths: {} is not a positive number of tokens", len);
      const int64_t max_pos = mod.config.max_position_embeddings;
      if (len + spec.max_tokens > max_pos)
        fail("--lengths {}: a {}-token context plus --max-tokens {} is beyond the {} positions of the model {} "
             "runs on; give lengths up to about {}", len, len, spec.max_tokens, max_pos, name,
             max_pos - spec.max_tokens - 64);
    }
  }
  if (needs_ratio && spec.ratios.empty()) fail("--ratios is empty; give a list such as 8,16,32");
  for (double r : spec.ratios)
    if (!(r >= 1)) fail("--ratios: {} must be >= 1 (the budget is L / r)", r);
}

std::vector<eval_variant> eval_variants(const eval_spec& spec, const eval_models& models) {
  std::vector<eval_variant> out;
  for (const auto& name : spec.methods) {
    const method m = method_from_name(name);
    if (m == method::full) {
      out.push_back({m, 0, 0});
    } else if (m == method::gist) {
      out.push_back({m, gist::gsa_config_from_json(models.for_method(m).config.gsa).ratio(), 0});
    } else {
      for (double r : spec.ratios) out.push_back({m, r, r});
    }
  }
  return out;
}

std::pair<std::string, std::string> split_prompt(const std::string& tmpl, const eval::sample& s) {
  const size_t at = tmpl.find("{context}");
  if (at == std::string::npos) fail("--template has no {{context}}");
  return {substitute(tmpl.substr(0, at + 9), s), substitute(tmpl.substr(at + 9), s)};
}

namespace {

// Whether a list of unit ids holds a unit (unit_tokens raw tokens) that overlaps one of the spans.
bool holds_needle(const std::vector<int32_t>& ids, int unit_tokens,
                  const std::vector<std::pair<int64_t, int64_t>>& spans) {
  for (int32_t id : ids) {
    const int64_t b = int64_t(id) * unit_tokens, e = b + unit_tokens;
    for (const auto& [sb, se] : spans)
      if (b < se && sb < e) return true;
  }
  return false;
}

}  // namespace

double needle_hit(const std::vector<std::vector<int32_t>>& unfolded, int unit_tokens,
                  const std::vector<std::pair<int64_t, int64_t>>& spans) {
  GSA_ASSERT(unit_tokens >= 1, "unit_tokens {}", unit_tokens);
  if (spans.empty()) return -1;
  int lists = 0, hits = 0;
  for (const auto& ids : unfolded) {
    if (ids.empty()) continue;
    lists++;
    hits += holds_needle(ids, unit_tokens, spans);
  }
  return lists ? double(hits) / double(lists) : -1.0;
}

needle_routing needle_routing_of(const std::vector<std::vector<int32_t>>& unfolded, int n_kv_heads, int unit_tokens,
                                 const std::vector<std::pair<int64_t, int64_t>>& spans) {
  GSA_ASSERT(unit_tokens >= 1 && n_kv_heads >= 1 && unfolded.size() % size_t(n_kv_heads) == 0,
             "{} lists for {} KV heads, unit_tokens {}", unfolded.size(), n_kv_heads, unit_tokens);
  needle_routing r;
  if (spans.empty()) return r;
  // One pass: per layer its non-empty lists and those holding the needle.
  const size_t H = size_t(n_kv_heads), L = unfolded.size() / H;
  int lists = 0, hits = 0;
  std::vector<double> per_layer(L, -1.0);
  for (size_t l = 0; l < L; l++) {
    int ll = 0, lh = 0;
    for (size_t h = 0; h < H; h++) {
      const auto& ids = unfolded[l * H + h];
      if (ids.empty()) continue;
      ll++;
      lh += holds_needle(ids, unit_tokens, spans);
    }
    if (ll) per_layer[l] = double(lh) / double(ll);
    lists += ll, hits += lh;
  }
  if (!lists) return r;
  r.mean = double(hits) / double(lists);
  r.any = hits > 0 ? 1.0 : 0.0;
  r.per_layer = std::move(per_layer);
  return r;
}

std::vector<std::pair<int64_t, int64_t>> answer_spans(const std::string& prefix,
                                                       const std::vector<std::string>& answers,
                                                       const tokenizer& tok, bool add_bos) {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (const auto& a : answers) {
    if (a.empty()) continue;
    for (size_t p = prefix.find(a); p != std::string::npos; p = prefix.find(a, p + a.size())) {
      const int64_t b = int64_t(tok.encode(prefix.substr(0, p), add_bos).size());
      const int64_t e = int64_t(tok.encode(prefix.substr(0, p + a.size()), add_bos).size());
      out.emplace_back(std::max<int64_t>(0, b - 1), e + 1);
    }
  }
  return out;
}

eval_predictor model_predictor(const eval_models& models, int max_tokens, prefill_mode prefill,
                               int64_t gpu_kv_budget) {
  return [models, max_tokens, prefill, gpu_kv_budget](const eval_query& q) {
    const llama_model& m = models.for_method(q.variant.meth);
    const tokenizer& tok = *models.tok;
    session_options o;
    o.meth = q.variant.meth;
    o.budget = q.budget;
    o.prefill = prefill;
    o.gpu_kv_budget = gpu_kv_budget;
    if (q.variant.budget_ratio > 0) o.ratio = float(q.variant.budget_ratio);
    session s(m, o);
    s.prefill(q.context_ids);
    if (!q.question_ids.empty()) s.append(q.question_ids);
    run_pending({&s});
    // The selection of the question's last row is the one behind the first answer token.
    const needle_routing hit = needle_routing_of(s.take_stats().unfolded, int(m.config.num_key_value_heads),
                                                 s.unit_tokens(), q.needle_spans);
    // Gist ids or a padded vocabulary's ids may be generated by a weak model; they are not text.
    auto text_of = [&tok](const std::vector<int32_t>& ids) {
      std::vector<int32_t> kept;
      for (int32_t id : ids)
        if (id >= 0 && size_t(id) < tok.vocab_size()) kept.push_back(id);
      return tok.decode(kept, true);
    };
    generate_options g;
    g.max_tokens = max_tokens;
    for (int64_t id : m.config.eos_token_id) g.stop_ids.push_back(int32_t(id));
    g.stop = [&](int, const std::vector<int32_t>& ids) {
      const std::string t = text_of(ids);
      const size_t b = t.find_first_not_of(" \t\r\n");
      return b != std::string::npos && t.find('\n', b) != std::string::npos;
    };
    auto out = generate({&s}, g);
    eval_answer a(first_line(text_of(out[0].ids)));
    a.routing = hit;
    return a;
  };
}

std::vector<eval::result_record> run_eval(const eval_spec& spec, const eval_models& models,
                                          const eval_predictor& predict, const eval_progress& progress) {
  validate_eval(spec, models);
  GSA_ASSERT(bool(predict), "run_eval without a predictor");
  const auto variants = eval_variants(spec, models);
  const tokenizer& tok = *models.tok;

  // The samples of every (task, length, depth) before any run, so the progress total is known and a bad task
  // parameter fails before the first (slow) run.
  struct job {
    size_t task, len, depth;
    eval::sample s;
  };
  GSA_ASSERT(!spec.tasks.empty(), "run_eval runs generated tasks; a LongBench file runs through gsa eval's pred.py "
             "protocol (tools/cmd-eval.cpp)");
  const std::vector<std::string>& task_label = spec.tasks;
  const std::vector<double>& depths = spec.depths;
  std::vector<job> jobs;
  const eval::token_counter count = [&tok](std::string_view s) { return tok.encode(s); };
  for (size_t t = 0; t < spec.tasks.size(); t++)
    for (size_t l = 0; l < spec.lengths.size(); l++)
      for (size_t d = 0; d < depths.size(); d++)
        for (int i = 0; i < spec.samples; i++) {
          eval::task_params p;
          p.task = spec.tasks[t];
          p.length_tokens = spec.lengths[l];
          p.depth = depths[d];
          p.seed = sample_seed(spec.seed, i);
          p.haystack_dir = spec.haystack_dir;
          p.qa_jsonl = spec.qa_jsonl;
          jobs.push_back({t, l, d, eval::generate(p, count)});
        }

  struct acc {
    double sum = 0;
    int64_t n = 0, routing_n = 0;
    eval::routing_mean routing;
  };
  std::map<std::array<size_t, 4>, acc> cells;  // (task, variant, length, depth) -> running sum
  const size_t total = jobs.size() * variants.size();
  size_t done = 0;
  if (progress) progress(0, total);
  for (const auto& j : jobs) {
    auto [prefix, rest] = split_prompt(spec.prompt_template, j.s);
    eval_query q;
    q.sample = &j.s;
    q.length = spec.lengths[j.len];
    q.context_ids = tok.encode(prefix, true);
    q.question_ids = tok.encode(rest);
    q.needle_spans = answer_spans(prefix, j.s.answers, tok);
    const int64_t prompt = int64_t(q.context_ids.size() + q.question_ids.size());
    for (size_t v = 0; v < variants.size(); v++) {
      const int64_t max_pos = models.for_method(variants[v].meth).config.max_position_embeddings;
      if (prompt + spec.max_tokens > max_pos)
        fail("task {} at length {}: the prompt is {} tokens, + --max-tokens {} is beyond the model's {} "
             "positions; lower --lengths or --max-tokens", task_label[j.task], q.length, prompt, spec.max_tokens,
             max_pos);
      q.variant = variants[v];
      q.budget = variants[v].budget_ratio > 0
                     ? std::max<int64_t>(1, int64_t(std::floor(double(q.context_ids.size()) / variants[v].budget_ratio)))
                     : -1;
      const eval_answer ans = predict(q);
      acc& a = cells[{j.task, v, j.len, j.depth}];
      a.sum += eval::score(j.s, ans.text);
      a.n++;
      if (ans.routing.mean >= 0) {
        a.routing.add(ans.routing.mean, ans.routing.any, ans.routing.per_layer, 1.0);
        a.routing_n++;
      }
      if (progress) progress(++done, total);
    }
  }
  std::vector<eval::result_record> out;
  for (const auto& [k, a] : cells) {
    eval::result_record r;
    r.task = task_label[k[0]];
    r.method = method_name(variants[k[1]].meth);
    r.ratio = variants[k[1]].ratio;
    r.length = spec.lengths[k[2]];
    r.depth = depths[k[3]];
    r.score = a.n ? a.sum / double(a.n) : 0.0;
    r.n = a.n;
    r.routing_n = a.routing_n;
    a.routing.put(r);
    out.push_back(std::move(r));
  }
  return out;
}

std::string results_markdown_by_depth(const std::vector<eval::result_record>& records) {
  std::set<double> depths;
  std::vector<std::tuple<std::string, std::string, double, int64_t>> rows;
  std::map<std::tuple<std::string, std::string, double, int64_t, double>, std::pair<double, int64_t>> value;
  for (const auto& r : records) {
    depths.insert(r.depth);
    auto row = std::make_tuple(r.task, r.method, r.ratio, r.length);
    if (std::find(rows.begin(), rows.end(), row) == rows.end()) rows.push_back(row);
    auto& [sum, n] = value[std::make_tuple(r.task, r.method, r.ratio, r.length, r.depth)];
    sum += r.score * double(r.n);
    n += r.n;
  }
  std::string out = "| task | method | length |", rule = "|---|---|---:|";
  for (double d : depths) {
    out += fmt::format(" {:g}% |", 100 * d);
    rule += "---:|";
  }
  out += "\n" + rule + "\n";
  for (const auto& [task, meth, ratio, length] : rows) {
    out += fmt::format("| {} | {} | {} |", task, eval::method_label({task, meth, ratio}), length);
    for (double d : depths) {
      auto it = value.find(std::make_tuple(task, meth, ratio, length, d));
      if (it == value.end() || it->second.second == 0) out += " - |";
      else out += fmt::format(" {:.1f} |", 100 * it->second.first / double(it->second.second));
    }
    out += "\n";
  }
  return out;
}

std::vector<std::string> parse_name_list(const std::string& list, const char* option) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    size_t end = list.find(',', start);
    if (end == std::string::npos) end = list.size();
    std::string item = trim(list.substr(start, end - start));
    start = end + 1;
    if (!item.empty()) out.push_back(std::move(item));
  }
  if (out.empty()) fail("{} is empty; give a comma-separated list such as a,b", option);
  return out;
}

namespace {

double parse_number(std::string item, const char* option, const char* example) {
  try {
    size_t used = 0;
    const double v = std::stod(item, &used);
    if (used != item.size() || !std::isfinite(v)) throw std::invalid_argument(item);
    return v;
  } catch (const std::exception&) {
    fail("{}: '{}' is not a number; use a comma-separated list such as {}", option, item, example);
  }
}

}  // namespace

std::vector<double> parse_depths(const std::string& list) {
  std::vector<double> out;
  for (std::string item : parse_name_list(list, "--depths")) {
    const bool percent = item.back() == '%';
    if (percent) item.pop_back();
    double v = parse_number(item, "--depths", "0,0.5,1 or 0,50%,100%");
    // A bare number is a fraction; percents say so ('2' is not silently 2%).
    if (!percent && v > 1)
      fail("--depths: '{}' is not a fraction in 0 .. 1; write {} or {}% for a percent", item, v / 100, v);
    if (percent) v /= 100;
    if (!(v >= 0 && v <= 1))
      fail("--depths: '{}' is outside 0 .. 1 (or 0% .. 100%); use a list such as 0,0.5,1", item);
    out.push_back(v);
  }
  return out;
}

std::vector<double> parse_ratios(const std::string& list) {
  std::vector<double> out;
  for (std::string item : parse_name_list(list, "--ratios")) {
    if (item.back() == 'x' || item.back() == 'X') item.pop_back();
    const double v = parse_number(item, "--ratios", "8,16,32");
    if (!(v >= 1 && std::isfinite(v))) fail("--ratios: {} must be a finite number >= 1 (the budget is L / r)", v);
    out.push_back(v);
  }
  return out;
}

std::string unescape_template(const std::string& tmpl) {
  std::string out;
  for (size_t i = 0; i < tmpl.size(); i++) {
    if (tmpl[i] == '\\' && i + 1 < tmpl.size() && (tmpl[i + 1] == 'n' || tmpl[i + 1] == 't')) {
      out += tmpl[i + 1] == 'n' ? '\n' : '\t';
      i++;
    } else {
      out += tmpl[i];
    }
  }
  return out;
}

}  // namespace gsa::infer
