// Internals of the task generators shared by tasks*.cpp: random needle material and one generator per
// task family. Not part of the public API (see tasks.h).
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "core/rng.h"
#include "eval/haystack.h"
#include "eval/tasks.h"

namespace gsa::eval::detail {

std::string random_key(rng& r);                 // "adjective-noun", e.g. "quiet-harbor"
std::string random_number(rng& r, int digits);  // no leading zero
std::string random_uuid(rng& r);                // version-4 layout, lowercase hex
std::string random_var(rng& r);                 // five uppercase letters
// A seed for the i-th item of a stream, independent of how many other draws came before.
uint64_t stream_seed(uint64_t seed, uint64_t stream, uint64_t i);

sample gen_passkey(const task_params& p, const token_counter& count);
sample gen_niah(const task_params& p, const token_counter& count);  // niah_single / multikey / multivalue / multiquery
sample gen_variable_tracking(const task_params& p, const token_counter& count);
sample gen_kv_retrieval(const task_params& p, const token_counter& count);
sample gen_qa(const task_params& p, const token_counter& count);

// The qa task's source file as text (tasks-qa.cpp lists the accepted record forms): one record per non-blank
// line. Throws gsa::error "SOURCE:LINE: ..." naming the field for any bad record, and for a file without one.
struct qa_record {
  std::string question;
  std::vector<std::string> answers, golden, others;  // golden: the passages placed at the depth
};
std::vector<qa_record> parse_qa_jsonl(std::string_view text, const std::string& source);
// The qa sample from parsed records (gen_qa reads p.qa_jsonl once and calls this); `source` names them in errors.
sample gen_qa_from(const std::vector<qa_record>& recs, const task_params& p, const token_counter& count,
                   const std::string& source);
// niah_* over a haystack already loaded (gen_niah loads p.haystack_dir and calls this).
sample gen_niah_from(const haystack& hay, const task_params& p, const token_counter& count);

}  // namespace gsa::eval::detail
