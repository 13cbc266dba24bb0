// LongBench's pred.py protocol: the prompt templates and answer lengths are LongBench's byte for byte, the
// prompt is filled and truncated as pred.py does, the length buckets are LongBench-E's.
#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "eval/longbench-protocol.h"
#include "test-util.h"

using namespace gsa::eval;

namespace {

uint64_t fnv1a64(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

longbench_record record(const std::string& dataset, const std::string& context, const std::string& input) {
  longbench_record r;
  r.dataset = dataset;
  r.context = context;
  r.input = input;
  r.answers = {"x"};
  return r;
}

}  // namespace

TEST(longbench_protocol, templates_and_lengths_are_longbenchs) {
  // From THUDM/LongBench commit 2e00731: dataset2maxlen.json's value, and the UTF-8 length and FNV-1a 64
  // digest of dataset2prompt.json's string, computed from the upstream files with
  //   python3 -c 'import json; [print(d, len(t.encode()), ...) for d, t in json.load(open(...)).items()]'
  // (FNV-1a: h = 0xcbf29ce484222325; per byte h = (h ^ b) * 0x100000001b3 mod 2^64).
  struct expect {
    const char* dataset;
    int max_new_tokens;
    size_t bytes;
    uint64_t fnv;
  } want[] = {
      {"narrativeqa", 128, 378, 0x6b833ec5a5521200ull},
      {"qasper", 128, 725, 0xe0bbe61b9cc50aa0ull},
      {"multifieldqa_en", 64, 201, 0x21a552b1c54137efull},
      {"multifieldqa_zh", 64, 194, 0xdce3b185073f66ffull},
      {"hotpotqa", 32, 288, 0x3d89cf4beb38cf14ull},
      {"2wikimqa", 32, 288, 0x3d89cf4beb38cf14ull},
      {"musique", 32, 288, 0x3d89cf4beb38cf14ull},
      {"dureader", 128, 140, 0x2e2884cb43d2fcbfull},
      {"gov_report", 512, 161, 0x6da71a89083bcdb7ull},
      {"qmsum", 512, 261, 0x283893300103c98bull},
      {"multi_news", 512, 150, 0x369529e042466304ull},
      {"vcsum", 512, 133, 0xd332cf7a47d2e66bull},
      {"trec", 64, 104, 0x1f912dcf0e42e076ull},
      {"triviaqa", 32, 159, 0x09e8fec6928e0dbfull},
      {"samsum", 128, 103, 0x358daffee1841a64ull},
      {"lsht", 64, 76, 0x4fe41fc435333ba7ull},
      {"passage_retrieval_en", 32, 320, 0xf231df536a3fd1d8ull},
      {"passage_count", 32, 464, 0xd1c215a163713511ull},
      {"passage_retrieval_zh", 32, 257, 0xe47d36fa2cd81a5aull},
      {"lcc", 64, 67, 0x62330c8d81c725fcull},
      {"repobench-p", 64, 74, 0xb4adffb9b130f528ull},
  };
  ASSERT_EQ(longbench_table().size(), std::size(want));
  for (const auto& w : want) {
    const auto& info = longbench_info(w.dataset);
    EXPECT_EQ(info.max_new_tokens, w.max_new_tokens) << w.dataset;
    EXPECT_EQ(std::string_view(info.prompt).size(), w.bytes) << w.dataset;
    EXPECT_EQ(fnv1a64(info.prompt), w.fnv) << w.dataset;
  }
  EXPECT_THROW(longbench_info("vcsum_v2"), gsa::error);
}

TEST(longbench_protocol, prompt_is_filled_once) {
  // str.format fills each field once: braces inside the values stay as they are.
  auto p = longbench_prompt(record("lcc", "def f():{input}\n", ""));
  EXPECT_EQ(p.prompt, "Please complete the code given below. \ndef f():{input}\nNext line of code:\n");
  EXPECT_EQ(p.after_context, "Next line of code:\n");
  auto q = longbench_prompt(record("hotpotqa", "Passage 1: Paris.", "Where?"));
  EXPECT_EQ(q.after_context,
            "\n\nAnswer the question based on the given passages. Only give me the answer and do not output any "
            "other words.\n\nQuestion: Where?\nAnswer:");
  EXPECT_EQ(q.prompt.substr(q.prompt.size() - q.after_context.size()), q.after_context);
  EXPECT_NE(q.prompt.find("The following are given passages.\nPassage 1: Paris.\n\n"), std::string::npos);
}

TEST(longbench_protocol, truncation_keeps_both_ends_of_the_tokenized_prompt) {
  // A tokenizer with one token per character and BOS (id -1) first; the decoder skips BOS as
  // skip_special_tokens does.
  const token_encoder enc = [](std::string_view s) {
    std::vector<int32_t> ids = {-1};
    for (char c : s) ids.push_back(c);
    return ids;
  };
  const token_decoder dec = [](std::span<const int32_t> ids) {
    std::string s;
    for (int32_t id : ids)
      if (id >= 0) s += char(id);
    return s;
  };
  // 11 tokens (BOS + 10) fit a budget of 11: unchanged.
  EXPECT_EQ(truncate_prompt_middle("abcdefghij", 11, enc, dec), "abcdefghij");
  // Budget 6: half = 3; the first three tokens are BOS, a, b and the last three h, i, j.
  EXPECT_EQ(truncate_prompt_middle("abcdefghij", 6, enc, dec), "abhij");
  // Budget 7: int(7 / 2) = 3, the same cut.
  EXPECT_EQ(truncate_prompt_middle("abcdefghij", 7, enc, dec), "abhij");
  EXPECT_THROW(truncate_prompt_middle("abc", 1, enc, dec), gsa::error);
}

TEST(longbench_protocol, newline_stop_first_line_and_buckets) {
  for (const auto& d : longbench_table()) {
    EXPECT_EQ(longbench_stops_at_newline(d.dataset), std::string_view(d.dataset) == "samsum") << d.dataset;
    const std::string_view n = d.dataset;
    EXPECT_EQ(longbench_first_line_only(n), n == "trec" || n == "triviaqa" || n == "samsum" || n == "lsht") << n;
  }
  EXPECT_STREQ(longbench_e_bucket(0), "0-4k");
  EXPECT_STREQ(longbench_e_bucket(3999), "0-4k");
  EXPECT_STREQ(longbench_e_bucket(4000), "4-8k");
  EXPECT_STREQ(longbench_e_bucket(7999), "4-8k");
  EXPECT_STREQ(longbench_e_bucket(8000), "8k+");
}
