#include "tools/task-samples.h"

#include <algorithm>

#include "core/rng.h"
#include "eval/tasks.h"
#include "tokenizer/tokenizer.h"

namespace gsa::tools {

train_sample make_task_sample(const tokenizer& tok, int64_t separator, const std::string& haystack_dir,
                              const std::string& task, int64_t length, uint64_t seed, bool loss_on_all,
                              const std::string& qa_jsonl) {
  eval::task_params p;
  p.task = task;
  p.seed = seed;
  rng r(seed);
  p.depth = double(r.uniform());
  p.length_tokens = std::max<int64_t>(32, length - 48);  // room for the question and the answer
  p.haystack_dir = haystack_dir;
  p.qa_jsonl = qa_jsonl;
  eval::sample s = eval::generate(p, [&](std::string_view t) { return tok.encode(t); });
  train_sample x;
  x.source = task;
  x.raw = tok.encode(s.context);
  x.ctx_end = int(x.raw.size());
  auto q = tok.encode("\n\n" + s.question + "\n");
  x.raw.insert(x.raw.end(), q.begin(), q.end());
  x.answer_begin = int(x.raw.size());
  // "all": the whole sample is text to predict too; the needle repeats its value, so predicting the repeat is a
  // short-range copy that teaches the mechanism the answer needs at long range.
  x.loss_begin = loss_on_all ? 0 : x.answer_begin;
  std::string ans;
  for (auto& a : s.answers) ans += (ans.empty() ? "" : ", ") + a;
  auto av = tok.encode(ans);
  x.raw.insert(x.raw.end(), av.begin(), av.end());
  if (separator >= 0) x.raw.push_back(int32_t(separator));
  return x;
}

}  // namespace gsa::tools
