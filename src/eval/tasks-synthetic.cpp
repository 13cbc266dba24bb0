// Generators of the synthetic retrieval tasks: passkey, the needle-in-a-haystack family, variable
// tracking and key-value retrieval. Templates follow the passkey test of Mohtashami & Jaggi and RULER.
// The asked needle sits at the requested depth; distractor needles at seeded random depths.
#include <algorithm>
#include <cmath>
#include <set>

#include "core/error.h"
#include "eval/haystack.h"
#include "eval/task-parts.h"
#include "eval/text-util.h"

namespace gsa::eval::detail {

namespace {

enum stream : uint64_t { k_needles = 1, k_filler = 2, k_pairs = 3 };

sample finish(const task_params& p, const context_plan& plan, const token_counter& count) {
  built_context c = build_context(plan, p.length_tokens, count, p.task);
  sample s;
  s.task = p.task;
  s.context = std::move(c.context);
  s.context_tokens = c.tokens;
  s.target_tokens = p.length_tokens;
  s.depth_percent = int(std::lround(p.depth * 100));
  return s;
}

std::function<std::string(size_t)> noise_units() {
  return [](size_t i) { return noise_sentences()[i % noise_sentences().size()]; };
}

// n distinct values drawn by `draw`.
template <class F>
std::vector<std::string> distinct(size_t n, F draw) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  while (out.size() < n) {
    std::string v = draw();
    if (seen.insert(v).second) out.push_back(std::move(v));
  }
  return out;
}

}  // namespace

sample gen_passkey(const task_params& p, const token_counter& count) {
  rng r(stream_seed(p.seed, k_needles, 0));
  std::string key = random_number(r, 5);
  context_plan plan;
  plan.head = "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
              "I will quiz you about the important information there.\n\n";
  plan.sep = " ";
  plan.unit = noise_units();
  plan.needles = {fmt::format("The pass key is {}. Remember it. {} is the pass key.", key, key)};
  plan.depths = {p.depth};
  sample s = finish(p, plan, count);
  s.question = "What is the pass key?";
  s.answers = {key};
  return s;
}

sample gen_niah(const task_params& p, const token_counter& count) {
  return gen_niah_from(load_haystack(p.haystack_dir), p, count);
}

sample gen_niah_from(const haystack& hay, const task_params& p, const token_counter& count) {
  GSA_ASSERT(!hay.sentences.empty());
  if (p.n_needles < 1) fail("task {}: n_needles must be at least 1, got {}", p.task, p.n_needles);
  rng r(stream_seed(p.seed, k_needles, 0));
  size_t n = p.task == "niah_single" ? 1 : size_t(p.n_needles);
  bool one_key = p.task == "niah_multivalue";
  std::vector<std::string> keys = distinct(one_key ? 1 : n, [&] { return random_key(r); });
  std::vector<std::string> values = distinct(n, [&] { return random_number(r, 7); });

  context_plan plan;
  plan.head = "Some special magic numbers are hidden within the following text. Make sure to memorize it. "
              "I will quiz you about the numbers afterwards.\n\n";
  plan.sep = " ";
  size_t start = size_t(rng(stream_seed(p.seed, k_filler, 0)).below(hay.sentences.size()));
  plan.unit = [&hay, start](size_t i) { return hay.sentences[(start + i) % hay.sentences.size()]; };
  for (size_t k = 0; k < n; k++) {
    const std::string& key = keys[one_key ? 0 : k];
    plan.needles.push_back(one_key ? fmt::format("One of the special magic numbers for {} is: {}.", key, values[k])
                                   : fmt::format("The special magic number for {} is: {}.", key, values[k]));
    plan.depths.push_back(k == 0 ? p.depth : double(r.uniform()));
  }
  sample s = finish(p, plan, count);
  if (p.task == "niah_single" || p.task == "niah_multikey") {
    s.question = fmt::format("What is the special magic number for {} mentioned in the provided text?", keys[0]);
    s.answers = {values[0]};
  } else if (one_key) {
    s.question = fmt::format("What are all the special magic numbers for {} mentioned in the provided text?", keys[0]);
    s.answers = values;
  } else {
    std::string list;
    for (size_t k = 0; k < n; k++) list += (k == 0 ? "" : k + 1 == n ? " and " : ", ") + keys[k];
    s.question = fmt::format("What are all the special magic numbers for {} mentioned in the provided text?", list);
    s.answers = values;
  }
  return s;
}

sample gen_variable_tracking(const task_params& p, const token_counter& count) {
  if (p.n_hops < 0 || p.n_chains < 1)
    fail("task {}: needs n_hops >= 0 and n_chains >= 1, got {} and {}", p.task, p.n_hops, p.n_chains);
  rng r(stream_seed(p.seed, k_needles, 0));
  size_t per_chain = size_t(p.n_hops) + 1;
  std::vector<std::string> vars = distinct(per_chain * size_t(p.n_chains), [&] { return random_var(r); });
  std::vector<std::string> values = distinct(size_t(p.n_chains), [&] { return random_number(r, 5); });

  context_plan plan;
  plan.head = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n";
  plan.sep = " ";
  plan.unit = noise_units();
  for (size_t c = 0; c < size_t(p.n_chains); c++) {
    // Hops appear in order: depths sorted, the asked chain starting at the requested depth.
    std::vector<double> depths(per_chain);
    double lo = c == 0 ? p.depth : 0.0;
    for (auto& d : depths) d = lo + (1.0 - lo) * double(r.uniform());
    std::sort(depths.begin(), depths.end());
    if (c == 0) depths[0] = p.depth;
    for (size_t h = 0; h < per_chain; h++) {
      const std::string& v = vars[c * per_chain + h];
      plan.needles.push_back(h == 0 ? fmt::format("VAR {} = {}.", v, values[c])
                                    : fmt::format("VAR {} = VAR {}.", v, vars[c * per_chain + h - 1]));
      plan.depths.push_back(depths[h]);
    }
  }
  sample s = finish(p, plan, count);
  s.question = fmt::format("Find all variables that are assigned the value {} in the text above.", values[0]);
  s.answers.assign(vars.begin(), vars.begin() + long(per_chain));
  return s;
}

sample gen_kv_retrieval(const task_params& p, const token_counter& count) {
  rng r(stream_seed(p.seed, k_needles, 0));
  std::string key = random_uuid(r), value = random_uuid(r);
  context_plan plan;
  plan.head = "Extract the value corresponding to the specified key in the JSON object below.\n\nJSON data:\n{";
  plan.tail = "}";
  plan.sep = ",\n ";
  plan.allow_extra = false;  // every pair costs about the same: looking further ahead finds none that fits
  uint64_t seed = p.seed;
  plan.unit = [seed](size_t i) {
    rng ri(stream_seed(seed, k_pairs, i));
    std::string k = random_uuid(ri);
    return fmt::format("\"{}\": \"{}\"", k, random_uuid(ri));
  };
  plan.needles = {fmt::format("\"{}\": \"{}\"", key, value)};
  plan.depths = {p.depth};
  sample s = finish(p, plan, count);
  s.question = fmt::format("What is the value associated with the key \"{}\" in the JSON object above?", key);
  s.answers = {value};
  return s;
}

}  // namespace gsa::eval::detail
