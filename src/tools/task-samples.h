// Generated retrieval tasks as token sequences, in the one layout training and exports share: context, then
// "\n\n" + question + "\n", then the answer (", "-joined when there are several), then the separator id. Pieces
// are encoded separately, as the evaluation encodes its prompt.
#pragma once
#include <cstdint>
#include <string>

#include "train/mix.h"

namespace gsa {
class tokenizer;
}

namespace gsa::tools {

// A sample of about `length` raw tokens for (task, seed), the needle at a seed-drawn depth. loss_on_all: the
// loss covers every token (else the answer and separator only); answer_begin marks the answer either way.
// qa_jsonl: the QA file the qa task cuts its samples from (empty: qa is refused with what to set).
train_sample make_task_sample(const tokenizer& tok, int64_t separator, const std::string& haystack_dir,
                              const std::string& task, int64_t length, uint64_t seed, bool loss_on_all,
                              const std::string& qa_jsonl = "");

}  // namespace gsa::tools
