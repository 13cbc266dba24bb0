// Internals of the task generators shared by tasks*.cpp: random needle material and one generator per
// task family. Not part of the public API (see tasks.h).
#pragma once
#include <string>

#include "core/rng.h"
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

}  // namespace gsa::eval::detail
