// Task dispatch, parameter checks and scoring (see tasks.h); the generators live in tasks-*.cpp.
#include "eval/tasks.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "eval/longbench.h"
#include "eval/metrics.h"
#include "eval/task-parts.h"
#include "eval/text-util.h"

namespace gsa::eval {

std::vector<std::string> task_names() {
  return {"passkey",         "niah_single",       "niah_multikey", "niah_multivalue",
          "niah_multiquery", "variable_tracking", "kv_retrieval",  "qa"};
}

sample generate(const task_params& p, const token_counter& count) {
  auto names = task_names();
  if (std::find(names.begin(), names.end(), p.task) == names.end())
    fail("unknown task '{}'; known tasks: {}", p.task, join(names, ", "));
  if (!count) fail("task {}: no token counter given (pass the tokenizer's encode function)", p.task);
  if (p.length_tokens <= 0) fail("task {}: the length must be a positive number of tokens, got {}", p.task, p.length_tokens);
  if (!(p.depth >= 0.0 && p.depth <= 1.0))
    fail("task {}: depth must be a fraction in [0, 1], got {} (for 50% pass 0.5)", p.task, p.depth);
  if (p.task == "passkey") return detail::gen_passkey(p, count);
  if (p.task.rfind("niah_", 0) == 0) return detail::gen_niah(p, count);
  if (p.task == "variable_tracking") return detail::gen_variable_tracking(p, count);
  if (p.task == "kv_retrieval") return detail::gen_kv_retrieval(p, count);
  return detail::gen_qa(p, count);
}

double score(const sample& s, std::string_view prediction) {
  if (s.answers.empty()) fail("cannot score task '{}': the sample has no answers", s.task);
  if (s.task == "qa") {
    double best = 0;
    for (auto& a : s.answers) best = std::max(best, qa_f1_score(prediction, a));
    return best;
  }
  auto names = task_names();
  if (std::find(names.begin(), names.end(), s.task) != names.end()) {
    double found = 0;
    for (auto& a : s.answers) found += contains_score(prediction, a);
    return found / double(s.answers.size());
  }
  return longbench_score(s.task, prediction, s.answers, s.all_classes);
}

}  // namespace gsa::eval
